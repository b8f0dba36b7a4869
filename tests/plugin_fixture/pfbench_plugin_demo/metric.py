"""``demo_brightness``: mean pixel value of the generated images in [0, 1] (needs no feature network)."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from pfbench.types import Cond


class DemoBrightness:
    """Mean brightness of uint8 images (B, 3, H, W), accumulated in float64.

    Args:
        resolution: image side the metric expects (given by the evaluator).
    """

    name: ClassVar[str] = "demo_brightness"
    higher_is_better: ClassVar[bool] = True
    features: ClassVar[str] = "images"
    needs: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, resolution: int) -> None:
        self.resolution = resolution
        self.total = 0.0
        self.count = 0

    def update(self, images: Tensor, cond: Cond) -> None:
        """Adds a batch of uint8 images (B, 3, resolution, resolution)."""
        if images.dtype != torch.uint8 or tuple(images.shape[1:]) != (3, self.resolution, self.resolution):
            raise ValueError(f"demo_brightness: expected uint8 (B, 3, {self.resolution}, {self.resolution}), "
                             f"got {images.dtype} {tuple(images.shape)}")
        self.total += float(images.double().sum()) / 255.0
        self.count += images[:, 0].numel() * 3

    def compute(self) -> dict[str, float]:
        """``{"demo_brightness": mean in [0, 1]}``."""
        return {self.name: self.total / max(self.count, 1)}
