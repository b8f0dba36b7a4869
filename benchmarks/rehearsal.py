"""The ImageNet rehearsal at speed (benchmarks/gpu_check.sh): ``suites/imagenet.yaml`` itself, run by ``pfbench run``
with the stand-in files of tests/test_imagenet_rehearsal.py (released-format B/2 checkpoint, SD-VAE architecture,
ADM-format reference batch, torch-fidelity's Inception; random weights) at a realistic batch and sample count.

Writes one JSON: images per second of sampling (per cell, and per network call), of SD-VAE decoding and of the
Inception pass, each measured under the run's numerics, and the projected minutes of one FID-50K cell at the
authors' 100 outer steps for every PF sampler (calls at 100 steps × the measured seconds per call, plus decoding
and Inception). Usage (repository root):
    python benchmarks/rehearsal.py --precision tf32 --samples 2048 --batch 64 --json OUT.json   (a GPU)
    python benchmarks/rehearsal.py --device cpu --precision fp32 --samples 2 --batch 2 --smoke --json OUT.json
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
from test_imagenet_rehearsal import SUITE, make_stand_ins, overrides  # noqa: E402  (the test's stand-ins)

from pfbench.data.vae import load_vae  # noqa: E402
from pfbench.encoders.inception import InceptionV3  # noqa: E402
from pfbench.registry import SAMPLERS  # noqa: E402
from pfbench.results import read_results  # noqa: E402

PAPER_STEPS, CELL = 100, 50_000


@contextlib.contextmanager
def numerics(device: str, precision: str) -> Iterator[None]:
    """As ``Runner.numerics``: TF32 matmuls/convolutions for tf32, bf16 autocast for bf16."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision == "tf32"
    try:
        with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16"):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def per_second(fn: Callable[[], object], images: int, device: str, repeats: int) -> float:
    """Images per second of ``fn`` (one warm-up call, then ``repeats`` timed calls)."""
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    began = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return images * repeats / (time.perf_counter() - began)


def main() -> None:
    ap = argparse.ArgumentParser(description="suites/imagenet.yaml with stand-in files at real shapes: img/s of "
                                 "sampling, VAE decoding and Inception; projected FID-50K cell time")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--precision", default="tf32", choices=["fp32", "tf32", "bf16"])
    ap.add_argument("--samples", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=4, help="outer steps of the steps block")
    ap.add_argument("--nfe", type=int, default=8, help="budget of the equal-NFE block")
    ap.add_argument("--smoke", action="store_true", help="CPU plumbing check: FID only, euler_pf only")
    ap.add_argument("--json", type=Path, required=True)
    args = ap.parse_args()
    dev = torch.device(args.device).type
    with tempfile.TemporaryDirectory() as tmp:
        dirs = make_stand_ins(Path(tmp) / "files")
        env = os.environ | {f"PFBENCH_{k.upper()}": str(v) for k, v in dirs.items()} | {"HF_HUB_OFFLINE": "1"}
        extra = ["metrics=[fid]", "grid.1.samplers=[euler_pf]", "grid.2.samplers=[euler_pf]"] if args.smoke else []
        cmd = [sys.executable, "-m", "pfbench.cli", "run", str(SUITE),
               *overrides(args.samples, args.batch, args.device, args.precision, args.steps, args.nfe), *extra,
               "--results", f"{tmp}/results", "--reports", f"{tmp}/reports", "--runs", f"{tmp}/runs", "--quiet"]
        began = time.perf_counter()
        run = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - began
        print(run.stdout[-4000:], run.stderr[-4000:], sep="\n")
        result: dict[str, object] = {"what": "imagenet rehearsal (stand-in files, real shapes)", "device": args.device,
                                     "precision": args.precision, "samples": args.samples, "batch": args.batch,
                                     "run_rc": run.returncode, "run_seconds": wall, "plumbing_check_only": dev != "cuda"}
        if run.returncode == 0:
            with numerics(dev, args.precision):
                vae = load_vae(str(dirs["weights"] / "sd-vae-ft-ema"), device=args.device)
                z = torch.randn(args.batch, 4, 32, 32, device=args.device)
                decode_ips = per_second(lambda: vae.decode(z), args.batch, dev, 1 if args.smoke else 3)
                inception = InceptionV3(dirs["weights"], device=args.device, max_batch=args.batch, verify=False)
                pixels = torch.randint(0, 256, (args.batch, 3, 256, 256), dtype=torch.uint8, device=args.device)
                inception_ips = per_second(lambda: inception(pixels), args.batch, dev, 1 if args.smoke else 3)
            rows = read_results(Path(tmp) / "results" / "imagenet")
            cells = rows[rows["kind"] == "cell"].drop_duplicates("part")
            out = []
            for _, r in cells.iterrows():
                sampler = SAMPLERS.get(r["sampler"])(**json.loads(r["sampler_args"]))
                s_img = max(float(r["wall_s"]) / int(r["num_samples"]) - 1 / decode_ips, 1e-12)  # wall_s: + decoding
                per_call = s_img / int(r["forwards"])
                calls = dataclasses.replace(sampler, steps=PAPER_STEPS).cost(PAPER_STEPS)
                cell_s = CELL * (calls * per_call + 1 / decode_ips + 1 / inception_ips)
                out.append({"sampler": r["sampler"], "steps": sampler.steps, "calls": int(r["forwards"]),
                            "sampling_img_per_s": 1 / s_img, "calls_img_per_s": 1 / per_call,
                            "calls_at_100_steps": calls, "fid50k_cell_minutes_at_100_steps": cell_s / 60})
            result |= {"decode_img_per_s": decode_ips, "inception_img_per_s": inception_ips, "cells": out}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
        print(json.dumps(result, indent=1))
        sys.exit(run.returncode)


if __name__ == "__main__":
    main()
