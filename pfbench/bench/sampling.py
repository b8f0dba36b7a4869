"""Benchmarks of sampling cost, reported as ratios measured within one run (never as timed unit tests).

- ``overhead``: share of each sampler's wall time spent outside the model calls (target ≤ 5 %).
- ``dedup``: PF sampling with the per-distinct-timestep modulation (``DiTAdapter(dedup=True)``) versus
  the naive per-token path, on CPU: wall speed-up and analytic FLOP ratio; plus PF ``euler_pf`` versus
  SiT ``euler`` throughput at equal NFE.
- ``gpu-throughput``: the PF/SiT img/s ratio at equal NFE on CUDA under bf16 autocast (target ≥ 0.95×).
- ``fd``: seconds from precomputed 50,000 × 2048 features to a Fréchet distance (statistics + distance).
- ``features``: feature-extraction img/s inside pfbench's metric pass vs a bare forward.

The two metric benches (``fd``, ``features``) live in ``pfbench.bench.metrics``; this module holds the
sampling benches, the timing helpers they share and the entry point (``run_bench``, ``parse_options``).

Networks are randomly initialised and then perturbed (``perturbed_net``) so the zero-initialised adaLN
and output layers do real work and the difficulty map varies; no trained checkpoint is needed. Times
are the minimum over repeats (the least disturbed run on a shared machine); the overhead is a ratio of
sums over repeats. Every result records the thread count and the load average at the time.

The CPU benches default to one torch thread: on a shared machine a second OpenMP thread that has to
wait for a busy core makes every small elementwise kernel stall (measured 0.3 ms -> 78 ms for a
250×3×16×16 update at load 4 on 2 cores), which swamps the ratios being measured. Pass ``threads`` to
measure another setting, and read the recorded load average with the numbers.
"""

from __future__ import annotations

import contextlib
import difflib
import inspect
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from pfbench import PfbenchError
from pfbench.adapters.base import Adapter
from pfbench.adapters.dit import DiTAdapter
from pfbench.bench.metrics import fd_speed, feature_throughput
from pfbench.nets import DiT, make_net
from pfbench.registry import SAMPLERS
from pfbench.sample.generate import balanced_labels, sample_noise, sampler_keys
from pfbench.samplers.base import Sampler
from pfbench.types import Cond, ModelOut, SampleOut

SIT_SAMPLERS = ("euler", "heun", "euler_maruyama")  # the global-timestep baseline's samplers
OVERHEAD_TARGET = 0.05
GPU_RATIO_TARGET = 0.95


