"""Tests for the embedded procedural dataset and its PNG preview."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from PIL import Image

from pfbench import PfbenchError
from pfbench.data.embedded import (
    CLASS_NAMES,
    COLOR_NAMES,
    NUM_CLASSES,
    TEXTURE_NAMES,
    EmbeddedBatch,
    EmbeddedSpec,
    generate,
)
from pfbench.data.preview import preview


def _assert_same(a: EmbeddedBatch, b: EmbeddedBatch) -> None:
    assert torch.equal(a.images, b.images)
    assert torch.equal(a.labels, b.labels)
    assert torch.equal(a.hard, b.hard)
    assert a.captions == b.captions


def _local_gradient(x: torch.Tensor) -> torch.Tensor:
    """Mean |finite difference| to the 4-neighbours, averaged over channels: (N, 3, H, W) -> (N, H, W)."""
    gx = (x[..., :, 1:] - x[..., :, :-1]).abs().mean(1)  # (N, H, W-1)
    gy = (x[..., 1:, :] - x[..., :-1, :]).abs().mean(1)  # (N, H-1, W)
    g = torch.zeros_like(x[:, 0])
    g[..., :, :-1] += gx
    g[..., :, 1:] += gx
    g[..., :-1, :] += gy
    g[..., 1:, :] += gy
    return g


def test_deterministic_and_slice_independent() -> None:
    spec = EmbeddedSpec(size=2200, seed=3)
    full = generate(spec)
    _assert_same(full, generate(spec))
    part = generate(spec, 100, 200)
    assert len(part) == 100
    _assert_same(part, EmbeddedBatch(full.images[100:200], full.labels[100:200], full.hard[100:200],
                                     full.captions[100:200]))  # fmt: skip
    # across parameter-block boundaries, and independent of spec.size
    small = generate(EmbeddedSpec(size=2100, seed=3), 1000, 2100)
    _assert_same(small, EmbeddedBatch(full.images[1000:2100], full.labels[1000:2100],
                                      full.hard[1000:2100], full.captions[1000:2100]))  # fmt: skip
    one = generate(spec, 2047, 2048)
    assert torch.equal(one.images[0], full.images[2047])
    assert len(generate(spec, 5, 5)) == 0


def test_seed_and_split_change_images_and_splits_are_disjoint() -> None:
    train = generate(EmbeddedSpec(size=3000), 0, 3000)
    test = generate(EmbeddedSpec(split="test", size=1000))
    other_seed = generate(EmbeddedSpec(size=1000, seed=1))
    digest = lambda x: hashlib.sha1(x.numpy().tobytes()).hexdigest()  # noqa: E731
    train_hashes = {digest(x) for x in train.images}
    assert len(train_hashes) == len(train)  # no duplicates inside a split either
    assert not any(digest(x) in train_hashes for x in test.images)
    assert not torch.equal(other_seed.images, train.images[:1000])
    assert not torch.equal(test.labels, train.labels[:1000])


@pytest.mark.parametrize("resolution", [16, 32, 8, 64])
def test_shapes_dtypes_and_range(resolution: int) -> None:
    b = generate(EmbeddedSpec(resolution=resolution, size=50), 0, 50)
    assert b.images.shape == (50, 3, resolution, resolution) and b.images.dtype == torch.float32
    assert b.labels.shape == (50,) and b.labels.dtype == torch.int64
    assert b.hard.shape == (50, 1, resolution, resolution) and b.hard.dtype == torch.bool
    assert len(b.captions) == 50 and all(isinstance(c, str) for c in b.captions)
    assert b.images.min() >= -1.0 and b.images.max() <= 1.0
    assert b.images.min() < -0.5 and b.images.max() > 0.5  # uses the range, not a constant
    assert int(b.labels.min()) >= 0 and int(b.labels.max()) < NUM_CLASSES
    assert torch.isfinite(b.images).all()


@pytest.mark.parametrize(
    ("kwargs", "start", "stop"),
    [({"resolution": 18}, 0, 1), ({"resolution": 4}, 0, 1), ({"resolution": 68}, 0, 1),
     ({"split": "val"}, 0, 1), ({"seed": -1}, 0, 1), ({"size": 10}, 0, 11), ({"size": 10}, 6, 5)],
)  # fmt: skip
def test_invalid_spec_raises(kwargs: dict[str, object], start: int, stop: int) -> None:
    with pytest.raises(PfbenchError):
        generate(EmbeddedSpec(**kwargs), start, stop)  # type: ignore[arg-type]


@pytest.mark.parametrize(("resolution", "lo", "hi"), [(16, 0.15, 0.40), (32, 0.10, 0.40)])
def test_hard_mask_fraction_and_gradient(resolution: int, lo: float, hi: float) -> None:
    b = generate(EmbeddedSpec(resolution=resolution), 0, 1000)
    hard = b.hard[:, 0]  # (N, H, W)
    frac = hard.float().mean().item()
    assert lo <= frac <= hi, frac
    g = _local_gradient(b.images)
    assert g[hard].mean() > 3.0 * g[~hard].mean()
    # easy regions are smooth: the typical easy pixel barely changes from its neighbours
    assert g[~hard].median() < 0.1


def test_labels_balanced_and_classes_distinguishable() -> None:
    train = generate(EmbeddedSpec(), 0, 2048)
    counts = torch.bincount(train.labels[:1024], minlength=NUM_CLASSES)
    assert counts.min() >= 1024 // NUM_CLASSES and counts.max() <= 1024 // NUM_CLASSES + 1
    # class = shape: per-class mean hard masks separate classes (colour/texture-independent features)
    feats = train.hard.flatten(1).float()  # (N, H*W)
    centroids = torch.stack([feats[train.labels == c].mean(0) for c in range(NUM_CLASSES)])
    dist = torch.cdist(centroids, centroids) + torch.eye(NUM_CLASSES) * 1e9
    assert dist.min() > 0.5
    test = generate(EmbeddedSpec(split="test"), 0, 1000)
    pred = torch.cdist(test.hard.flatten(1).float(), centroids).argmin(1)
    assert (pred == test.labels).float().mean() > 0.5  # chance is 1 / NUM_CLASSES
    assert NUM_CLASSES >= 10 and len(set(CLASS_NAMES)) == NUM_CLASSES


def test_captions_name_class_and_attributes() -> None:
    b = generate(EmbeddedSpec(), 0, 500)
    assert len(b.captions) == len(b)
    for caption, label in zip(b.captions, b.labels.tolist(), strict=True):
        assert CLASS_NAMES[label] in caption
        assert any(f" {c} " in caption for c in COLOR_NAMES)
        assert any(t in caption for t in TEXTURE_NAMES) and caption.endswith("background")
    # information beyond the class: many distinct captions, and position words vary
    assert len(set(b.captions)) > 0.8 * len(b)
    assert sum("center" in c for c in b.captions) < 0.9 * len(b)
    assert any("left" in c for c in b.captions) and any("right" in c for c in b.captions)


def test_preview_writes_png(tmp_path: Path) -> None:
    out = preview(EmbeddedSpec(size=100), tmp_path / "sub" / "grid.png", n=10, scale=2)
    assert out.exists() and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(out) as im:
        assert im.format == "PNG" and im.mode == "RGB"
        assert im.width >= 4 * 16 * 2 and im.height >= 3 * 16 * 2  # 4 x 3 grid of 32-px tiles
        assert len(set(im.getdata())) > 20  # not blank
    hard = preview(EmbeddedSpec(size=100), tmp_path / "hard.png", n=4, show_hard=True)
    with Image.open(hard) as im:
        assert im.width > 2 * 16 * 4
    with pytest.raises(PfbenchError):
        preview(EmbeddedSpec(size=5), tmp_path / "bad.png", n=6)
