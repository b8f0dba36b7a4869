"""Throughput benchmarks at equal NFE: modulation dedup versus the naive per-token path (``dedup``, CPU, fp32)
and PF versus SiT img/s on CUDA under bf16 autocast (``gpu-throughput``, target ≥ 0.97×).

Networks and inputs come from ``pfbench.bench.sampling`` (perturbed random inits, the sample stage's noise);
repeats are interleaved across contenders and the minimum is kept.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from rich.console import Console
from torch import Tensor

from pfbench.adapters.base import Adapter
from pfbench.adapters.dit import DiTAdapter
from pfbench.bench.common import clock, machine_info, print_table, torch_threads
from pfbench.bench.sampling import bench_inputs, budget_sampler, perturbed_net
from pfbench.samplers.base import Sampler
from pfbench.types import Cond, SampleOut

GPU_RATIO_TARGET = 0.97  # issue 12: PF with dedup >= 0.97x SiT img/s at equal NFE

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
                wall, cpu = clock(cuda)
                out = sampler(model, *inputs)
                wall_end, cpu_end = clock(cuda)
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
    contenders: dict[str, Contender] = {"sit/euler": (DiTAdapter(sit), budget_sampler("euler", nfe))}
    for name in dict.fromkeys(["euler_pf", *samplers]):
        contenders[f"dedup/{name}"] = (fast, budget_sampler(name, nfe))
        contenders[f"naive/{name}"] = (naive, budget_sampler(name, nfe))
    with torch_threads(threads):
        inputs = bench_inputs((cfg.in_channels, cfg.input_size, cfg.input_size), cfg.num_classes, batch)
        got = _race(contenders, inputs, repeats)
        machine = machine_info()
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
        print_table(f"modulation dedup: {preset}, batch {batch}, {machine['threads']} thread(s), "
                    f"load {machine['load_avg_1m']}",
                    ["sampler", "NFE", "dedup s", "naive s", "speed-up", "(CPU time)", "GFLOP dedup", "naive", "ratio"],
                    [[k, r["nfe"], f"{r['seconds_dedup']:.2f}", f"{r['seconds_naive']:.2f}", f"{r['speedup']:.2f}x",
                      f"{r['speedup_cpu']:.2f}x", f"{r['gflops_dedup']:.1f}", f"{r['gflops_naive']:.1f}",
                      f"{r['flop_ratio']:.3f}"] for k, r in rows.items()])
        print_table(f"PF euler_pf vs SiT euler at {versus['nfe']} NFE (fp32)",
                    ["SiT img/s", "PF img/s", "PF naive img/s", "PF/SiT", "(CPU time)", "naive/SiT", "(CPU time)"],
                    [[f"{versus[k]:.3f}" for k in ("sit_img_s", "pf_img_s", "pf_naive_img_s", "ratio", "ratio_cpu",
                                                    "naive_ratio", "naive_ratio_cpu")]])
    return result


def gpu_throughput(presets: Sequence[str] = ("B/2", "XL/2"), batch: int = 256, nfe: int = 8,
                   compile: bool = False, repeats: int = 3, show: bool = True) -> dict[str, Any]:
    """PF ``euler_pf`` versus SiT ``euler`` img/s at equal NFE on CUDA under bf16 autocast.

    Skips (returns ``skipped=True`` with the reason, and prints it) when no CUDA device is present.

    Args:
        presets: network presets to compare.
        batch: samples per call.
        nfe: model calls per sample for both models.
        compile: compile the networks' blocks (``DiT.compile_blocks``; the untimed warm-up compiles).
        repeats: timed runs per configuration, interleaved (the minimum is kept).
        show: print a table.

    Returns:
        Per preset: img/s of SiT, PF with dedup and PF naive; ``ratio`` = PF/SiT (target ≥ 0.97) and
        ``naive_ratio``.
    """
    if not torch.cuda.is_available():
        reason = "no CUDA device: gpu-throughput skipped (run it on a GPU machine)"
        if show:
            Console().print(f"[yellow]{reason}[/]")
        return {"bench": "gpu-throughput", "skipped": True, "reason": reason}
    rows: dict[str, dict[str, Any]] = {}
    for preset in presets:
        pf, sit = perturbed_net(preset, "pf").cuda(), perturbed_net(preset, "sit").cuda()
        if compile:  # regional: the blocks, as ``eval.compile`` does (dedup's table size varies per call)
            pf.compile_blocks()
            sit.compile_blocks()
        cfg = pf.cfg
        inputs = bench_inputs((cfg.in_channels, cfg.input_size, cfg.input_size), cfg.num_classes, batch, device="cuda")
        got = _race({"sit": (DiTAdapter(sit), budget_sampler("euler", nfe)),
                     "pf": (DiTAdapter(pf, dedup=True), budget_sampler("euler_pf", nfe)),
                     "naive": (DiTAdapter(pf, dedup=False), budget_sampler("euler_pf", nfe))}, inputs, repeats, True)
        s_sit, s_pf, s_naive = got["sit"].wall, got["pf"].wall, got["naive"].wall
        rows[preset] = {"sit_img_s": batch / s_sit, "pf_img_s": batch / s_pf, "pf_naive_img_s": batch / s_naive,
                        "ratio": s_sit / s_pf, "naive_ratio": s_sit / s_naive}
        del pf, sit, got
        torch.cuda.empty_cache()
    result = {"bench": "gpu-throughput", "skipped": False, "batch": batch, "nfe": nfe, "compile": compile,
              "repeats": repeats, **machine_info("cuda"), "presets": rows, "target": GPU_RATIO_TARGET}
    if show:
        print_table(f"PF vs SiT img/s at {nfe} NFE, batch {batch}, bf16{' + compile' if compile else ''}, "
                    f"{result['device']}", ["preset", "SiT img/s", "PF img/s", "PF naive img/s", "PF/SiT", "naive/SiT"],
                    [[k, f"{r['sit_img_s']:.0f}", f"{r['pf_img_s']:.0f}", f"{r['pf_naive_img_s']:.0f}",
                      f"{r['ratio']:.3f}", f"{r['naive_ratio']:.3f}"] for k, r in rows.items()])
    return result
