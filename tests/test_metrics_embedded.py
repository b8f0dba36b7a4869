"""Embedded-default metrics: shipped network, checksums, features and sanity behaviour of the metrics."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

import pfbench.assets as assets
from pfbench import PfbenchError
from pfbench.data.embedded import NUM_CLASSES, EmbeddedSpec, generate
from pfbench.encoders import embedded as emb
from pfbench.evaluate.baseline import trivial_baseline_images
from pfbench.metrics.base import Metric
from pfbench.metrics.embedded import ClassAccuracy, FDEmbedded, ISEmbedded, PREmbedded
from pfbench.metrics.frechet import frechet_distance
from pfbench.metrics.refstats import Reference, RefStats
from pfbench.metrics.scores import inception_score
from pfbench.metrics.stats import FeatureStats
from pfbench.registry import METRICS
from pfbench.types import Cond, quantize

N = 2000


@pytest.fixture(scope="module")
def real() -> dict[str, Tensor]:
    te = generate(EmbeddedSpec(resolution=16, split="test", size=N))
    tr = generate(EmbeddedSpec(resolution=16, split="train", size=N))
    return {"test": te.images, "test_y": te.labels, "train": tr.images, "train_y": tr.labels}


@pytest.fixture(scope="module")
def net() -> emb.FeatureNet:
    return emb.load_feature_net(16)


@pytest.fixture(scope="module")
def feats() -> emb.EmbeddedFeatures:
    return emb.EmbeddedFeatures(16)


def _stats(images: Tensor) -> FeatureStats:
    s = FeatureStats()
    s.update(emb.EmbeddedFeatures(16)(images)["pool"])  # (N, 128)
    return s


def _feed(metric: object, network: emb.EmbeddedFeatures, images: Tensor, y: Tensor, batch: int = 512) -> None:
    for i in range(0, len(images), batch):
        metric.update(network(images[i : i + batch]), Cond(y=y[i : i + batch]))  # type: ignore[attr-defined]


def _reference(network: emb.EmbeddedFeatures, images: Tensor) -> Reference:
    f = network(images)["pool"]
    st = FeatureStats()
    st.update(f)
    return Reference.of(RefStats(st.mean(), st.cov(), pool=f.numpy()))


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


def test_features_do_not_depend_on_batch(real: dict[str, Tensor]) -> None:
    imgs = quantize(real["test"][:300])
    whole = emb.EmbeddedFeatures(16, max_batch=300)(imgs)
    parts = emb.EmbeddedFeatures(16, max_batch=7)(imgs)
    assert whole["pool"].shape == (300, 128) and whole["logits"].shape == (300, NUM_CLASSES)
    torch.testing.assert_close(parts["pool"], whole["pool"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(parts["logits"], whole["logits"], rtol=1e-5, atol=1e-5)


def test_class_accuracy_real_high_shuffled_chance(feats: emb.EmbeddedFeatures, real: dict[str, Tensor]) -> None:
    imgs, y = quantize(real["test"]), real["test_y"]
    m = ClassAccuracy()
    _feed(m, feats, imgs, y, batch=1000)
    assert m.compute()["class_acc"] >= 0.95
    shuffled = ClassAccuracy()
    _feed(shuffled, feats, imgs, y[torch.randperm(N, generator=torch.Generator().manual_seed(0))])
    assert abs(shuffled.compute()["class_acc"] - 1 / NUM_CLASSES) < 0.05
    with pytest.raises(PfbenchError, match="null class"):
        m.update(feats(imgs[:4]), Cond(y=torch.full((4,), NUM_CLASSES)))


def test_network_rejects_float_images_and_other_sides(feats: emb.EmbeddedFeatures) -> None:
    with pytest.raises(PfbenchError, match="uint8"):
        feats(torch.zeros(2, 3, 16, 16))
    with pytest.raises(PfbenchError, match="resolution 16"):
        feats(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))


# ---------------------------------------------------------------- sanity of the distances


def test_fd_real_vs_real_far_below_degraded_and_monotone(real: dict[str, Tensor]) -> None:
    ref = _stats(quantize(real["test"]))
    fd_real = _fd(ref, _stats(quantize(real["train"])))
    x = real["train"]
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    degradations = {
        "noise": [x + s * noise for s in (0.1, 0.2, 0.4)],
        "blur": [_blur(x, s) for s in (0.5, 1.0, 2.0)],
        "shuffle": [_shuffle_patches(x, f) for f in (0.25, 0.5, 1.0)],
    }
    for kind, levels in degradations.items():
        fds = [_fd(ref, _stats(quantize(d))) for d in levels]
        print(f"fd_embedded real-vs-real {fd_real:.3f}; {kind}: " + ", ".join(f"{v:.2f}" for v in fds))
        assert fds[0] > 5 * fd_real, (kind, fd_real, fds)
        assert all(a < b for a, b in zip(fds, fds[1:], strict=False)), (kind, fds)


def test_is_real_beats_blurred(feats: emb.EmbeddedFeatures, real: dict[str, Tensor]) -> None:
    m = ISEmbedded()
    _feed(m, feats, quantize(real["test"]), real["test_y"])
    out = m.compute()
    blurred_probs = torch.softmax(feats(quantize(_blur(real["test"], 1.0)))["logits"].double(), 1)
    print(f"is_embedded real {out['is_embedded']:.3f} vs blurred (sigma 1) {inception_score(blurred_probs)[0]:.3f}")
    assert out["is_embedded"] > 8.0 > inception_score(blurred_probs)[0] + 1.0
    assert out["is_embedded_std"] > 0


def test_fd_metric_against_a_reference(feats: emb.EmbeddedFeatures, real: dict[str, Tensor]) -> None:
    imgs = quantize(real["train"])
    m = FDEmbedded(_reference(feats, quantize(real["test"])))
    _feed(m, feats, imgs, real["train_y"])
    fd = m.compute()["fd_embedded"]
    assert 0 < fd < 0.5 and fd == _fd(m.stats, _stats(quantize(real["test"])))
    itself = FDEmbedded(_reference(feats, imgs))  # generated vs itself
    _feed(itself, feats, imgs, real["train_y"])
    assert itself.compute()["fd_embedded"] < 1e-6


def test_precision_recall_embedded(feats: emb.EmbeddedFeatures, real: dict[str, Tensor]) -> None:
    ref = _reference(feats, quantize(real["test"][:1000]))
    pr = PREmbedded(ref)
    _feed(pr, feats, quantize(real["train"][:1000]), real["train_y"][:1000])
    good = pr.compute()
    bad = PREmbedded(ref)
    _feed(bad, feats, quantize(_blur(real["train"][:1000], 2.0)), real["train_y"][:1000])
    worse = bad.compute()
    assert good["precision_embedded"] > 0.6 and good["recall_embedded"] > 0.6
    assert worse["precision_embedded"] < good["precision_embedded"] - 0.3


def test_trivial_baseline(real: dict[str, Tensor]) -> None:
    train = generate(EmbeddedSpec(resolution=16, split="train", size=5000))
    a = trivial_baseline_images(train, 1000, seed=3)
    assert a.dtype == torch.uint8 and a.shape == (1000, 3, 16, 16)
    assert torch.equal(a, trivial_baseline_images(train, 1000, seed=3))
    assert not torch.equal(a, trivial_baseline_images(train, 1000, seed=4))
    # Class 0's images average to class 0's mean training image (per-pixel first moment kept).
    mean0 = (train.images[train.labels == 0].double() * 127.5 + 127.5).mean(0)
    got0 = a[train.labels[:1000] == 0].double().mean(0)
    assert float((got0 - mean0).abs().mean()) < 8.0
    ref = _stats(quantize(real["test"]))
    assert _fd(ref, _stats(a)) > 20 * _fd(ref, _stats(quantize(real["train"])))


def test_metrics_are_registered_and_follow_protocol(feats: emb.EmbeddedFeatures, real: dict[str, Tensor]) -> None:
    ref = _reference(feats, quantize(real["test"][:100]))
    for name in ("fd_embedded", "is_embedded", "class_acc", "pr_embedded"):
        cls = METRICS.get(name)
        m = cls(reference=ref) if "reference" in cls.needs else cls()
        assert isinstance(m, Metric) and cls.name == name and isinstance(cls.higher_is_better, bool)
        assert cls.features == "embedded"
    assert not FDEmbedded.higher_is_better and ISEmbedded.higher_is_better
    assert ClassAccuracy.needs == {"labels"} and ISEmbedded.needs == frozenset()
