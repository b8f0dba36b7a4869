"""Classifier-free guidance as an adapter wrapper (docs/protocol.md §6), never inside the network.

One call runs the wrapped model once on the doubled batch (conditional rows first, then the same rows
with the null class) and returns ``v = v_u + w·(v_c − v_u)`` on **all** channels, with the logvar
guided the same way. The conditional velocity is returned as well (``ModelOut.v_cond``) because
look-ahead jumps with the unguided velocity.

Guidance interval: a sample is guided when its *per-sample time* τ lies in the closed interval
[t_lo, t_hi]; outside it w = 1, i.e. the plain conditional output. τ is the minimum over the sample's
tokens: the time of its least-denoised patches, which for every pfbench sampler is the time of the
patches being integrated (t_k for the first call of a step, the hard patches' time in dual-loop's
inner calls, t_k in look-ahead's second call).

Compute: a call where no sample of the batch is guided (scale 1, or every τ outside the interval)
runs the model once, undoubled; otherwise the doubled batch runs for every sample, so
``forwards_per_call`` and ``gflops`` are twice the wrapped model's. This is the one place the CFG ×2
cost rule lives: the samplers' ``Meter`` and the suite's cost estimates both ask these two methods.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from pfbench import FieldError
from pfbench.adapters.base import Adapter, AdapterWrapper
from pfbench.types import Cond, ModelOut


def check_interval(interval: Sequence[float] | None) -> None:
    """A guidance interval is None or [t_lo, t_hi] with 0 <= t_lo <= t_hi <= 1 (checked once: CFG and a suite's
    ``sweep.cfg_interval``)."""
    if interval is not None and (len(interval) != 2 or not 0.0 <= interval[0] <= interval[1] <= 1.0):
        raise FieldError("", f"{list(interval)} must be [t_lo, t_hi] with 0 <= t_lo <= t_hi <= 1")


class CFG(AdapterWrapper):
    """Wraps any adapter with classifier-free guidance.

    Args:
        model: the adapter to guide; its null class is index ``num_classes``.
        scale: guidance weight w (1 = no guidance, one forward per call; 0 = unconditional).
        interval: optional closed interval (t_lo, t_hi) of per-sample time where w applies; w = 1
            outside. None guides at every time.
    """

    def __init__(self, model: Adapter, scale: float, interval: tuple[float, float] | None = None) -> None:
        check_interval(interval)
        super().__init__(model)
        self.scale = float(scale)
        self.interval = None if interval is None else (float(interval[0]), float(interval[1]))

    def guided_rows(self, t: Tensor) -> Tensor:
        """Which samples are guided at per-token time t (B, T): (B,) bool."""
        if self.scale == 1.0:
            return torch.zeros(t.shape[0], dtype=torch.bool, device=t.device)
        if self.interval is None:
            return torch.ones(t.shape[0], dtype=torch.bool, device=t.device)
        tau = t.amin(dim=1)  # (B,) time of each sample's least-denoised patches
        lo, hi = self.interval
        return (tau >= lo) & (tau <= hi)

    def passes(self, t: Tensor) -> int:
        """How often the wrapped model's cost is paid by one call at t (B, T): 2 when the doubled batch runs."""
        return 2 if bool(self.guided_rows(t).any()) else 1

    def forwards_per_call(self, t: Tensor) -> int:
        """Network passes per sample of one call at t: the wrapped model's, doubled when guidance is on."""
        return int(self.model.forwards_per_call(t)) * self.passes(t)

    def gflops(self, t: Tensor) -> float:
        """GFLOPs per sample of one call, the unconditional pass included."""
        return float(self.model.gflops(t)) * self.passes(t)

    def null_cond(self, cond: Cond) -> Cond:
        """The unconditional counterpart: null class label (and empty captions for text models)."""
        y = torch.full_like(cond.y, self.num_classes)
        text = None if cond.text is None else tuple("" for _ in cond.text)
        return Cond(y=y, text=text)

    @torch.no_grad()
    def __call__(self, x: Tensor, t: Tensor, cond: Cond) -> ModelOut:
        """Guided v and logvar (B, C, H, W), (B, 1, H, W) | None, plus the conditional v as ``v_cond``."""
        rows = self.guided_rows(t)  # (B,)
        if not bool(rows.any()):
            out = self.model(x, t, cond)  # one undoubled pass: exactly the unguided model (v_cond = v)
            return ModelOut(v=out.v, logvar=out.logvar)
        null = self.null_cond(cond)
        text = None if cond.text is None else cond.text + (null.text or ())
        both = self.model(torch.cat([x, x]), torch.cat([t, t]), Cond(torch.cat([cond.y, null.y]), text))
        v_c, v_u = both.v.chunk(2)  # (B, C, H, W) each
        sel = rows[:, None, None, None]  # (B, 1, 1, 1)
        v = torch.where(sel, v_u + self.scale * (v_c - v_u), v_c)
        logvar = None
        if both.logvar is not None:
            logvar_c, logvar_u = both.logvar.chunk(2)  # (B, 1, H, W) each
            logvar = torch.where(sel, logvar_u + self.scale * (logvar_c - logvar_u), logvar_c)
        return ModelOut(v=v, logvar=logvar, v_cond=v_c)
