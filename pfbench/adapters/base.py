"""What every model looks like to a sampler (STYLE.md contract)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor

from pfbench.types import Cond, ModelOut


@runtime_checkable
class Adapter(Protocol):
    """A velocity model called with per-token timesteps.

    Attributes:
        patch_size: p; timesteps are per p×p patch.
        num_classes: labels are in [0, num_classes); index num_classes is the null class.
        has_difficulty: whether calls return a logvar map.
    """

    patch_size: int
    num_classes: int
    has_difficulty: bool

    def __call__(self, x: Tensor, t: Tensor, cond: Cond) -> ModelOut:
        """x (B, C, H, W), t (B, T) float32 -> ModelOut(v (B, C, H, W), logvar (B, 1, H, W) | None)."""
        ...

    def gflops(self, t: Tensor) -> float:
        """Analytic GFLOPs per sample of one call at timesteps t (B, T), as executed."""
        ...