def perturbed_net(preset: str, kind: str = "pf", seed: int = 0, overrides: Mapping[str, Any] | None = None) -> DiT:
    """A preset network with seeded random init plus N(0, 0.02²) noise on every parameter, in eval mode.

    The same (preset, kind, seed, overrides) gives the same weights in any process.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = make_net(preset, kind, **dict(overrides or {}))
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=gen))
    return net.eval()


def _now(sync: bool = False) -> tuple[float, float]:
    """(wall, process CPU) clock readings in seconds; pending CUDA work is finished first when ``sync``."""
    _sync(sync)
    return time.perf_counter(), time.process_time()


class TimedModel:
    """Adapter wrapper adding each model call's wall time to ``seconds`` and CPU time to ``cpu_seconds``.

    With one thread the process CPU time is what the call cost, however busy the machine; wall time is
    what a user waits. On CUDA the wall time is synchronised and the CPU time means little.
    """

    def __init__(self, model: Adapter) -> None:
        self.model = model
        self.patch_size = model.patch_size
        self.num_classes = model.num_classes
        self.has_difficulty = model.has_difficulty
        self.seconds = self.cpu_seconds = 0.0
        self.sync = _is_cuda(model)

    def __call__(self, x: Tensor, t: Tensor, cond: Cond) -> ModelOut:
        wall, cpu = _now(self.sync)
        out = self.model(x, t, cond)
        wall_end, cpu_end = _now(self.sync)
        self.seconds += wall_end - wall
        self.cpu_seconds += cpu_end - cpu
        return out

    def gflops(self, t: Tensor) -> float:
        return float(self.model.gflops(t))

    def forwards_per_call(self, t: Tensor) -> int:
        fn = getattr(self.model, "forwards_per_call", None)
        return 1 if fn is None else int(fn(t))


def _is_cuda(model: Adapter) -> bool:
    net = getattr(model, "net", None)
    return isinstance(net, torch.nn.Module) and next(net.parameters()).is_cuda


def _sync(on: bool) -> None:
    if on:
        torch.cuda.synchronize()


@contextlib.contextmanager
def _threads(threads: int | None) -> Iterator[None]:
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _machine(device: str = "cpu") -> dict[str, Any]:
    name = torch.cuda.get_device_name() if device == "cuda" else f"cpu x{os.cpu_count()}"
    return {"device": name, "threads": torch.get_num_threads(), "load_avg_1m": round(os.getloadavg()[0], 2),
            "torch": torch.__version__}


def _inputs(shape: tuple[int, int, int], num_classes: int, n: int, start: int = 0, seed: int = 0,
            device: str = "cpu") -> tuple[Tensor, Cond, Tensor]:
    """Noise (n, C, H, W), labels and sampler keys of samples start..start+n−1, as ``pfbench.sample.generate`` makes them."""
    idx = range(start, start + n)
    noise = sample_noise(seed, idx, shape).to(device)
    return noise, Cond(balanced_labels(seed, n, num_classes, start).to(device)), sampler_keys(seed, idx)


def _sampler(name: str, nfe: int) -> Sampler:
    sampler: Sampler = SAMPLERS.get(name)(steps=1).with_budget(nfe)
    return sampler


def _table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for i, col in enumerate(columns):
        table.add_column(col, no_wrap=i == 0)  # keep sampler / preset names whole
    for row in rows:
        table.add_row(*(str(v) for v in row))
    Console().print(table)


# ----------------------------------------------------------------------------------------------------
# sampler overhead


def sampler_overhead(model: str = "cpu-xs", samplers: Sequence[str] | None = None, n: int = 250,
                     batch_size: int = 250, repeats: int = 2, nfe: int = 8, threads: int | None = 1,
                     show: bool = True) -> dict[str, Any]:
    """Share of each sampler's wall time spent outside the model calls.

    Args:
        model: network preset; samplers run on its perturbed PF net, ``SIT_SAMPLERS`` on its SiT net.
        samplers: registered sampler names (default: all).
        n: samples per repeat, in batches of ``batch_size``.
        batch_size: samples per sampler call.
        repeats: timed passes over all samplers, interleaved so load changes hit every sampler alike.
        nfe: budget each sampler fits its step count to.
        threads: torch CPU threads during the bench (0 or None: leave as is; see the module docstring).
        show: print a table.

    Returns:
        Per sampler: ``total_s`` and ``model_s`` (wall, summed over repeats), ``model_share`` =
        model_s/total_s in (0, 1] and ``overhead`` = 1 − model_share; the same from process CPU time
        (``total_cpu_s``, ``model_cpu_s``, ``overhead_cpu``); ``max_overhead``, ``max_overhead_cpu``.
    """
    names = list(samplers or SAMPLERS.names())
    nets = {"pf": DiTAdapter(perturbed_net(model, "pf")), "sit": DiTAdapter(perturbed_net(model, "sit"))}
    kind = {name: "sit" if name in SIT_SAMPLERS else "pf" for name in names}
    cfg = nets["pf"].net.cfg
    shape = (cfg.in_channels, cfg.input_size, cfg.input_size)
    with _threads(threads), torch.no_grad():
        built = {name: _sampler(name, nfe) for name in names}
        warm = _inputs(shape, cfg.num_classes, min(4, batch_size))
        for name in names:  # untimed warm-up: first-call allocations, kernel selection
            built[name](nets[kind[name]], *warm)
        batches = [_inputs(shape, cfg.num_classes, min(batch_size, n - lo), lo) for lo in range(0, n, batch_size)]
        zero = {name: [0.0, 0.0, 0.0, 0.0] for name in names}  # wall total, wall model, CPU total, CPU model
        spent = dict.fromkeys(names, 0)
        for _ in range(repeats):
            for name in names:
                timed = TimedModel(nets[kind[name]])
                for noise, cond, keys in batches:
                    wall, cpu = _now()
                    out = built[name](timed, noise, cond, keys)
                    wall_end, cpu_end = _now()
                    zero[name][0] += wall_end - wall
                    zero[name][2] += cpu_end - cpu
                    spent[name] = out.nfe
                zero[name][1] += timed.seconds
                zero[name][3] += timed.cpu_seconds
        machine = _machine()
    rows: dict[str, dict[str, Any]] = {}
    for name, (total, inside, total_cpu, inside_cpu) in zero.items():
        rows[name] = {"net": kind[name], "steps": built[name].steps, "nfe": spent[name], "total_s": total,
                      "model_s": inside, "model_share": inside / total, "overhead": 1.0 - inside / total,
                      "total_cpu_s": total_cpu, "model_cpu_s": inside_cpu, "overhead_cpu": 1.0 - inside_cpu / total_cpu}
    result = {"bench": "overhead", "preset": model, "n": n, "batch_size": batch_size, "nfe_budget": nfe,
              "repeats": repeats, **machine, "samplers": rows, "target": OVERHEAD_TARGET,
              "max_overhead": max(r["overhead"] for r in rows.values()),
              "max_overhead_cpu": max(r["overhead_cpu"] for r in rows.values())}
    if show:
        _table(f"sampler overhead: {model}, batch {batch_size}, {machine['threads']} thread(s), "
               f"load {machine['load_avg_1m']}",
               ["sampler", "net", "NFE", "total s", "model s", "overhead", "overhead (CPU time)"],
               [[k, r["net"], r["nfe"], f"{r['total_s']:.3f}", f"{r['model_s']:.3f}", f"{r['overhead']:.2%}",
                 f"{r['overhead_cpu']:.2%}"] for k, r in rows.items()])
    return result


# ----------------------------------------------------------------------------------------------------
# dedup speed-up and PF/SiT throughput at equal NFE


Contender = tuple[Adapter, Sampler]


@dataclass(frozen=True)
class _Timing:
    wall: float  # min over repeats, seconds
    cpu: float  # min over repeats of the process CPU time, seconds
    out: SampleOut


def _race(contenders: Mapping[str, Contender], inputs: tuple[Tensor, Cond, Tensor], repeats: int,
          autocast: bool = False) -> dict[str, _Timing]:
    """Minimum wall and CPU time over ``repeats`` and the SampleOut of each contender.

    Repeats are interleaved across contenders so a change in machine load hits all of them alike. On
    CUDA an untimed warm-up run comes first (kernel selection, torch.compile); on CPU the minimum over
    repeats already drops a slow first run, and a warm-up would double the bench time.
    """
    cuda = inputs[0].is_cuda
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    best: dict[str, _Timing] = {}
    with torch.no_grad(), ctx:
        for model, sampler in contenders.values() if cuda else ():
            sampler(model, *inputs)
        for _ in range(max(repeats, 1)):
            for label, (model, sampler) in contenders.items():
                wall, cpu = _now(cuda)
                out = sampler(model, *inputs)
                wall_end, cpu_end = _now(cuda)
                old = best.get(label)
                best[label] = _Timing(min(wall_end - wall, old.wall if old else float("inf")),
                                      min(cpu_end - cpu, old.cpu if old else float("inf")), out)
    return best


def dedup_speedup(preset: str = "B/2", batch: int = 2, nfe: int = 4,
                  samplers: Sequence[str] = ("euler_pf", "dual_loop"), repeats: int = 2,
                  threads: int | None = 1, show: bool = True) -> dict[str, Any]:
    """PF sampling with modulation dedup versus the naive per-token path, and PF versus SiT (CPU, fp32).

    Args:
        preset: network preset (PF and SiT nets are perturbed random inits).
        batch: samples per call.
        nfe: budget every sampler fits its step count to (equal NFE across samplers and models).
        samplers: PF samplers to compare with and without dedup.
        repeats: timed runs per configuration, interleaved (the minimum is kept).
        threads: torch CPU threads during the bench (0 or None: leave as is; see the module docstring).
        show: print tables.

    Returns:
        Per sampler: ``speedup`` (naive/dedup wall time; ``speedup_cpu`` from process CPU time),
        ``flop_ratio`` (dedup/naive analytic GFLOPs per sample as the adapters account them),
        ``flop_saving`` = 1 − flop_ratio, ``max_abs_diff`` between the two outputs. ``pf_vs_sit``: img/s
        of PF ``euler_pf`` (dedup and naive) and SiT ``euler`` at the same NFE, ``ratio`` = PF/SiT and
        ``naive_ratio`` (wall), ``ratio_cpu`` and ``naive_ratio_cpu`` (CPU time).
    """
    pf, sit = perturbed_net(preset, "pf"), perturbed_net(preset, "sit")
    cfg = pf.cfg
    fast, naive = DiTAdapter(pf, dedup=True), DiTAdapter(pf, dedup=False)
    contenders: dict[str, Contender] = {"sit/euler": (DiTAdapter(sit), _sampler("euler", nfe))}
    for name in dict.fromkeys(["euler_pf", *samplers]):
        contenders[f"dedup/{name}"] = (fast, _sampler(name, nfe))
        contenders[f"naive/{name}"] = (naive, _sampler(name, nfe))
    with _threads(threads):
        inputs = _inputs((cfg.in_channels, cfg.input_size, cfg.input_size), cfg.num_classes, batch)
        got = _race(contenders, inputs, repeats)
        machine = _machine()
    rows: dict[str, dict[str, Any]] = {}
    for name in samplers:
        fast_t, naive_t = got[f"dedup/{name}"], got[f"naive/{name}"]
        ratio = fast_t.out.gflops / naive_t.out.gflops
        rows[name] = {"steps": contenders[f"dedup/{name}"][1].steps, "nfe": fast_t.out.nfe,
                      "seconds_dedup": fast_t.wall, "seconds_naive": naive_t.wall, "speedup": naive_t.wall / fast_t.wall,
                      "cpu_s_dedup": fast_t.cpu, "cpu_s_naive": naive_t.cpu, "speedup_cpu": naive_t.cpu / fast_t.cpu,
                      "gflops_dedup": fast_t.out.gflops, "gflops_naive": naive_t.out.gflops, "flop_ratio": ratio,
                      "flop_saving": 1.0 - ratio, "max_abs_diff": float((fast_t.out.x - naive_t.out.x).abs().max())}
    sit_t, pf_t, naive_t = got["sit/euler"], got["dedup/euler_pf"], got["naive/euler_pf"]
    versus = {"nfe": sit_t.out.nfe, "sit_img_s": batch / sit_t.wall, "pf_img_s": batch / pf_t.wall,
              "pf_naive_img_s": batch / naive_t.wall, "ratio": sit_t.wall / pf_t.wall,
              "naive_ratio": sit_t.wall / naive_t.wall, "ratio_cpu": sit_t.cpu / pf_t.cpu,
              "naive_ratio_cpu": sit_t.cpu / naive_t.cpu, "gflops_sit": sit_t.out.gflops,
              "gflops_pf": pf_t.out.gflops}
    result = {"bench": "dedup", "preset": preset, "batch": batch, "nfe_budget": nfe, "repeats": repeats,
              **machine, "samplers": rows, "pf_vs_sit": versus}
    if show:
        _table(f"modulation dedup: {preset}, batch {batch}, {machine['threads']} thread(s), "
               f"load {machine['load_avg_1m']}",
               ["sampler", "NFE", "dedup s", "naive s", "speed-up", "(CPU time)", "GFLOP dedup", "naive", "ratio"],
               [[k, r["nfe"], f"{r['seconds_dedup']:.2f}", f"{r['seconds_naive']:.2f}", f"{r['speedup']:.2f}x",
                 f"{r['speedup_cpu']:.2f}x", f"{r['gflops_dedup']:.1f}", f"{r['gflops_naive']:.1f}",
                 f"{r['flop_ratio']:.3f}"] for k, r in rows.items()])
        _table(f"PF euler_pf vs SiT euler at {versus['nfe']} NFE (fp32)",
               ["SiT img/s", "PF img/s", "PF naive img/s", "PF/SiT", "(CPU time)", "naive/SiT", "(CPU time)"],
               [[f"{versus[k]:.3f}" for k in ("sit_img_s", "pf_img_s", "pf_naive_img_s", "ratio", "ratio_cpu",
                                               "naive_ratio", "naive_ratio_cpu")]])
    return result


# ----------------------------------------------------------------------------------------------------
# GPU throughput


def gpu_throughput(presets: Sequence[str] = ("B/2", "XL/2"), batch: int = 256, nfe: int = 8,
                   compile: bool = False, repeats: int = 3, show: bool = True) -> dict[str, Any]:
    """PF ``euler_pf`` versus SiT ``euler`` img/s at equal NFE on CUDA under bf16 autocast.

    Skips (returns ``skipped=True`` with the reason, and prints it) when no CUDA device is present.

    Args:
        presets: network presets to compare.
        batch: samples per call.
        nfe: model calls per sample for both models.
        compile: wrap the networks in ``torch.compile`` (the untimed warm-up compiles).
        repeats: timed runs per configuration, interleaved (the minimum is kept).
        show: print a table.

    Returns:
        Per preset: img/s of SiT, PF with dedup and PF naive; ``ratio`` = PF/SiT (target ≥ 0.95) and
        ``naive_ratio``.
    """
    if not torch.cuda.is_available():
        reason = "no CUDA device: gpu-throughput skipped (run it on a GPU machine)"
        if show:
            from rich.console import Console

            Console().print(f"[yellow]{reason}[/]")
        return {"bench": "gpu-throughput", "skipped": True, "reason": reason}
    rows: dict[str, dict[str, Any]] = {}
    for preset in presets:
        pf, sit = perturbed_net(preset, "pf").cuda(), perturbed_net(preset, "sit").cuda()
        if compile:
            pf, sit = torch.compile(pf), torch.compile(sit)  # type: ignore[assignment]
        cfg = pf.cfg
        inputs = _inputs((cfg.in_channels, cfg.input_size, cfg.input_size), cfg.num_classes, batch, device="cuda")
        got = _race({"sit": (DiTAdapter(sit), _sampler("euler", nfe)),
                     "pf": (DiTAdapter(pf, dedup=True), _sampler("euler_pf", nfe)),
                     "naive": (DiTAdapter(pf, dedup=False), _sampler("euler_pf", nfe))}, inputs, repeats, True)
        s_sit, s_pf, s_naive = got["sit"].wall, got["pf"].wall, got["naive"].wall
        rows[preset] = {"sit_img_s": batch / s_sit, "pf_img_s": batch / s_pf, "pf_naive_img_s": batch / s_naive,
                        "ratio": s_sit / s_pf, "naive_ratio": s_sit / s_naive}
        del pf, sit, got
        torch.cuda.empty_cache()
    result = {"bench": "gpu-throughput", "skipped": False, "batch": batch, "nfe": nfe, "compile": compile,
              "repeats": repeats, **_machine("cuda"), "presets": rows, "target": GPU_RATIO_TARGET}
    if show:
        _table(f"PF vs SiT img/s at {nfe} NFE, batch {batch}, bf16{' + compile' if compile else ''}, "
               f"{result['device']}", ["preset", "SiT img/s", "PF img/s", "PF naive img/s", "PF/SiT", "naive/SiT"],
               [[k, f"{r['sit_img_s']:.0f}", f"{r['pf_img_s']:.0f}", f"{r['pf_naive_img_s']:.0f}",
                 f"{r['ratio']:.3f}", f"{r['naive_ratio']:.3f}"] for k, r in rows.items()])
    return result


# ----------------------------------------------------------------------------------------------------
# entry point


BENCHES: dict[str, Callable[..., dict[str, Any]]] = {
    "overhead": sampler_overhead,
    "dedup": dedup_speedup,
    "gpu-throughput": gpu_throughput,
    "fd": fd_speed,
    "features": feature_throughput,
}


def _bench(name: str) -> Callable[..., dict[str, Any]]:
    if name not in BENCHES:
        close = difflib.get_close_matches(name, list(BENCHES), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise PfbenchError(f"unknown bench {name!r}{hint} (known: {', '.join(BENCHES)})")
    return BENCHES[name]


def _check_options(name: str, keys: Iterable[str]) -> Mapping[str, inspect.Parameter]:
    params = inspect.signature(_bench(name)).parameters
    for key in keys:
        if key not in params:
            close = difflib.get_close_matches(key, list(params), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise PfbenchError(f"bench {name!r} has no option {key!r}{hint} (options: {', '.join(params)})")
    return params


def run_bench(name: str, **kw: Any) -> dict[str, Any]:
    """Runs the bench ``name`` ("overhead", "dedup", "gpu-throughput", "fd") with keyword options.

    Returns the bench's plain (JSON-serialisable) result dict. Unknown bench or option names are
    errors that name the nearest valid one.
    """
    _check_options(name, kw)
    return _bench(name)(**kw)


def parse_options(name: str, options: Sequence[str]) -> dict[str, Any]:
    """Turns CLI ``key=value`` strings into typed keyword options for ``run_bench(name, ...)``.

    Values take the type of the option's default: int, float, bool (true/false/1/0), str, or a
    comma-separated tuple of str; an option whose default is None takes an int.
    """
    out: dict[str, Any] = {}
    for item in options:
        key, sep, value = item.partition("=")
        if not sep:
            raise PfbenchError(f"bench option {item!r} is not key=value, e.g. batch_size=4")
        default = _check_options(name, [key])[key].default
        try:
            if isinstance(default, bool):
                if value.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(value)
                out[key] = value.lower() in ("true", "1")
            elif isinstance(default, tuple) or (default is None and key == "samplers"):
                out[key] = tuple(v for v in value.split(",") if v)
            elif isinstance(default, float):
                out[key] = float(value)
            elif isinstance(default, int) or default is None:
                out[key] = int(value)
            else:
                out[key] = value
        except ValueError:
            raise PfbenchError(f"bench option {key}={value!r}: expected a value like {default!r}") from None
    return out
