"""Feature-extraction throughput: pfbench's metric pass versus a bare forward of the same network (issue #4 §5).

``pipeline``: uint8 images → ``InceptionV3`` (torch-fidelity's TF-compatible resize, pool/logits/spatial
features back on the CPU) → one ``FeatureBank`` feeding FID + sFID (float64 streaming statistics) and
IS + precision/recall (kept rows): what ``evaluate`` does per batch. ``bare``: the same torch-fidelity
network called on the same uint8 batches already on the device, output discarded. The ratio
pipeline/bare is the share of the network's speed that pfbench keeps (target ≥ 0.8× on a GPU).

Weights: the real Inception file when it resolves offline; otherwise a seeded random state dict of the
same architecture (throughput does not depend on weight values), recorded as ``weights: random``.
The embedded feature network (shipped) is measured the same way (pipeline: ``embed`` + float64 stats).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from pfbench import PfbenchError

FEATURES_TARGET = 0.8


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

    from pfbench.metrics.embedded import embed, load_feature_net, to_input
    from pfbench.metrics.inception import INCEPTION_KEY, InceptionV3
    from pfbench.metrics.standard import FeatureBank
    from pfbench.metrics.stats import FeatureStats
    from pfbench.weights import resolve_weights

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

        bank = FeatureBank(ext)  # FID + sFID statistics, IS logits (P/R would keep "pool" rows as well)
        sub = bank.subscribe(stats=("pool", "spatial"), raw=("logits", "pool"))

        def pipeline(x: Tensor) -> None:
            bank.update(sub, x)

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

        net = load_feature_net(16).to(device)
        small = torch.randint(0, 256, (n, 3, 16, 16), dtype=torch.uint8, generator=g)
        stats = FeatureStats()
        t_pipe = _timed(lambda x: stats.update(embed(net, x, batch_size=batch)[0]), list(small.split(batch)), sync)
        inputs = [to_input(b).to(device) for b in small.split(batch)]
        t_bare = _timed(torch.no_grad()(lambda x: net(x)), inputs, sync)
        rows["embedded"] = {"weights": "shipped", "input": 16, "pipeline_img_s": n / t_pipe, "bare_img_s": n / t_bare,
                            "ratio": t_bare / t_pipe}
    result = {"bench": "features", "n": n, "batch": batch, "device": device, "threads": torch.get_num_threads(),
              "extractors": rows, "target": FEATURES_TARGET}
    if show:
        from pfbench.bench import _table

        _table(f"feature extraction, {n} images, batch {batch}, {device}, {torch.get_num_threads()} threads",
               ["network", "weights", "input", "pfbench img/s", "bare forward img/s", "ratio"],
               [[k, r["weights"], r["input"], f"{r['pipeline_img_s']:.1f}", f"{r['bare_img_s']:.1f}",
                 f"{r['ratio']:.2f}"] for k, r in rows.items()])
    return result


__all__ = ["FEATURES_TARGET", "feature_throughput", "random_inception"]
