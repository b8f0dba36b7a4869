"""Metric-pass benchmarks: feature-extraction throughput and Fréchet distance from precomputed features.

``features`` (issue #4 §5): pfbench's metric pass versus a bare forward of the same network.
``pipeline``: uint8 images → ``InceptionV3`` (torch-fidelity's TF-compatible resize, pool/logits/spatial
features back on the CPU) → FID + sFID float64 streaming statistics and IS + precision/recall kept rows:
what ``evaluate`` does per batch. ``bare``: the same torch-fidelity
network called on the same uint8 batches already on the device, output discarded. The ratio
pipeline/bare is the share of the network's speed that pfbench keeps (target ≥ 0.8× on a GPU).

Weights: the real Inception file when it resolves offline; otherwise a seeded random state dict of the
same architecture (throughput does not depend on weight values), recorded as ``weights: random``.
The embedded feature network (shipped) is measured the same way (pipeline: ``EmbeddedFeatures`` + float64
stats).

``fd``: seconds from precomputed 50,000 × 2048 features to a Fréchet distance (``fd_speed``).

Both run through ``pfbench.bench.run.run_bench``; the timing and table helpers every bench shares live in
``pfbench.bench.common``.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from pfbench import PfbenchError
from pfbench.bench.common import clock, machine_info, print_table, torch_threads
from pfbench.encoders.embedded import EmbeddedFeatures, to_input
from pfbench.encoders.inception import INCEPTION_KEY, InceptionV3
from pfbench.metrics.frechet import frechet_distance
from pfbench.metrics.stats import FeatureStats
from pfbench.weights import resolve_weights

FEATURES_TARGET = 0.8
FD_TARGET_S = 2.0


# ----------------------------------------------------------------------------------------------------
# feature-extraction throughput


def random_inception(path: Path, seed: int = 0) -> Path:
    """Saves a seeded, non-degenerate random state dict for torch-fidelity's inception-v3-compat (its constructor
    insists on loading weights, so loading is stubbed out while the module is built). For throughput benches
    and offline agreement tests: features of different image sets really differ."""
    from unittest import mock

    import torch_fidelity.feature_extractor_inceptionv3 as fi

    with mock.patch.object(fi, "load_state_dict_from_url", lambda *a, **k: {}), \
            mock.patch.object(fi.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd, strict=True: None):  # fmt: skip
        net = fi.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            m.weight.data = torch.randn(m.weight.shape, generator=g) * (2.0 / m.weight[0].numel()) ** 0.5
        elif isinstance(m, nn.BatchNorm2d):
            m.bias.data = torch.randn(m.bias.shape, generator=g) * 0.1
    net.fc.weight.data = torch.randn(net.fc.weight.shape, generator=g) * 0.3
    net.fc.bias.data = torch.randn(net.fc.bias.shape, generator=g)
    torch.save(net.state_dict(), path)
    return path


def _timed(fn: Any, batches: list[Tensor], sync: bool) -> float:
    fn(batches[0])  # warm-up (allocator, cuDNN autotune)
    if sync:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for b in batches:
        fn(b)
    if sync:
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def feature_throughput(n: int = 200, batch: int = 50, resolution: int = 256, device: str = "cpu",
                       weights: str | None = None, threads: int | None = None, show: bool = True) -> dict[str, Any]:
    """img/s of feature extraction inside pfbench and of the bare network, for Inception and the embedded net.

    Args:
        n: images per measurement (random uint8, ``resolution``² for Inception, 16² for the embedded net).
        batch: images per forward pass.
        resolution: Inception input side before its resize to 299 (256 = ImageNet samples).
        device: ``cpu`` or ``cuda``.
        weights: Inception weights file; None resolves offline and falls back to random weights.
        threads: torch CPU threads (None = torch's default).
        show: print a rich table.
    """
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    if device == "cuda" and not torch.cuda.is_available():
        raise PfbenchError("bench features: device=cuda but no CUDA device is available")
    if threads is not None:
        torch.set_num_threads(threads)
    sync = device == "cuda"
    g = torch.Generator().manual_seed(0)
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path, kind = resolve_weights(INCEPTION_KEY, weights), "inception-v3-compat"
        except PfbenchError:
            if weights is not None:
                raise
            path, kind = random_inception(Path(tmp) / "random-inception.pth"), "random"
        images = torch.randint(0, 256, (n, 3, resolution, resolution), dtype=torch.uint8, generator=g)
        batches = list(images.split(batch))
        ext = InceptionV3(path, device=device, max_batch=batch, verify=kind != "random")

        streams = {k: FeatureStats() for k in ("pool", "spatial")}  # FID + sFID statistics
        kept: list[Tensor] = []  # IS logits and P/R pool rows

        def pipeline(x: Tensor) -> None:
            feats = ext(x)  # one forward per batch, shared by every Inception metric
            for k, st in streams.items():
                st.update(feats[k])
            kept.extend([feats["logits"].float().cpu(), feats["pool"].float().cpu()])

        bare_net = FeatureExtractorInceptionV3(INCEPTION_KEY, ["2048", "logits_unbiased"],
                                               feature_extractor_weights_path=str(path)).to(device).eval()
        on_device = [b.to(device) for b in batches]

        @torch.no_grad()
        def bare(x: Tensor) -> None:
            bare_net(x)

        t_pipe = _timed(pipeline, batches, sync)
        t_bare = _timed(bare, on_device, sync)
        rows["inception"] = {"weights": kind, "input": resolution, "pipeline_img_s": n / t_pipe,
                             "bare_img_s": n / t_bare, "ratio": t_bare / t_pipe}

        emb = EmbeddedFeatures(16, device=device, max_batch=batch)
        small = torch.randint(0, 256, (n, 3, 16, 16), dtype=torch.uint8, generator=g)
        stats = FeatureStats()
        t_pipe = _timed(lambda x: stats.update(emb(x)["pool"]), list(small.split(batch)), sync)
        inputs = [to_input(b).to(device) for b in small.split(batch)]
        t_bare = _timed(torch.no_grad()(lambda x: emb.net(x)), inputs, sync)
        rows["embedded"] = {"weights": "shipped", "input": 16, "pipeline_img_s": n / t_pipe, "bare_img_s": n / t_bare,
                            "ratio": t_bare / t_pipe}
    result = {"bench": "features", "n": n, "batch": batch, "device": device, "threads": torch.get_num_threads(),
              "extractors": rows, "target": FEATURES_TARGET}
    if show:
        print_table(f"feature extraction, {n} images, batch {batch}, {device}, {torch.get_num_threads()} threads",
                    ["network", "weights", "input", "pfbench img/s", "bare forward img/s", "ratio"],
                    [[k, r["weights"], r["input"], f"{r['pipeline_img_s']:.1f}", f"{r['bare_img_s']:.1f}",
                      f"{r['ratio']:.2f}"] for k, r in rows.items()])
    return result


# ----------------------------------------------------------------------------------------------------
# Fréchet distance from precomputed features


def fd_speed(n: int = 50_000, d: int = 2048, repeats: int = 1, threads: int | None = 1, seed: int = 0,
             gemm: str = "float32", show: bool = True) -> dict[str, Any]:
    """Time to a Fréchet distance from precomputed (n, d) float32 features (the FID ``compute`` path).

    Two timed stages, as FID spends them: mean/covariance of the features (``FeatureStats``: n·d² flops
    of ``ssyrk`` on centred chunks merged in float64, or ``dsyrk`` with ``gemm=float64``) and the
    distance to a precomputed reference ``(mu, sigma)`` (``frechet_distance``: Cholesky, two ``dtrmm``,
    one ``eigvalsh`` and their checks). The features are seeded Gaussians with unequal column scales;
    the reference covariance is a rescaled, shifted copy of theirs, so both covariances are full rank
    as with 50,000 real images.

    Args:
        n, d: feature rows and dimension (FID-50K: 50,000 × 2048).
        repeats: timed runs; the minimum of each stage is kept.
        threads: torch threads (Cholesky/eigvalsh already run single-threaded). scipy's BLAS
            (``ssyrk``/``dtrmm``) follows ``OPENBLAS_NUM_THREADS`` of the process environment, recorded
            as ``blas_threads``; set it before starting Python for a one-thread measurement.
        seed: feature seed.
        gemm: ``FeatureStats`` Gram dtype: ``float32`` (default) or ``float64`` (the all-float64 path).
        show: print a table.

    Returns:
        ``stats_s``, ``fd_s``, ``total_s`` (wall, minima over repeats), their process CPU times,
        ``stats_gflops`` (achieved rate of the n·d² accumulation), ``gemm`` (the Gram dtype used),
        ``fd`` (the value, for sanity), ``target_s`` and ``meets_target`` (total ≤ target).
    """

    rng = np.random.default_rng(seed)
    feats = rng.standard_normal((n, d), dtype=np.float32)  # (n, d)
    feats *= np.geomspace(0.1, 3.0, d, dtype=np.float32)  # unequal variances, like pool3 features
    scale = np.geomspace(1.2, 0.8, d)  # (d,) reference rescaling
    wall = {"stats": float("inf"), "fd": float("inf")}
    cpu = dict(wall)
    value, used = float("nan"), gemm
    with torch_threads(threads):
        for _ in range(max(repeats, 1)):
            w0, c0 = clock()
            st = FeatureStats(gemm=gemm)
            st.update(feats)
            mu, sigma = st.mean(), st.cov()
            w1, c1 = clock()
            used = st.gemm
            # untimed: the reference is what a cached .npz provides
            ref_mu, ref_sigma = mu + 0.05, sigma * np.outer(scale, scale) + 0.01 * np.eye(d)
            w2, c2 = clock()
            value = frechet_distance(mu, sigma, ref_mu, ref_sigma)
            w3, c3 = clock()
            wall = {"stats": min(wall["stats"], w1 - w0), "fd": min(wall["fd"], w3 - w2)}
            cpu = {"stats": min(cpu["stats"], c1 - c0), "fd": min(cpu["fd"], c3 - c2)}
        machine = machine_info()
    total = wall["stats"] + wall["fd"]
    result = {"bench": "fd", "n": n, "d": d, "repeats": repeats, **machine,
              "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS", "default"),
              "stats_s": wall["stats"], "fd_s": wall["fd"], "total_s": total, "stats_cpu_s": cpu["stats"],
              "fd_cpu_s": cpu["fd"], "total_cpu_s": cpu["stats"] + cpu["fd"],
              "stats_gflops": n * d * d / wall["stats"] / 1e9, "gemm": used, "fd": value, "target_s": FD_TARGET_S,
              "meets_target": total <= FD_TARGET_S}
    if show:
        print_table(f"Fréchet distance from {n} × {d} features: torch threads {machine['threads']}, BLAS threads "
                    f"{result['blas_threads']}, load {machine['load_avg_1m']}",
                    ["stage", "wall s", "CPU s"],
                    [[f"stats (mean + cov, {used} Gram)", f"{wall['stats']:.2f}", f"{cpu['stats']:.2f}"],
                     ["frechet_distance", f"{wall['fd']:.2f}", f"{cpu['fd']:.2f}"],
                     [f"total (target {FD_TARGET_S:g} s)", f"{total:.2f}", f"{result['total_cpu_s']:.2f}"]])
    return result


__all__ = ["FD_TARGET_S", "FEATURES_TARGET", "fd_speed", "feature_throughput",
           "random_inception"]
