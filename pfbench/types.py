"""Plain data that crosses stage boundaries (SPEC §5 model call contract)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass(frozen=True)
class Cond:
    """Conditioning for one batch.

    Attributes:
        y: class labels, (B,) int64; the null class is index ``num_classes``.
        text: optional captions (text-to-image path; unused by class-conditional models).
    """

    y: Tensor
    text: tuple[str, ...] | None = None


@dataclass(frozen=True)
class ModelOut:
    """What a model call returns: velocity (B, C, H, W) and optional logvar (B, 1, H, W)."""

    v: Tensor
    logvar: Tensor | None = None


@dataclass(frozen=True)
class SampleOut:
    """Result of one sampler call on a batch.

    Attributes:
        x: final state in model space, (B, C, H, W) float32.
        nfe: model calls made (a CFG pair counts once).
        forwards: per-sample network passes per sample (a CFG pair counts twice).
        gflops: analytic forward GFLOPs per sample, summed over calls.
    """

    x: Tensor
    nfe: int
    forwards: int
    gflops: float
