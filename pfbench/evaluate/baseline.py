"""A floor for the embedded dataset's metrics: what any trained model should beat (reference rows of a suite).

The runner scores these images next to real train-split images (``real_train``), so a table shows the scale of each number.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pfbench import PfbenchError
from pfbench.data.embedded import NUM_CLASSES, EmbeddedBatch
from pfbench.types import quantize


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
