"""Look-ahead sampler (SPEC §5): easy patches jump ahead to give cleaner context; cost 2N − #warm.

Per step k (Δ = t_{k+1} − t_k), one call at t_k gives the guided v, the conditional v_c and the
difficulty map, hence the easy mask M. During warm-up (t_k ≤ t_warm) the step is ``x += Δ·v_c``.
Otherwise the easy patches are moved to t_ctx = min(r·t_k, 1) with v_c (a look-ahead copy of the
state; per-token time t_ctx on M, t_k elsewhere), a second call at that state gives v_ctx, and the
real update is ``x += Δ·(v⊙M + v_ctx⊙(1 − M))``. The look-ahead state is discarded.

The reference implementation jumps (and warms up) with the unguided v_c; ``guided_jump=True`` uses
the guided v instead. Without CFG both are the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from pfbench import PfbenchError
from pfbench.adapters.base import Adapter
from pfbench.samplers.base import (
    MaskedSampler,
    Meter,
    check_inputs,
    cond_velocity,
    full_time,
    time_grid,
    to_pixels,
)
from pfbench.types import Cond, SampleOut


@dataclass(frozen=True)
class LookAhead(MaskedSampler):
    """Difficulty-aware look-ahead sampler.

    Attributes:
        steps: N.
        p: fraction of patches marked easy.
        r: look-ahead ratio, t_ctx = min(r·t_k, 1); r = 1 makes it Euler at twice the cost.
        t_warm: steps with t_k ≤ t_warm are plain (one-call) steps with the jump velocity.
        guided_jump: jump and warm up with the guided v instead of the conditional v_c.
        shift: SD3-style time shift of the grid (1 = uniform).

    The mask comes from ``MaskedSampler.easy_mask``; the random ablation and tests override that one method.
    """

    r: float = 1.4
    t_warm: float = 0.05
    guided_jump: bool = False
    shift: float = 1.0
    name: ClassVar[str] = "look_ahead"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.r >= 1.0:
            raise PfbenchError(
                f"sampler {self.name!r}: r must be >= 1 (a look-ahead, not a look-back), got {self.r}"
            )

    def warm_steps(self, steps: int) -> int:
        """How many of the first ``steps`` grid times are ≤ t_warm (one call each)."""
        grid = time_grid(steps, self.shift)[:-1]
        return int((grid <= self.t_warm).sum())

    def cost(self, steps: int) -> int:
        return 2 * steps - self.warm_steps(steps)

    @torch.no_grad()
    def __call__(self, model: Adapter, noise: Tensor, cond: Cond, keys: Tensor | None = None) -> SampleOut:
        """Integrates from noise (B, C, H, W) at t = 0 to t = 1."""
        check_inputs(model, noise, cond, self)
        meter = Meter(model)
        grid = time_grid(self.steps, self.shift).tolist()
        p = model.patch_size
        _, _, h, w = noise.shape
        x = noise
        for k in range(self.steps):
            t0, dt = grid[k], grid[k + 1] - grid[k]
            out = meter(x, full_time(x, p, t0), cond)
            v_jump = out.v if self.guided_jump else cond_velocity(out)  # (B, C, H, W)
            if t0 <= self.t_warm:
                x = x + dt * v_jump
                continue
            easy = self.easy_mask(out, keys, k, p)  # (B, T)
            easy_px = to_pixels(easy, p, h, w)  # (B, 1, H, W)
            t_ctx = min(self.r * t0, 1.0)
            x_ctx = torch.where(easy_px, x + (t_ctx - t0) * v_jump, x)  # look-ahead copy
            t = torch.where(easy, t_ctx, t0).float()  # (B, T)
            v_ctx = meter(x_ctx, t, cond).v
            x = x + dt * torch.where(easy_px, out.v, v_ctx)
        return meter.result(x)
