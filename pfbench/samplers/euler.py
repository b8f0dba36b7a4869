"""Euler ODE sampler (docs/protocol.md §6): ``x += Δ·v`` on a (optionally time-shifted) grid; cost N."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from pfbench.adapters.base import Adapter
from pfbench.samplers.base import Meter, StepSampler, check_inputs, full_time, time_grid
from pfbench.types import Cond, SampleOut


@dataclass(frozen=True)
class Euler(StepSampler):
    """First-order Euler with every token at the same time t_k (works for global-t and PF models).

    Attributes:
        steps: N; calls at t_0..t_{N−1}.
        shift: SD3-style time shift of the grid (1 = uniform t_k = k/N; see ``time_grid``).
    """

    shift: float = 1.0
    name: ClassVar[str] = "euler"

    @torch.no_grad()
    def __call__(self, model: Adapter, noise: Tensor, cond: Cond, keys: Tensor | None = None) -> SampleOut:
        """Integrates dx/dt = v from t = 0 (noise, (B, C, H, W)) to t = 1; ``keys`` are unused."""
        check_inputs(model, noise, cond, self)
        meter = Meter(model)
        grid = time_grid(self.steps, self.shift).tolist()
        x = noise
        for k in range(self.steps):
            out = meter(x, full_time(x, model.patch_size, grid[k]), cond)
            x = x + (grid[k + 1] - grid[k]) * out.v  # (B, C, H, W)
        return meter.result(x)
