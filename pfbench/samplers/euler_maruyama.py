"""Euler–Maruyama SDE sampler for the global-t baseline, matching SiT's own SDE sampler.

Source read (not copied): willisma/SiT ``transport/transport.py`` (``Sampler.sample_sde``,
``Transport.check_interval``, ``get_score``), ``transport/integrators.py`` (``sde``,
Euler–Maruyama step) and the ``ICPlan`` of ``transport/path.py`` (``compute_diffusion``,
``get_score_from_velocity``); defaults from SiT's ``train_utils.parse_sde_args``.

SiT's "Linear" path is x_t = t·x1 + (1 − t)·x0 with x0 the noise, i.e. our convention (t = 0 noise,
t = 1 data), so no time reversal is needed. With a velocity model v:
- score s(x, t) = (t·v − x) / (1 − t)   (ICPlan: α = t, σ = 1 − t, var = σ² + t·σ = 1 − t);
- diffusion w(t): "sigma" (SiT's default) and "linear" are both ``norm·(1 − t)`` on this path,
  "SBDM" is ``norm·(1 − t)/t`` (needs t_min > 0), "constant" is ``norm``;
- SDE drift f = v + w·s; Euler–Maruyama: x̄ = x + f·dt, x = x̄ + sqrt(2·w)·sqrt(dt)·ε;
- time range: N grid points linspace(t_min, 1 − h, N) (h = last_step_size = 0.04, t_min = 0 for a
  velocity model), N − 1 stochastic steps from the first N − 1 points, then one deterministic
  "Mean" last step x + f(x, 1 − h)·h to t = 1. NFE = N, as SiT's ``num_steps``.
ε is drawn from a per-sample generator seeded from the sample's key, so noise never depends on the batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from pfbench import PfbenchError
from pfbench.adapters.base import Adapter
from pfbench.samplers.base import Meter, StepSampler, check_inputs, full_time
from pfbench.samplers.masks import require_keys, sample_generator
from pfbench.types import Cond, SampleOut

FORMS = ("sigma", "linear", "SBDM", "constant")


@dataclass(frozen=True)
class EulerMaruyama(StepSampler):
    """SiT's SDE sampler (Euler–Maruyama + mean last step) for velocity models.

    Attributes:
        steps: N ≥ 2 model calls (SiT's ``num_steps``; SiT's paper setting is 250).
        diffusion: diffusion coefficient form, one of ``FORMS`` (SiT default "sigma").
        norm: diffusion magnitude (SiT ``diffusion_norm``, default 1).
        last_step_size: h, size of the final deterministic step (SiT default 0.04).
        t_min: start time of the SDE grid (0 for velocity models; > 0 required by "SBDM").
    """

    diffusion: str = "sigma"
    norm: float = 1.0
    last_step_size: float = 0.04
    t_min: float = 0.0
    name: ClassVar[str] = "euler_maruyama"
    min_steps: ClassVar[int] = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.diffusion not in FORMS:
            raise PfbenchError(
                f"sampler {self.name!r}: diffusion {self.diffusion!r} unknown; use one of {FORMS}"
            )
        if not 0.0 < self.last_step_size < 1.0:
            raise PfbenchError(
                f"sampler {self.name!r}: last_step_size must be in (0, 1), got {self.last_step_size}"
            )
        if not 0.0 <= self.t_min < 1.0 - self.last_step_size:
            raise PfbenchError(
                f"sampler {self.name!r}: t_min must be in [0, 1 - last_step_size), got {self.t_min}"
            )
        if self.diffusion == "SBDM" and self.t_min == 0.0:
            raise PfbenchError(
                f"sampler {self.name!r}: the SBDM diffusion is infinite at t = 0; set t_min > 0"
            )

    def coefficient(self, t: float) -> float:
        """Diffusion coefficient w(t) of the chosen form."""
        if self.diffusion in ("sigma", "linear"):
            return self.norm * (1.0 - t)
        if self.diffusion == "SBDM":
            return self.norm * (1.0 - t) / t
        return self.norm

    def drift(self, v: Tensor, x: Tensor, t: float) -> Tensor:
        """SDE drift f = v + w(t)·s with the score s = (t·v − x)/(1 − t), (B, C, H, W)."""
        return v + self.coefficient(t) * (t * v - x) / (1.0 - t)

    @torch.no_grad()
    def __call__(self, model: Adapter, noise: Tensor, cond: Cond, keys: Tensor | None = None) -> SampleOut:
        """Integrates from noise (B, C, H, W) to t = 1; ``keys`` (B,) seed each sample's Brownian noise."""
        check_inputs(model, noise, cond, self)
        gens = [sample_generator(k, self.name) for k in require_keys(keys, noise.shape[0], self.name)]
        meter = Meter(model)
        t_end = 1.0 - self.last_step_size
        grid = torch.linspace(self.t_min, t_end, self.steps, dtype=torch.float64).tolist()
        dt = (t_end - self.t_min) / (self.steps - 1)
        p = model.patch_size
        x = noise
        eps = torch.empty(noise.shape, dtype=torch.float32)  # (B, C, H, W) on CPU, refilled every step
        for t in grid[:-1]:
            v = meter(x, full_time(x, p, t), cond).v
            for row, g in zip(eps, gens, strict=True):
                row.normal_(generator=g)  # the same stream as torch.randn(row.shape, generator=g)
            # x + drift·dt + sqrt(2w·dt)·ε with drift = v + w·(t·v − x)/(1 − t), folded into three
            # kernels: x·(1 − w·dt/(1 − t)) + v·dt·(1 + w·t/(1 − t)) + sqrt(2w·dt)·ε.
            w = self.coefficient(t)
            x = torch.add(x * (1.0 - w * dt / (1.0 - t)), v, alpha=dt * (1.0 + w * t / (1.0 - t)))
            x.add_(eps.to(x), alpha=math.sqrt(2.0 * w * dt))
        v = meter(x, full_time(x, p, t_end), cond).v
        x = x + self.drift(v, x, t_end) * self.last_step_size  # "Mean" last step: no noise
        return meter.result(x)
