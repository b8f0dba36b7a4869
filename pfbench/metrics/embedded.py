"""Embedded-default metrics (SPEC §6): a small CNN trained by pfbench on the embedded dataset.

No downloads: the network's weights ship in ``pfbench/assets`` (``embedded_net_r16.safetensors``,
checksummed) and can be rebuilt on CPU with ``build_assets`` (`pfbench assets build`), bit-identically
on the same torch build and CPU instruction set. Its pooled features give ``fd_embedded`` (a Fréchet distance — never call it FID) and
precision/recall; its softmax gives ``is_embedded`` (the Inception-Score formula) and
``class_acc``. GroupNorm (no batch statistics) keeps every image's features independent of what
else is in its batch.

Network (``FeatureNet``, width w = 32, input (B, 3, R, R) in [-1, 1]):
``[conv3×3 3→w] [conv3×3 s2 w→2w] [conv3×3 s2 2w→4w] [conv3×3 4w→4w]`` each followed by
GroupNorm(8) + ReLU, then global average pooling → 128-d "pool" features → linear → 10 logits.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pfbench import PfbenchError
from pfbench.assets import load_tensors, save_tensors
from pfbench.data.embedded import NUM_CLASSES, EmbeddedBatch, EmbeddedSpec, generate
from pfbench.metrics.base import check_images, check_labels, content_key, metric_cache_dir
from pfbench.metrics.stats import FeatureStats, frechet_distance, inception_score, precision_recall
from pfbench.types import Cond

_FORMAT = "pfbench-embedded-net-v1"
_WIDTH = 32
_TRAIN_SIZE = 32_768  # train-split images (data seed 0); fresh images beat more epochs
_EPOCHS = 3
_BATCH = 128
_LR = 3e-3
_TEST_SIZE = 10_000  # size of the held-out test split used for accuracy and FD reference stats


def asset_name(resolution: int) -> str:
    """File name of the feature network for ``resolution``."""
    return f"embedded_net_r{resolution}.safetensors"


def _rebuild_hint(resolution: int) -> str:
    return f"pfbench assets build --resolution {resolution}"


def quantize(x: Tensor) -> Tensor:
    """Model-space float [-1, 1] → uint8 via ``clamp(round(127.5·x + 127.5), 0, 255)`` (SPEC §5)."""
    return (x.float() * 127.5 + 127.5).round().clamp(0, 255).to(torch.uint8)


def to_input(images: Tensor) -> Tensor:
    """uint8 (B, 3, H, W) → float32 network input in [-1, 1]."""
    return images.float() / 127.5 - 1.0


def _block(c_in: int, c_out: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.GroupNorm(8, c_out), nn.ReLU()]


class FeatureNet(nn.Module):
    """Small CNN classifier whose pooled activations are the embedded metrics' features.

    Args:
        num_classes: number of logits.
        width: channels of the first block; features have ``4·width`` dims.
    """

    def __init__(self, num_classes: int = NUM_CLASSES, width: int = _WIDTH) -> None:
        super().__init__()
        w = width
        self.body = nn.Sequential(
            *_block(3, w, 1), *_block(w, 2 * w, 2), *_block(2 * w, 4 * w, 2), *_block(4 * w, 4 * w, 1)
        )
        self.head = nn.Linear(4 * w, num_classes)
        self.feat_dim = 4 * w
        self.resolution: int | None = None  # set by the loader: the resolution it was trained at
        self.asset_sha256 = ""  # set by the loader: identifies the weights in cache keys

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x (B, 3, R, R) float in [-1, 1] → (features (B, 4w), logits (B, num_classes))."""
        h = self.body(x)  # (B, 4w, R/4, R/4)
        feats = h.mean(dim=(2, 3))  # (B, 4w)
        return feats, self.head(feats)


@contextlib.contextmanager
def _deterministic(threads: int) -> Iterator[None]:
    """Fixed thread count + deterministic kernels; restores the caller's settings."""
    threads_before, det_before = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(threads_before)
        torch.use_deterministic_algorithms(det_before)


@torch.no_grad()
def _accuracy(net: FeatureNet, x: Tensor, y: Tensor) -> float:
    net.eval()
    correct = sum(
        int((net(x[i : i + 1000])[1].argmax(1) == y[i : i + 1000]).sum()) for i in range(0, len(x), 1000)
    )
    net.train()
    return correct / len(x)


