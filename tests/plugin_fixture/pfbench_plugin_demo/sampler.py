"""``ralston``: Ralston's second-order Runge–Kutta method (cost 2N) on pfbench's public sampler API."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from pfbench.adapters.base import Adapter
from pfbench.samplers.base import Meter, StepSampler, check_inputs, full_time, time_grid
from pfbench.types import Cond, SampleOut


@dataclass(frozen=True)
class Ralston(StepSampler):
    """k1 = v(x, t_k), k2 = v(x + ⅔Δ·k1, t_k + ⅔Δ), x += Δ·(¼k1 + ¾k2).

    Attributes:
        steps: N (two calls each).
    """

    name: ClassVar[str] = "ralston"

    def cost(self, steps: int) -> int:
        return 2 * steps

    @torch.no_grad()
    def __call__(self, model: Adapter, noise: Tensor, cond: Cond, keys: Tensor | None = None) -> SampleOut:
        """Integrates from noise (B, C, H, W) at t = 0 to t = 1; ``keys`` are unused."""
        check_inputs(model, noise, cond, self)
        meter = Meter(model)
        grid = time_grid(self.steps).tolist()
        p = model.patch_size
        x = noise
        for k in range(self.steps):
            dt = grid[k + 1] - grid[k]
            k1 = meter(x, full_time(x, p, grid[k]), cond).v
            k2 = meter(x + (2 / 3 * dt) * k1, full_time(x, p, grid[k] + 2 / 3 * dt), cond).v
            x = x + dt * (0.25 * k1 + 0.75 * k2)
        return meter.result(x)
