"""Embedded-default metrics: shipped network, checksums, reference cache and sanity behaviour."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

import pfbench.assets as assets
from pfbench import PfbenchError
from pfbench.data.embedded import NUM_CLASSES, EmbeddedSpec, generate
from pfbench.metrics import embedded as emb
from pfbench.metrics.base import Metric
from pfbench.metrics.stats import FeatureStats, frechet_distance, inception_score
from pfbench.registry import METRICS
from pfbench.types import Cond

N = 2000


@pytest.fixture(scope="module")
def real() -> dict[str, Tensor]:
    te = generate(EmbeddedSpec(resolution=16, split="test", size=N))
    tr = generate(EmbeddedSpec(resolution=16, split="train", size=N))
    return {"test": te.images, "test_y": te.labels, "train": tr.images, "train_y": tr.labels}


@pytest.fixture(scope="module")
def net() -> emb.FeatureNet:
    return emb.load_feature_net(16)


def _stats(net: emb.FeatureNet, images: Tensor) -> FeatureStats:
    s = FeatureStats()
    s.update(emb.embed(net, images)[0])
    return s


def _fd(a: FeatureStats, b: FeatureStats) -> float:
    return frechet_distance(a.mean(), a.cov(), b.mean(), b.cov())


def _blur(x: Tensor, sigma: float) -> Tensor:
    r = 3
    k = torch.exp(-(torch.arange(-r, r + 1).float() ** 2) / (2 * sigma**2))
    k = k / k.sum()
    b, c, h, w = x.shape
    y = F.pad(x, (r, r, r, r), mode="reflect").reshape(b * c, 1, h + 2 * r, w + 2 * r)
    y = F.conv2d(F.conv2d(y, k.view(1, 1, 1, -1)), k.view(1, 1, -1, 1))  # separable Gaussian
    return y.reshape(b, c, h, w)


def _shuffle_patches(x: Tensor, frac: float, p: int = 4) -> Tensor:
    """Permutes a fraction of each image's p×p patches among themselves."""
    b, c, h, w = x.shape
    t = x.unfold(2, p, p).unfold(3, p, p).reshape(b, c, -1, p, p)  # (B, C, T, p, p)
    out, g, m = t.clone(), torch.Generator().manual_seed(1), round(frac * t.shape[2])
    for i in range(b):
        idx = torch.randperm(t.shape[2], generator=g)[:m]
        out[i, :, idx] = t[i, :, idx[torch.randperm(m, generator=g)]]
    return out.reshape(b, c, h // p, w // p, p, p).permute(0, 1, 2, 4, 3, 5).reshape(b, c, h, w)


# ---------------------------------------------------------------- assets


def test_shipped_weights_match_checksum_table(net: emb.FeatureNet) -> None:
    name = emb.asset_name(16)
    digest = hashlib.sha256((assets.ASSETS_DIR / name).read_bytes()).hexdigest()
    assert digest == assets.CHECKSUMS[name] == net.asset_sha256
    assert net.feat_dim in range(128, 257) and not net.training


def test_corrupt_weights_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = emb.asset_name(16)
    data = bytearray((assets.ASSETS_DIR / name).read_bytes())
    data[-5] ^= 0xFF
    (tmp_path / name).write_bytes(bytes(data))
    monkeypatch.setattr(assets, "ASSETS_DIR", tmp_path)
    with pytest.raises(PfbenchError, match=rf"{name}.*sha256.*rebuild"):
        assets.load_tensors(name)


def test_missing_weights_say_how_to_rebuild(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PFBENCH_CACHE", str(tmp_path))
    with pytest.raises(PfbenchError, match=r"embedded_net_r24.*pfbench assets build --resolution 24"):
        emb.load_feature_net(24)


def test_cache_dir_asset_verified_by_sidecar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tensors, meta, _ = assets.load_tensors(emb.asset_name(16))
    monkeypatch.setenv("PFBENCH_CACHE", str(tmp_path))
    monkeypatch.setattr(assets, "ASSETS_DIR", tmp_path / "empty")
    sha = assets.save_tensors(tensors, meta, tmp_path / "assets" / "x.safetensors")
    assert assets.load_tensors("x.safetensors")[2] == sha
    (tmp_path / "assets" / "x.safetensors.sha256").write_text("0" * 64)
    with pytest.raises(PfbenchError, match="x.safetensors has sha256"):
        assets.load_tensors("x.safetensors")


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("PFBENCH_SLOW"), reason="~1 min CPU build; set PFBENCH_SLOW=1")
def test_rebuild_is_bit_identical_to_shipped(tmp_path: Path) -> None:
    # Holds on the same torch/oneDNN build and CPU ISA as the machine that produced the file.
    assert emb.build_assets(tmp_path, 16, 0) == {emb.asset_name(16): assets.CHECKSUMS[emb.asset_name(16)]}


# ---------------------------------------------------------------- network and features


def test_features_do_not_depend_on_batch(net: emb.FeatureNet, real: dict[str, Tensor]) -> None:
    imgs = emb.quantize(real["test"][:300])
    f_all, l_all = emb.embed(net, imgs, batch_size=300)
    f_parts, l_parts = emb.embed(net, imgs, batch_size=7)
    torch.testing.assert_close(f_parts, f_all, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(l_parts, l_all, rtol=1e-5, atol=1e-5)


def test_class_accuracy_real_high_shuffled_chance(real: dict[str, Tensor]) -> None:
    imgs, y = emb.quantize(real["test"]), real["test_y"]
    m = emb.ClassAccuracy()
    m.update(imgs[:1000], Cond(y=y[:1000]))
    m.update(imgs[1000:], Cond(y=y[1000:]))
    assert m.compute()["class_acc"] >= 0.95
    shuffled = emb.ClassAccuracy()
    shuffled.update(imgs, Cond(y=y[torch.randperm(N, generator=torch.Generator().manual_seed(0))]))
    assert abs(shuffled.compute()["class_acc"] - 1 / NUM_CLASSES) < 0.05
    with pytest.raises(PfbenchError, match="null class"):
        m.update(imgs[:4], Cond(y=torch.full((4,), NUM_CLASSES)))


def test_metrics_reject_float_images() -> None:
    with pytest.raises(PfbenchError, match="uint8"):
        emb.FDEmbedded().update(torch.zeros(2, 3, 16, 16), Cond(y=torch.zeros(2, dtype=torch.long)))


# ---------------------------------------------------------------- sanity of the distances


def test_fd_real_vs_real_far_below_degraded_and_monotone(
    net: emb.FeatureNet, real: dict[str, Tensor]
) -> None:
    ref = _stats(net, emb.quantize(real["test"]))
    fd_real = _fd(ref, _stats(net, emb.quantize(real["train"])))
    x = real["train"]
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    degradations = {
        "noise": [x + s * noise for s in (0.1, 0.2, 0.4)],
        "blur": [_blur(x, s) for s in (0.5, 1.0, 2.0)],
        "shuffle": [_shuffle_patches(x, f) for f in (0.25, 0.5, 1.0)],
    }
    for kind, levels in degradations.items():
        fds = [_fd(ref, _stats(net, emb.quantize(d))) for d in levels]
        print(f"fd_embedded real-vs-real {fd_real:.3f}; {kind}: " + ", ".join(f"{v:.2f}" for v in fds))
        assert fds[0] > 5 * fd_real, (kind, fd_real, fds)
        assert all(a < b for a, b in zip(fds, fds[1:], strict=False)), (kind, fds)


def test_is_real_beats_blurred(net: emb.FeatureNet, real: dict[str, Tensor]) -> None:
    m = emb.ISEmbedded()
    m.update(emb.quantize(real["test"]), Cond(y=real["test_y"]))
    out = m.compute()
    blurred_probs = torch.softmax(emb.embed(net, emb.quantize(_blur(real["test"], 1.0)))[1].double(), 1)
    print(f"is_embedded real {out['is_embedded']:.3f} vs blurred (sigma 1) {inception_score(blurred_probs)[0]:.3f}")
    assert out["is_embedded"] > 8.0 > inception_score(blurred_probs)[0] + 1.0
    assert out["is_embedded_std"] > 0


def test_fd_metric_uses_cached_reference(
    tmp_path: Path, real: dict[str, Tensor], monkeypatch: pytest.MonkeyPatch
) -> None:
    imgs = emb.quantize(real["train"])
    m = emb.FDEmbedded(ref_size=N, cache_dir=tmp_path)
    for i in range(0, N, 512):
        m.update(imgs[i : i + 512], Cond(y=real["train_y"][i : i + 512]))
    fd = m.compute()["fd_embedded"]
    files = list((tmp_path / "embedded_ref").glob("*.npz"))
    assert len(files) == 1
    # Second metric: reference comes from the cache (embedding the reference again would fail).
    m2 = emb.FDEmbedded(ref_size=N, cache_dir=tmp_path)
    m2.update(imgs, Cond(y=real["train_y"]))

    def no_embed(*args: object, **kwargs: object) -> None:
        raise AssertionError("reference was recomputed instead of read from the cache")

    monkeypatch.setattr(emb, "embed", no_embed)
    assert m2.compute()["fd_embedded"] == pytest.approx(fd, rel=1e-9)
    assert 0 < fd < 0.5
    monkeypatch.undo()
    m3 = emb.FDEmbedded(reference=m.stats)  # given stats: generated vs itself
    m3.update(imgs, Cond(y=real["train_y"]))
    assert m3.compute()["fd_embedded"] < 1e-6


def test_precision_recall_embedded(tmp_path: Path, real: dict[str, Tensor]) -> None:
    pr = emb.PREmbedded(ref_size=1000, cache_dir=tmp_path)
    pr.update(emb.quantize(real["train"][:1000]), Cond(y=real["train_y"][:1000]))
    good = pr.compute()
    bad = emb.PREmbedded(ref_size=1000, cache_dir=tmp_path)
    bad.update(emb.quantize(_blur(real["train"][:1000], 2.0)), Cond(y=real["train_y"][:1000]))
    worse = bad.compute()
    assert good["precision_embedded"] > 0.6 and good["recall_embedded"] > 0.6
    assert worse["precision_embedded"] < good["precision_embedded"] - 0.3


def test_trivial_baseline(net: emb.FeatureNet, real: dict[str, Tensor]) -> None:
    train = generate(EmbeddedSpec(resolution=16, split="train", size=5000))
    a = emb.trivial_baseline_images(train, 1000, seed=3)
    assert a.dtype == torch.uint8 and a.shape == (1000, 3, 16, 16)
    assert torch.equal(a, emb.trivial_baseline_images(train, 1000, seed=3))
    assert not torch.equal(a, emb.trivial_baseline_images(train, 1000, seed=4))
    # Class 0's images average to class 0's mean training image (per-pixel first moment kept).
    mean0 = (train.images[train.labels == 0].double() * 127.5 + 127.5).mean(0)
    got0 = a[train.labels[:1000] == 0].double().mean(0)
    assert float((got0 - mean0).abs().mean()) < 8.0
    ref = _stats(net, emb.quantize(real["test"]))
    assert _fd(ref, _stats(net, a)) > 20 * _fd(ref, _stats(net, emb.quantize(real["train"])))


def test_metrics_are_registered_and_follow_protocol() -> None:
    for name in ("fd_embedded", "is_embedded", "class_acc", "pr_embedded"):
        cls = METRICS.get(name)
        m = cls()
        assert isinstance(m, Metric) and cls.name == name and isinstance(cls.higher_is_better, bool)
    assert not emb.FDEmbedded.higher_is_better and emb.ISEmbedded.higher_is_better


def test_reference_cache_survives_corrupt_entry(tmp_path: Path) -> None:
    stats, feats = emb.reference_features(16, size=300, cache_dir=tmp_path)
    (path,) = (tmp_path / "embedded_ref").glob("*.npz")
    path.write_bytes(b"truncated")
    stats2, feats2 = emb.reference_features(16, size=300, cache_dir=tmp_path)
    assert np.array_equal(feats, feats2) and np.array_equal(stats.cov(), stats2.cov())
    shutil.rmtree(tmp_path / "embedded_ref")