def train_feature_net(resolution: int = 16, seed: int = 0) -> tuple[FeatureNet, dict[str, str]]:
    """Trains the feature network on the embedded train split, deterministically on CPU.

    One thread and ``torch.use_deterministic_algorithms(True)``, so two builds on the same
    software stack and CPU give identical weights whatever the machine's core count.

    Args:
        resolution: image side the network is trained at.
        seed: seeds initialisation and the minibatch order (the data is always data seed 0).

    Returns:
        (network in eval mode, metadata with the held-out test accuracy).
    """
    with _deterministic(threads=1), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = FeatureNet()
        data = generate(EmbeddedSpec(resolution=resolution, split="train", size=_TRAIN_SIZE, seed=0))
        x, y = to_input(quantize(data.images)), data.labels  # train on what metrics will see
        gen = torch.Generator().manual_seed(seed)
        steps_per_epoch = _TRAIN_SIZE // _BATCH
        opt = torch.optim.AdamW(net.parameters(), lr=_LR, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, _LR, total_steps=_EPOCHS * steps_per_epoch, pct_start=0.15
        )
        for _ in range(_EPOCHS):
            perm = torch.randperm(_TRAIN_SIZE, generator=gen)
            for i in range(steps_per_epoch):
                idx = perm[i * _BATCH : (i + 1) * _BATCH]
                loss = F.cross_entropy(net(x[idx])[1], y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
        test = generate(EmbeddedSpec(resolution=resolution, split="test", size=_TEST_SIZE, seed=0))
        acc = _accuracy(net, to_input(quantize(test.images)), test.labels)
    net.eval().requires_grad_(False)
    meta = {
        "format": _FORMAT,
        "resolution": str(resolution),
        "width": str(_WIDTH),
        "num_classes": str(NUM_CLASSES),
        "seed": str(seed),
        "train": f"{_TRAIN_SIZE} train images x {_EPOCHS} epochs, batch {_BATCH}, AdamW {_LR} one-cycle",
        "test_acc": f"{acc:.4f}",
    }
    net.resolution = resolution
    return net, meta


def build_assets(out_dir: str | Path, resolution: int = 16, seed: int = 0) -> dict[str, str]:
    """Trains the embedded feature network and writes it to ``out_dir`` (atomic, with a sidecar).

    Args:
        out_dir: directory to write into (the package's ``pfbench/assets`` to refresh the shipped
            file, or ``<cache root>/assets`` — where the loader also looks).
        resolution: image side.
        seed: training seed.

    Returns:
        ``{file name: sha256}`` of the files written (put it in ``pfbench.assets.CHECKSUMS`` when
        refreshing a shipped file).
    """
    net, meta = train_feature_net(resolution, seed)
    name = asset_name(resolution)
    sha = save_tensors(net.state_dict(), meta, Path(out_dir) / name)
    return {name: sha}


_NETS: dict[int, FeatureNet] = {}


def load_feature_net(resolution: int = 16) -> FeatureNet:
    """The verified feature network for ``resolution`` (eval mode, frozen, cached per process).

    Raises:
        PfbenchError: weights missing (says how to rebuild), checksum mismatch, or wrong format.
    """
    if resolution in _NETS:
        return _NETS[resolution]
    name = asset_name(resolution)
    tensors, meta, sha = load_tensors(name, _rebuild_hint(resolution))
    if meta.get("format") != _FORMAT or meta.get("resolution") != str(resolution):
        raise PfbenchError(
            f"asset {name}: unexpected metadata {meta}; rebuild with `{_rebuild_hint(resolution)}`"
        )
    net = FeatureNet(int(meta["num_classes"]), int(meta["width"]))
    net.load_state_dict(tensors)
    net.eval().requires_grad_(False)
    net.resolution = resolution
    net.asset_sha256 = sha
    _NETS[resolution] = net
    return net


@torch.inference_mode()
def embed(net: FeatureNet, images: Tensor, batch_size: int = 1000) -> tuple[Tensor, Tensor]:
    """uint8 images (N, 3, R, R) → (features (N, D) float32, logits (N, K) float32)."""
    feats, logits = [], []
    for i in range(0, images.shape[0], batch_size):
        f, lg = net(to_input(images[i : i + batch_size]))
        feats.append(f)
        logits.append(lg)
    if not feats:
        return torch.zeros(0, net.feat_dim), torch.zeros(0, net.head.out_features)
    return torch.cat(feats), torch.cat(logits)


def trivial_baseline_images(train_batch: EmbeddedBatch, n: int, seed: int = 0) -> Tensor:
    """Per-class Gaussian "generator": a floor any trained model should beat.

    Image ``i`` has class ``train_batch.labels[i mod N]`` (so for ``n ≤ N`` it is conditioned on
    the same labels as ``train_batch.images[:n]``) and is ``mean_c + std_c ⊙ ε``, with
    ``mean_c``/``std_c`` the per-class, per-channel, per-pixel mean and standard deviation of
    ``train_batch.images`` and ``ε ~ N(0, I)`` from a generator seeded with ``seed``
    (deterministic for a given ``(seed, n)``), then quantised to uint8. It matches first and
    second moments pixel-wise but has no shapes, so FD(model) / FD(trivial) < 1 means the model
    learned more than per-pixel statistics.

    Args:
        train_batch: training images (N, 3, H, W) in [-1, 1] with labels; every class ≥ 2 images.
        n: number of images to draw.
        seed: noise seed.

    Returns:
        (n, 3, H, W) uint8.
    """
    x, y = train_batch.images.double(), train_batch.labels  # (N, 3, H, W), (N,)
    counts = torch.bincount(y, minlength=NUM_CLASSES)
    if int((counts < 2).sum()):
        raise PfbenchError(
            f"trivial_baseline_images: every class needs ≥ 2 train images, counts are {counts.tolist()}"
        )
    mean = torch.stack([x[y == c].mean(0) for c in range(NUM_CLASSES)])  # (K, 3, H, W)
    std = torch.stack([x[y == c].std(0) for c in range(NUM_CLASSES)])  # (K, 3, H, W)
    labels = y[torch.arange(n) % y.shape[0]]  # (n,)
    eps = torch.randn((n, *x.shape[1:]), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return quantize(mean[labels] + std[labels] * eps)


# ---------------------------------------------------------------- reference statistics


def reference_features(
    resolution: int = 16, *, data_seed: int = 0, size: int = _TEST_SIZE, cache_dir: str | Path | None = None
) -> tuple[FeatureStats, np.ndarray]:
    """Features of the embedded test split, cached by content hash.

    The key hashes the network's weight checksum and the uint8 reference images themselves, so a
    change to the data generator or the weights can never reuse stale statistics.

    Args:
        resolution: image side (selects the network and the images).
        data_seed: embedded dataset seed.
        size: number of test-split images (the first ``size``).
        cache_dir: cache root; default ``$PFBENCH_CACHE`` or ``~/.cache/pfbench``.

    Returns:
        (float64 stats, features (size, D) float32 as a numpy array).
    """
    net = load_feature_net(resolution)
    images = quantize(
        generate(EmbeddedSpec(resolution=resolution, split="test", size=size, seed=data_seed)).images
    )
    key = content_key("embedded-ref-v1", net.asset_sha256, images.numpy().tobytes())
    path = metric_cache_dir("embedded_ref", cache_dir) / f"{key[:32]}.npz"
    if path.is_file():
        try:
            with np.load(path) as z:
                feats = z["feats"]
                stats = FeatureStats.from_state({k[6:]: z[k] for k in z.files if k.startswith("stats_")})
            return stats, feats
        except (OSError, ValueError, KeyError, PfbenchError):
            path.unlink(missing_ok=True)  # unreadable cache entry (e.g. truncated): recompute
    feats_t, _ = embed(net, images)
    stats = FeatureStats()
    stats.update(feats_t)
    feats = feats_t.numpy()
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
    with os.fdopen(fd, "wb") as f:
        np.savez(f, feats=feats, **{f"stats_{k}": v for k, v in stats.state().items()})  # type: ignore[arg-type]  # stubs type **kwds as allow_pickle
    os.replace(tmp, path)
    return stats, feats


def _load_reference(reference: FeatureStats | str | Path) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(reference, FeatureStats):
        return reference.mean(), reference.cov()
    path = Path(reference)
    if not path.is_file():
        raise PfbenchError(
            f"FDEmbedded: reference stats file {path} not found; pass an .npz with mu and sigma"
        )
    with np.load(path) as z:
        if "mu" in z.files and "sigma" in z.files:
            return z["mu"].astype(np.float64), z["sigma"].astype(np.float64)
        stats = FeatureStats.from_state({k: z[k] for k in z.files})
    return stats.mean(), stats.cov()


# ---------------------------------------------------------------- metrics


class _EmbeddedMetric:
    """Lazily loads the network at the first batch's resolution (or the given one)."""

    def __init__(self, resolution: int | None) -> None:
        self.resolution = resolution
        self._net: FeatureNet | None = None

    def _embed(self, images: Tensor, where: str) -> tuple[Tensor, Tensor]:
        check_images(images, where, self.resolution)
        if self._net is None:
            self.resolution = int(images.shape[-1])
            self._net = load_feature_net(self.resolution)
        return embed(self._net, images)


class FDEmbedded(_EmbeddedMetric):
    """Fréchet distance in the embedded network's pool features (``fd_embedded``; not FID).

    Args:
        resolution: image side; ``None`` takes it from the first batch.
        reference: stats to compare against (``FeatureStats``, or an ``.npz`` with ``mu``/``sigma``
            or a ``FeatureStats`` state); default: the embedded test split, cached.
        data_seed: dataset seed for the default reference.
        ref_size: test-split images for the default reference.
        cache_dir: cache root for the default reference.
    """

    name: ClassVar[str] = "fd_embedded"
    higher_is_better: ClassVar[bool] = False

    def __init__(
        self,
        resolution: int | None = None,
        reference: FeatureStats | str | Path | None = None,
        data_seed: int = 0,
        ref_size: int = _TEST_SIZE,
        cache_dir: str | Path | None = None,
    ) -> None:
        super().__init__(resolution)
        self.reference, self.data_seed, self.ref_size, self.cache_dir = (
            reference,
            data_seed,
            ref_size,
            cache_dir,
        )
        self.stats = FeatureStats()

    def update(self, images: Tensor, cond: Cond) -> None:
        """Adds uint8 (B, 3, H, W) images; ``cond`` is unused."""
        self.stats.update(self._embed(images, "fd_embedded")[0])

    def compute(self) -> dict[str, float]:
        if self.stats.n < 2:
            raise PfbenchError(f"fd_embedded: need at least 2 images, got {self.stats.n}")
        assert self.resolution is not None
        if self.reference is None:
            ref = reference_features(
                self.resolution, data_seed=self.data_seed, size=self.ref_size, cache_dir=self.cache_dir
            )[0]
            mu_r, sigma_r = ref.mean(), ref.cov()
        else:
            mu_r, sigma_r = _load_reference(self.reference)
        return {self.name: frechet_distance(self.stats.mean(), self.stats.cov(), mu_r, sigma_r)}


class ISEmbedded(_EmbeddedMetric):
    """Inception-Score formula with the embedded classifier's softmax, 10 splits (``is_embedded``)."""

    name: ClassVar[str] = "is_embedded"
    higher_is_better: ClassVar[bool] = True

    def __init__(self, resolution: int | None = None, splits: int = 10) -> None:
        super().__init__(resolution)
        self.splits = splits
        self._probs: list[Tensor] = []

    def update(self, images: Tensor, cond: Cond) -> None:
        """Adds uint8 (B, 3, H, W) images; ``cond`` is unused."""
        logits = self._embed(images, "is_embedded")[1]
        self._probs.append(torch.softmax(logits.double(), dim=1))  # (B, K) float64

    def compute(self) -> dict[str, float]:
        if not self._probs:
            raise PfbenchError("is_embedded: no images were added")
        mean, std = inception_score(torch.cat(self._probs), self.splits)
        return {self.name: mean, f"{self.name}_std": std}


class ClassAccuracy(_EmbeddedMetric):
    """Fraction of images the embedded classifier assigns to their conditioning class (``class_acc``)."""

    name: ClassVar[str] = "class_acc"
    higher_is_better: ClassVar[bool] = True

    def __init__(self, resolution: int | None = None) -> None:
        super().__init__(resolution)
        self.correct = 0
        self.total = 0

    def update(self, images: Tensor, cond: Cond) -> None:
        """Adds uint8 (B, 3, H, W) images with labels ``cond.y`` (B,) in [0, K)."""
        y = check_labels(cond, images.shape[0], NUM_CLASSES, "class_acc")
        pred = self._embed(images, "class_acc")[1].argmax(dim=1)  # (B,)
        self.correct += int((pred == y).sum())
        self.total += int(y.numel())

    def compute(self) -> dict[str, float]:
        if self.total == 0:
            raise PfbenchError("class_acc: no images were added")
        return {self.name: self.correct / self.total}


class PREmbedded(_EmbeddedMetric):
    """k-NN precision/recall (k = 3) in the embedded pool features vs the embedded test split.

    Reports ``precision_embedded`` and ``recall_embedded``; use similar sample and reference counts.
    """

    name: ClassVar[str] = "pr_embedded"
    higher_is_better: ClassVar[bool] = True

    def __init__(
        self,
        resolution: int | None = None,
        data_seed: int = 0,
        ref_size: int = _TEST_SIZE,
        k: int = 3,
        cache_dir: str | Path | None = None,
    ) -> None:
        super().__init__(resolution)
        self.data_seed, self.ref_size, self.k, self.cache_dir = data_seed, ref_size, k, cache_dir
        self._feats: list[Tensor] = []

    def update(self, images: Tensor, cond: Cond) -> None:
        """Adds uint8 (B, 3, H, W) images; ``cond`` is unused."""
        self._feats.append(self._embed(images, "pr_embedded")[0])

    def compute(self) -> dict[str, float]:
        if not self._feats:
            raise PfbenchError("pr_embedded: no images were added")
        assert self.resolution is not None
        ref = reference_features(
            self.resolution, data_seed=self.data_seed, size=self.ref_size, cache_dir=self.cache_dir
        )[1]
        p, r = precision_recall(ref, torch.cat(self._feats), k=self.k)
        return {"precision_embedded": p, "recall_embedded": r}
