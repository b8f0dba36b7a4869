"""Heun's second-order ODE sampler with an Euler last step (docs/protocol.md §6); cost 2N − 1."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from pfbench.adapters.base import Adapter
from pfbench.samplers.base import Meter, check_inputs, full_time, time_grid
from pfbench.samplers.euler import Euler
from pfbench.types import Cond, SampleOut


@dataclass(frozen=True)
class Heun(Euler):
    """Heun (explicit trapezoid): predictor ``x + Δ·v(x, t_k)``, corrector with v at t_{k+1}.

    The last step is a plain Euler step (no evaluation at t = 1), as in EDM's sampler.

    Attributes:
        steps: N.
        shift: SD3-style time shift (1 = uniform grid).
    """

    name: ClassVar[str] = "heun"

    def cost(self, steps: int) -> int:
        return 2 * steps - 1

    @torch.no_grad()
    def __call__(self, model: Adapter, noise: Tensor, cond: Cond, keys: Tensor | None = None) -> SampleOut:
        """Integrates from noise (B, C, H, W) at t = 0 to t = 1; ``keys`` are unused."""
        check_inputs(model, noise, cond, self)
        meter = Meter(model)
        grid = time_grid(self.steps, self.shift).tolist()
        p = model.patch_size
        x = noise
        for k in range(self.steps):
            dt = grid[k + 1] - grid[k]
            v1 = meter(x, full_time(x, p, grid[k]), cond).v  # (B, C, H, W)
            if k == self.steps - 1:
                x = x + dt * v1
                break
            v2 = meter(x + dt * v1, full_time(x, p, grid[k + 1]), cond).v
            x = x + (0.5 * dt) * (v1 + v2)
        return meter.result(x)
