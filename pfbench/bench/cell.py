"""How close a FID cell comes to its forward-pass lower bound (``pfbench bench fid-cell``).

The cell's path, as a suite runs it: ``pfbench.sample.generate`` (noise, sampler, VAE decode, uint8) and the
Inception pass with FID statistics (``pfbench.encoders.inception``, ``pfbench.metrics.stats``). The lower bound:
the same network forwards alone on device-resident batches (NFE DiT passes, one VAE decode, one Inception pass
per batch), nothing else. ``ratio`` = cell time / bound (target ≤ 1.15); per-image times extrapolate to 50K.

Weights are random (a perturbed DiT, an SD-VAE-shaped ``AutoencoderKL``, a random Inception): speed does not
depend on them, and the GPU machine has no downloads. On CPU the bench is a plumbing check, not a figure.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

from pfbench import PfbenchError
from pfbench.adapters.dit import DiTAdapter
from pfbench.bench.common import clock, machine_info, print_table
from pfbench.bench.metrics import random_inception
from pfbench.bench.sampling import budget_sampler, perturbed_net
from pfbench.data.vae import SD_VAE_CONFIG
from pfbench.encoders.inception import InceptionV3
from pfbench.metrics.stats import FeatureStats
from pfbench.sample.generate import generate

RATIO_TARGET = 1.15


def fid_cell(preset: str = "XL/2", sampler: str = "euler_pf", nfe: int = 50, n: int = 1024, batch: int = 256,
             vae: bool = True, device: str = "cuda", precision: str = "bf16", compile: bool = False,
             show: bool = True) -> dict[str, Any]:
    """Seconds per image of a FID cell and of its forward-pass lower bound, and their ratio.

    Args:
        preset: DiT preset (PF). sampler, nfe: the cell's sampler and budget. n: images timed. batch: per call.
        vae: decode latents with an SD-VAE-shaped decoder (ImageNet-256); false for pixel presets (cpu-xs).
        device: ``cuda``; ``cpu`` runs a plumbing check. precision: ``bf16`` autocast (CUDA) or ``fp32``.
        compile: compile the DiT blocks (``DiT.compile_blocks``; the warm-up compiles).
        show: print a table.
    """
    cuda = device == "cuda"
    if cuda and not torch.cuda.is_available():
        raise PfbenchError("bench fid-cell: device=cuda but no CUDA device is available (device=cpu runs a "
                           "plumbing check)")
    if not cuda and (precision != "fp32" or compile):
        raise PfbenchError("bench fid-cell: on CPU pfbench samples in fp32, uncompiled; pass precision=fp32 "
                           "compile=false")
    size = {"input_size": 32, "in_channels": 4, "num_classes": 1000} if vae else {}
    net = perturbed_net(preset, "pf", overrides=size).to(device)
    if compile:
        net.compile_blocks()
    model, chosen = DiTAdapter(net), budget_sampler(sampler, nfe)
    decode = None
    if vae:
        from diffusers import AutoencoderKL

        torch.manual_seed(0)
        ae = AutoencoderKL.from_config(dict(SD_VAE_CONFIG)).to(device).eval().requires_grad_(False)
        decode = lambda z: ae.decode(z / SD_VAE_CONFIG["scaling_factor"]).sample.float()  # noqa: E731
    amp = torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16")
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad(), amp:
        inception = InceptionV3(random_inception(Path(tmp) / "inception.pth"), device=device, max_batch=batch,
                                verify=False)

        def cell(count: int) -> float:
            began, _ = clock(cuda)
            gen = generate(model, chosen, n=count, seed=0, batch_size=batch, decode=decode, device=device)
            stats = FeatureStats()
            for images in gen.images.split(batch):
                stats.update(inception(images)["pool"])
            ended, _ = clock(cuda)
            return ended - began

        x = torch.randn(batch, net.cfg.in_channels, net.cfg.input_size, net.cfg.input_size, device=device)
        y = torch.zeros(batch, dtype=torch.int64, device=device)
        t = torch.full((batch, net.cfg.tokens), 0.5, device=device)
        pixels = torch.randint(0, 256, (batch, 3, 256 if vae else net.cfg.input_size, 256 if vae else
                                        net.cfg.input_size), dtype=torch.uint8, device=device)

        def bound(count: int) -> float:
            began, _ = clock(cuda)
            for _ in range(-(-count // batch)):
                for _ in range(chosen.cost(chosen.steps)):
                    net(x, t, y)
                if decode is not None:
                    decode(x)
                inception.net(pixels)  # torch-fidelity's extractor: resize to 299 + the network, nothing else
            ended, _ = clock(cuda)
            return ended - began

        cell(batch), bound(batch)  # warm-up: kernels, compilation, allocator
        t_cell, t_bound = cell(n), bound(n)
    per_cell, per_bound = t_cell / n, t_bound / (-(-n // batch) * batch)
    result = {"bench": "fid-cell", "preset": preset, "sampler": sampler, "nfe": chosen.cost(chosen.steps), "n": n,
              "batch": batch, "vae": vae, "precision": precision, "compile": compile, **machine_info(device),
              "plumbing_check_only": not cuda, "s_per_image_cell": per_cell, "s_per_image_bound": per_bound,
              "ratio": per_cell / per_bound, "cell_50k_minutes": per_cell * 50_000 / 60,
              "bound_50k_minutes": per_bound * 50_000 / 60, "target": RATIO_TARGET}
    if show:
        print_table(f"FID cell vs forward-pass bound: {preset} {sampler} NFE {result['nfe']}, batch {batch}, "
                    f"{precision}, {result['device']}{' (PLUMBING CHECK, not a speed figure)' if not cuda else ''}",
                    ["cell s/img", "bound s/img", "ratio", "50K cell min", "50K bound min"],
                    [[f"{per_cell:.2e}", f"{per_bound:.2e}", f"{per_cell / per_bound:.3f}",
                      f"{result['cell_50k_minutes']:.1f}", f"{result['bound_50k_minutes']:.1f}"]])
    return result
