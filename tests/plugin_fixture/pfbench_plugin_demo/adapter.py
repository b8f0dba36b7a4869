"""``demo_flow``: the exact flow toward a class-dependent image, behind pfbench's ``Adapter`` protocol.

With x_t = t·x1 + (1 − t)·x0 (t = 0 noise, t = 1 data) and all data of class y at the image μ_y, the exact
velocity is v = (μ_y − x_t) / (1 − t), per pixel with the pixel's own patch time. The logvar is
log((μ_y − x_t)² + ε) averaged over channels: patches still far from their target are "hard".
"""

from __future__ import annotations

import torch
from torch import Tensor

from pfbench.types import Cond, ModelOut


class DemoFlow:
    """Analytic class-conditional flow on (3, 16, 16) images with 2×2 patches.

    Args:
        num_classes: classes 0..num_classes−1 (index num_classes is the null class: a grey image).
        floor: smallest 1 − t the velocity divides by (keeps the last step finite).
        weights: optional ``torch.save``d (num_classes,) tensor of class brightness levels (the model's "weights":
            pfbench hashes the file a params value names into the model id).
    """

    def __init__(self, num_classes: int = 10, floor: float = 1e-3, weights: str | None = None) -> None:
        self.patch_size = 2
        self.num_classes = num_classes
        self.has_difficulty = True
        self.input_shape = (3, 16, 16)
        self.floor = floor
        levels = torch.linspace(-0.8, 0.8, num_classes) if weights is None else torch.load(weights).float()
        level = torch.cat([levels, torch.zeros(1)])  # (K + 1,) brightness
        ramp = torch.linspace(-0.2, 0.2, 16)  # (H,): a vertical gradient
        targets = level[:, None, None, None] + ramp[None, None, :, None]  # (K + 1, 1, H, 1)
        self.targets = targets.expand(num_classes + 1, 3, 16, 16).contiguous()  # (K + 1, C, H, W)

    def __call__(self, x: Tensor, t: Tensor, cond: Cond) -> ModelOut:
        """x (B, 3, 16, 16), t (B, 64) -> v (B, 3, 16, 16), logvar (B, 1, 16, 16)."""
        b = x.shape[0]
        side = 16 // self.patch_size
        tp = t.reshape(b, 1, side, side).repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)  # (B, 1, H, W)
        gap = self.targets.to(x.device)[cond.y] - x  # (B, C, H, W)
        v = gap / (1.0 - tp).clamp(min=self.floor)
        logvar = (gap.square().mean(dim=1, keepdim=True) + 1e-4).log()  # (B, 1, H, W)
        return ModelOut(v.float(), logvar.float())

    def forwards_per_call(self, t: Tensor) -> int:
        """One evaluation per call."""
        return 1

    def gflops(self, t: Tensor) -> float:
        """A nominal cost: about ten operations per value of a (3, 16, 16) image."""
        return 10 * 3 * 16 * 16 / 1e9
