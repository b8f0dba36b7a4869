"""Dual-loop sampler (docs/protocol.md §6): easy patches take one big step, hard patches n small ones; cost N·n.

Per outer step k (Δ = t_{k+1} − t_k): one call at t_k gives v and the difficulty map, hence the easy
mask M. Easy patches jump straight to t_{k+1} (``x += Δ·v``), hard patches move by Δ/n. Then n − 1
inner calls move only the hard patches by Δ/n each while the easy patches wait at t_{k+1} as cleaner
context; all patches meet at t_{k+1}.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from pfbench import PfbenchError
from pfbench.adapters.base import Adapter
from pfbench.samplers.base import MaskedSampler, Meter, check_inputs, full_time, time_grid, to_pixels
from pfbench.types import Cond, SampleOut


@dataclass(frozen=True)
class DualLoop(MaskedSampler):
    """Difficulty-aware dual-loop sampler.

    Attributes:
        steps: outer steps N.
        p: fraction of patches marked easy (the lowest-difficulty fraction p, docs/protocol.md §6).
        n_inner: inner steps n per outer step for the hard patches.
        shift: SD3-style time shift of the outer grid (1 = uniform).

    The mask comes from ``MaskedSampler.easy_mask``; the random ablation and tests override that one method.
    """

    n_inner: int = 4
    shift: float = 1.0
    name: ClassVar[str] = "dual_loop"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.n_inner, int) or self.n_inner < 1:
            raise PfbenchError(f"sampler {self.name!r}: n_inner must be an int >= 1, got {self.n_inner!r}")

    def cost(self, steps: int) -> int:
        return steps * self.n_inner

    @torch.no_grad()
    def __call__(self, model: Adapter, noise: Tensor, cond: Cond, keys: Tensor | None = None) -> SampleOut:
        """Integrates from noise (B, C, H, W) at t = 0 to t = 1."""
        check_inputs(model, noise, cond, self)
        meter = Meter(model)
        grid = time_grid(self.steps, self.shift).tolist()
        p, n = model.patch_size, self.n_inner
        _, _, h, w = noise.shape
        x = noise
        for k in range(self.steps):
            t0, t1 = grid[k], grid[k + 1]
            sub = [t0 + (t1 - t0) * j / n for j in range(n)] + [t1]  # hard patches' fine grid, n + 1 points
            out = meter(x, full_time(x, p, t0), cond)
            easy = self.easy_mask(out, keys, k, p)  # (B, T)
            easy_px = to_pixels(easy, p, h, w)  # (B, 1, H, W)
            x = x + torch.where(easy_px, (t1 - t0) * out.v, (sub[1] - sub[0]) * out.v)
            for j in range(1, n):
                t = torch.where(easy, t1, sub[j]).float()  # (B, T): easy wait at t1, hard at sub[j]
                v = meter(x, t, cond).v
                x = x + torch.where(easy_px, torch.zeros_like(v), (sub[j + 1] - sub[j]) * v)
        return meter.result(x)
