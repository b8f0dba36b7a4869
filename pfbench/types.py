"""Plain data that crosses stage boundaries (the model call: docs/protocol.md §6) and the one float → uint8 rule."""

from __future__ import annotations

from dataclasses import dataclass

import torch
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
    """What a model call returns.

    Attributes:
        v: velocity, (B, C, H, W); under guidance the guided one.
        logvar: optional difficulty map, (B, 1, H, W).
        v_cond: the conditional (unguided) velocity, (B, C, H, W), when it differs from ``v`` (a guided
            call); None means "same as v". Look-ahead jumps with it, so a guidance wrapper returns it
            here and samplers never need to know which adapter they were given.
    """

    v: Tensor
    logvar: Tensor | None = None
    v_cond: Tensor | None = None

    def cond_velocity(self) -> Tensor:
        """The conditional (unguided) velocity (B, C, H, W): ``v_cond`` if set, else ``v``."""
        return self.v if self.v_cond is None else self.v_cond


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


def quantize(x: Tensor) -> Tensor:
    """Model-space float images in [-1, 1] → uint8 via ``clamp(round(127.5·x + 127.5), 0, 255)`` (docs/protocol.md §8).

    The one place pfbench turns float images into the uint8 images that are saved, shown and scored.
    """
    return (x.float() * 127.5 + 127.5).round().clamp(0, 255).to(torch.uint8)
