"""Training speed and memory (``pfbench bench train-throughput``): img/s, MFU and peak memory of PF and SiT
training steps as ``pfbench.train.trainer.Trainer.step`` runs them (bf16 autocast, optional ``torch.compile``
and activation checkpointing, fused AdamW), on random ImageNet-256-latent-shaped batches.

On CUDA the figures are compared with the reference implementation's, measured on one H200 (bf16, compiled):
PF-B/2 1,843 img/s and PF-XL/2 397 img/s at 256 px (target: ≥ 1.3× those; MFU ≥ 45 % for XL/2). On CPU
(``device=cpu``) the same code runs in fp32, uncompiled, on whatever preset is given: a plumbing check of the
bench itself, never a speed figure.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from pfbench import PfbenchError
from pfbench.bench.common import clock, machine_info, print_table
from pfbench.nets import make_net
from pfbench.nets.flops import train_flops
from pfbench.train.losses import pf_loss
from pfbench.train.timesteps import make_timestep_sampler

REFERENCE_IMG_S = {"B/2": 1843.0, "XL/2": 397.0}  # reference PF training img/s, one H200, bf16, compiled (issue 12)
SPEEDUP_TARGET = 1.3
MFU_TARGET = 0.45  # for XL/2
BF16_PEAK_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0}  # dense bf16 tensor-core peak of the card


def peak_tflops(name: str) -> float | None:
    """The dense bf16 peak of a CUDA device by name (None: unknown card, MFU not reported)."""
    return next((v for k, v in BF16_PEAK_TFLOPS.items() if k in name), None)


def _steps(net: nn.Module, kind: str, batch: int, steps: int, device: str, bf16: bool) -> tuple[float, int]:
    """Seconds of ``steps`` timed optimiser steps (after as many untimed ones) and the dynamo graphs compiled
    during the timed ones (0: no recompiles between steps)."""
    import torch._dynamo.utils as dynamo_utils

    cfg: Any = getattr(getattr(net, "net", net), "cfg")  # noqa: B009  (a _Forward or its compiled wrapper)
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-4, fused=device == "cuda")
    sampler = make_timestep_sampler("ltg" if kind == "pf" else "global_uniform")
    g = torch.Generator().manual_seed(0)
    shape = (batch, cfg.in_channels, cfg.input_size, cfg.input_size)
    x1, x0 = torch.randn(shape, generator=g).to(device), torch.randn(shape, generator=g).to(device)
    y = torch.randint(0, cfg.num_classes, (batch,), generator=g).to(device)
    t = sampler(batch, cfg.tokens, g).to(device)  # (B, T)
    t_in = t if cfg.per_token_t else t[:, 0]
    xt = 0.5 * (x0 + x1)  # the interpolation's cost is negligible; its values do not change the speed

    def step() -> None:
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            v, logvar, _ = net(xt, t_in, y)
        loss, _ = pf_loss(v, logvar, x1 - x0, 0.01)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 1.0, foreach=True)
        opt.step()

    for _ in range(steps):
        step()  # warm-up: compilation, autotuning, allocator
    graphs = dynamo_utils.counters["stats"]["unique_graphs"]
    began, _ = clock(device == "cuda")
    for _ in range(steps):
        step()
    ended, _ = clock(device == "cuda")
    return ended - began, dynamo_utils.counters["stats"]["unique_graphs"] - graphs


class _Forward(nn.Module):
    """The training forward (dedup off, no REPA), as ``Trainer`` compiles it."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> Any:
        return self.net.forward_all(x, t, y, dedup=False, repa=False)  # type: ignore[operator]


