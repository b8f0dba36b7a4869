"""Look-ahead sampler (docs/protocol.md §6): easy patches jump ahead to give cleaner context; cost 2N − #warm.

Per step k (Δ = t_{k+1} − t_k), one call at t_k gives the guided v, the conditional v_c and the
difficulty map, hence the easy mask M. During warm-up (t_k < t_warm) the step is ``x += Δ·v_c``.
Otherwise the easy patches are moved to t_ctx = min(r·t_k, 1) with v_c (a look-ahead copy of the
state; per-token time t_ctx on M, t_k elsewhere), a second call at that state gives v_ctx, and the
real update is ``x += Δ·(v⊙M + v_ctx⊙(1 − M))``. The look-ahead state is discarded.

The reference implementation jumps (and warms up) with the unguided v_c; ``guided_jump=True`` uses
the guided v instead. Without CFG both are the same.

Warm-up test (docs/protocol.md §6): strict ``t_k < t_warm`` on the float64 grid, so a step at exactly t_warm
(k = 1 of N = 20, k = 5 of N = 100) is a look-ahead step and N = 20 costs 39. The reference tests
``mean over tokens of t_k <= 0.05`` on its float32 schedule ``linspace(0, 1, N + 1)`` broadcast over
the tokens (a stride-0 view on CPU). At an exact tie that float32 mean rounds above 0.05 on CPU, so its
test picks the same steps as this one for every N ≤ 1000 at 64, 256 and 1024 tokens (not at 16 tokens,
where the mean stays exact and most ties are warm). The rounding of the CUDA mean (the reference samples
on GPU, where the schedule is a contiguous copy) has not been measured.
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
class LookAhead(MaskedSampler):
    """Difficulty-aware look-ahead sampler.

    Attributes:
        steps: N.
        p: fraction of patches marked easy.
        r: look-ahead ratio, t_ctx = min(r·t_k, 1); r = 1 makes it Euler at twice the cost.
        t_warm: steps with t_k < t_warm (strict, see the module docstring) are plain one-call steps
            with the jump velocity.
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

    def warm(self, steps: int) -> list[bool]:
        """Per step k < ``steps``: is it a warm (one-call) step, t_k < t_warm (strict, float64 grid)?"""
        return (time_grid(steps, self.shift)[:-1] < self.t_warm).tolist()

    def warm_steps(self, steps: int) -> int:
        """How many of the ``steps`` steps are warm (one call each)."""
        return sum(self.warm(steps))

    def cost(self, steps: int) -> int:
        return 2 * steps - self.warm_steps(steps)

    @torch.no_grad()
    def __call__(self, model: Adapter, noise: Tensor, cond: Cond, keys: Tensor | None = None) -> SampleOut:
        """Integrates from noise (B, C, H, W) at t = 0 to t = 1."""
        check_inputs(model, noise, cond, self)
        meter = Meter(model)
        grid = time_grid(self.steps, self.shift).tolist()
        warm = self.warm(self.steps)
        p = model.patch_size
        _, _, h, w = noise.shape
        x = noise
        for k in range(self.steps):
            t0, dt = grid[k], grid[k + 1] - grid[k]
            out = meter(x, full_time(x, p, t0), cond)
            v_jump = out.v if self.guided_jump else out.cond_velocity()  # (B, C, H, W)
            if warm[k]:
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
