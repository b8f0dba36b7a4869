"""Sampling benchmarks, reported as ratios measured within one run (never as timed unit tests).

- ``overhead`` (``sampler_overhead``): share of each sampler's wall time spent outside the model calls
  (target ≤ 5 %).
- ``dedup`` and ``gpu-throughput`` (``pfbench.bench.throughput``): modulation dedup versus the naive per-token
  path, and PF versus SiT img/s at equal NFE.

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

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from pfbench.adapters.base import Adapter, AdapterWrapper
from pfbench.adapters.dit import DiTAdapter
from pfbench.bench.common import clock, machine_info, print_table, torch_threads
from pfbench.nets import DiT, make_net
from pfbench.registry import SAMPLERS
from pfbench.sample.generate import balanced_labels, sample_noise, sampler_keys
from pfbench.samplers.base import Sampler
from pfbench.types import Cond, ModelOut

SIT_SAMPLERS = ("euler", "heun", "euler_maruyama")  # the global-timestep baseline's samplers
OVERHEAD_TARGET = 0.05


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


class TimedModel(AdapterWrapper):
    """Adapter wrapper adding each model call's wall time to ``seconds`` and CPU time to ``cpu_seconds``.

    With one thread the process CPU time is what the call cost, however busy the machine; wall time is
    what a user waits. On CUDA the wall time is synchronised and the CPU time means little.
    """

    def __init__(self, model: Adapter) -> None:
        super().__init__(model)
        self.seconds = self.cpu_seconds = 0.0
        self.sync = _is_cuda(model)

    def __call__(self, x: Tensor, t: Tensor, cond: Cond) -> ModelOut:
        wall, cpu = clock(self.sync)
        out = self.model(x, t, cond)
        wall_end, cpu_end = clock(self.sync)
        self.seconds += wall_end - wall
        self.cpu_seconds += cpu_end - cpu
        return out


def _is_cuda(model: Adapter) -> bool:
    net = getattr(model, "net", None)
    return isinstance(net, torch.nn.Module) and next(net.parameters()).is_cuda


def bench_inputs(shape: tuple[int, int, int], num_classes: int, n: int, start: int = 0, seed: int = 0,
                 device: str = "cpu") -> tuple[Tensor, Cond, Tensor]:
    """Noise (n, C, H, W), labels and sampler keys of samples start..start+n−1, as ``pfbench.sample.generate`` makes them."""
    idx = range(start, start + n)
    noise = sample_noise(seed, idx, shape).to(device)
    return noise, Cond(balanced_labels(seed, n, num_classes, start).to(device)), sampler_keys(seed, idx)


def budget_sampler(name: str, nfe: int) -> Sampler:
    """Registered sampler ``name`` with default parameters at the largest step count whose cost fits ``nfe``."""
    sampler: Sampler = SAMPLERS.get(name).from_budget({}, nfe)
    return sampler


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
    with torch_threads(threads), torch.no_grad():
        built = {name: budget_sampler(name, nfe) for name in names}
        warm = bench_inputs(shape, cfg.num_classes, min(4, batch_size))
        for name in names:  # untimed warm-up: first-call allocations, kernel selection
            built[name](nets[kind[name]], *warm)
        batches = [bench_inputs(shape, cfg.num_classes, min(batch_size, n - lo), lo)
                   for lo in range(0, n, batch_size)]
        zero = {name: [0.0, 0.0, 0.0, 0.0] for name in names}  # wall total, wall model, CPU total, CPU model
        spent = dict.fromkeys(names, 0)
        for _ in range(repeats):
            for name in names:
                timed = TimedModel(nets[kind[name]])
                for noise, cond, keys in batches:
                    wall, cpu = clock()
                    out = built[name](timed, noise, cond, keys)
                    wall_end, cpu_end = clock()
                    zero[name][0] += wall_end - wall
                    zero[name][2] += cpu_end - cpu
                    spent[name] = out.nfe
                zero[name][1] += timed.seconds
                zero[name][3] += timed.cpu_seconds
        machine = machine_info()
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
        print_table(f"sampler overhead: {model}, batch {batch_size}, {machine['threads']} thread(s), "
                    f"load {machine['load_avg_1m']}",
                    ["sampler", "net", "NFE", "total s", "model s", "overhead", "overhead (CPU time)"],
                    [[k, r["net"], r["nfe"], f"{r['total_s']:.3f}", f"{r['model_s']:.3f}", f"{r['overhead']:.2%}",
                      f"{r['overhead_cpu']:.2%}"] for k, r in rows.items()])
    return result