def train_throughput(presets: Sequence[str] = ("B/2", "XL/2"), kinds: Sequence[str] = ("pf", "sit"),
                     batch: int = 32, steps: int = 10, compile: bool = True, checkpointing: bool = False,
                     device: str = "cuda", show: bool = True) -> dict[str, Any]:
    """Training img/s, MFU and peak memory per (preset, kind) at ``batch`` samples per GPU.

    Args:
        presets: network presets (ImageNet-256 latents: 4×32×32, 1000 classes; CPU presets such as cpu-xs keep
            their own size). kinds: pf and/or sit.
        batch: samples per step on this device (the paper's 256 over 8 GPUs: 32).
        steps: timed steps (after as many warm-up steps).
        compile: ``torch.compile`` the training forward (CUDA only).
        checkpointing: activation checkpointing of the blocks (``TrainSpec.checkpointing``).
        device: ``cuda``, or ``cpu`` for a plumbing check (fp32, uncompiled; no speed figure).
        show: print a table.

    Returns:
        Per ``"<preset> <kind>"``: img_s, tflops (achieved), mfu (None on CPU or an unknown card), peak_mem_gib
        (None on CPU), new_graphs_while_timed (0 = no recompiles between steps); for PF presets with a reference
        figure also reference_img_s and speedup (target ≥ 1.3).
    """
    cuda = device == "cuda"
    if cuda and not torch.cuda.is_available():
        raise PfbenchError("bench train-throughput: device=cuda but no CUDA device is available (device=cpu runs "
                           "a plumbing check)")
    if compile and not cuda:
        raise PfbenchError("bench train-throughput: compile=true needs device=cuda (on CPU pfbench trains "
                           "uncompiled, in fp32); pass compile=false")
    info = machine_info(device)
    peak = peak_tflops(info["device"]) if cuda else None
    rows: dict[str, dict[str, Any]] = {}
    for preset in presets:
        for kind in kinds:
            size = {} if preset.startswith("cpu") else {"input_size": 32, "in_channels": 4, "num_classes": 1000}
            torch.manual_seed(0)
            net = make_net(preset, kind, **size).to(device).train()
            net.checkpointing = checkpointing
            fwd: nn.Module = _Forward(net)
            if compile:
                fwd = torch.compile(fwd)  # type: ignore[assignment]
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            seconds, graphs = _steps(fwd, kind, batch, steps, device, bf16=cuda)
            img_s = batch * steps / seconds
            tflops = train_flops(net.cfg) * img_s / 1e12
            row = {"img_s": img_s, "tflops": tflops, "mfu": None if peak is None else tflops / peak,
                   "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
                   "new_graphs_while_timed": graphs}
            if kind == "pf" and preset in REFERENCE_IMG_S:
                row |= {"reference_img_s": REFERENCE_IMG_S[preset], "speedup": img_s / REFERENCE_IMG_S[preset]}
            rows[f"{preset} {kind}"] = row
            del net, fwd
            if cuda:
                torch.cuda.empty_cache()
    result = {"bench": "train-throughput", "batch_per_gpu": batch, "steps": steps, "compile": compile,
              "checkpointing": checkpointing, "precision": "bf16" if cuda else "fp32", **info,
              "peak_tflops": peak, "plumbing_check_only": not cuda, "rows": rows,
              "targets": {"speedup_vs_reference": SPEEDUP_TARGET, "mfu_xl2": MFU_TARGET}}
    if show:
        print_table(f"training, batch {batch}/GPU, {result['precision']}{' + compile' if compile else ''}"
                    f"{' + checkpointing' if checkpointing else ''}, {info['device']}"
                    f"{' (PLUMBING CHECK, not a speed figure)' if not cuda else ''}",
                    ["model", "img/s", "TFLOP/s", "MFU", "peak GiB", "vs reference", "new graphs"],
                    [[k, f"{r['img_s']:.1f}", f"{r['tflops']:.2f}", "-" if r["mfu"] is None else f"{r['mfu']:.1%}",
                      "-" if r["peak_mem_gib"] is None else f"{r['peak_mem_gib']:.1f}",
                      f"{r['speedup']:.2f}x" if "speedup" in r else "-", r["new_graphs_while_timed"]]
                     for k, r in rows.items()])
    return result
