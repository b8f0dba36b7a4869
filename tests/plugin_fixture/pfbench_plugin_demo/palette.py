"""``demo_palette``: a metric with its own feature network and weights file, added through entry points only.

The "demo_palette" feature network reads a palette, a (K, 3) float tensor of RGB colours in [0, 1] saved with
``torch.save``, from the file a suite gives it (``eval.weights: {demo_palette: palette.pt}``; ``pfbench eval
--weights demo_palette=palette.pt``), and maps each image to the share of its pixels nearest to each colour.
The metric ``demo_palette`` is the mean share of the palette's first colour.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from pfbench import PfbenchError
from pfbench.encoders.base import FeatureContext, check_images, takes_weights
from pfbench.types import Cond
from pfbench.weights import file_sha256


class PaletteNetwork:
    """uint8 images (B, 3, H, W) -> ``{"share": (B, K)}``: the share of pixels nearest to each palette colour."""

    keys: tuple[str, ...] = ("share",)

    def __init__(self, palette: Tensor, sha256: str) -> None:
        self.palette = palette.double()  # (K, 3)
        self.sha256 = sha256

    def fingerprint(self) -> dict[str, str]:
        return {"extractor": "demo_palette", "weights": self.sha256}

    def __call__(self, images: Tensor) -> dict[str, Tensor]:
        check_images(images, "demo_palette")
        b, k = images.shape[0], self.palette.shape[0]
        pixels = images.double().permute(0, 2, 3, 1).reshape(b, -1, 3) / 255.0  # (B, HW, 3)
        nearest = torch.cdist(pixels, self.palette.expand(b, k, 3)).argmin(-1)  # (B, HW)
        return {"share": F.one_hot(nearest, k).double().mean(1).float()}  # (B, K)


@takes_weights("demo-palette")  # the plugin's own weights key: the file must be set in eval.weights
def palette_network(ctx: FeatureContext) -> PaletteNetwork:
    """Registry builder ("demo_palette"): the palette file from ``ctx.weights["demo_palette"]``."""
    path = ctx.weights_file("demo_palette")
    palette = torch.load(path, weights_only=True)
    if not isinstance(palette, Tensor) or palette.ndim != 2 or palette.shape[1] != 3:
        raise PfbenchError(f"demo_palette weights {path}: expected a (K, 3) tensor of RGB colours")
    return PaletteNetwork(palette, file_sha256(path))


class DemoPalette:
    """Mean share of pixels nearest to the palette's first colour (float64 sums)."""

    name: ClassVar[str] = "demo_palette"
    higher_is_better: ClassVar[bool] = True
    features: ClassVar[str] = "demo_palette"
    needs: ClassVar[frozenset[str]] = frozenset()

    def __init__(self) -> None:
        self.total = 0.0
        self.count = 0

    def update(self, features: Any, cond: Cond) -> None:
        """Adds a batch of the network's output ``{"share": (B, K)}``."""
        share = features["share"]
        self.total += float(share[:, 0].double().sum())
        self.count += share.shape[0]

    def compute(self) -> dict[str, float]:
        """``{"demo_palette": mean share in [0, 1]}``."""
        return {self.name: self.total / max(self.count, 1)}
