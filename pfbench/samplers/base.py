"""Shared sampler machinery (docs/protocol.md §6): time grids, budget → steps, call accounting,
the masked-sampler bases (masks themselves: ``pfbench.samplers.masks``).

Every sampler is a frozen dataclass with ``steps`` and is a pure function of
``(model, noise, cond, keys)``: it keeps no state between calls. Compute is counted by a ``Meter`` that
wraps each model call of one invocation, so the reported NFE is the number of calls actually made.

Accounting conventions:
- ``nfe``: model calls (a CFG pair on the doubled batch is one call).
- ``forwards``: per-sample network passes, the sum of ``model.forwards_per_call(t)`` over calls (2 for
  a guided CFG pair).
- ``gflops``: per sample, the sum of ``model.gflops(t)`` over calls; the CFG wrapper's ``gflops``
  already includes its unconditional pass.
Samplers see the model only through the ``Adapter`` protocol (``pfbench.adapters.base``).

A sampler is built from its parameters and an NFE budget in one step, ``Sampler.from_budget(params, nfe)``
(the suite calls it once per sampler and budget), or at a fixed outer step count, ``Sampler.from_steps(params,
steps)`` (the reference scripts' convention: t_k = k/N, and dual-loop then makes N·n_inner calls).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

import torch
from torch import Tensor

from pfbench import PfbenchError
from pfbench.adapters.base import Adapter
from pfbench.samplers.masks import (
    difficulty_mask,
    patch_difficulty,
    random_mask,
    require_keys,
    require_logvar,
)
from pfbench.types import Cond, ModelOut, SampleOut

S = TypeVar("S", bound="StepSampler")


@runtime_checkable
class Sampler(Protocol):
    """What the sample stage sees (ARCHITECTURE.md contract); config = ``dataclasses.asdict(sampler)``."""

    @property
    def steps(self) -> int:
        """Outer step count N."""
        ...

    def cost(self, steps: int) -> int:
        """NFE spent by ``steps`` steps."""
        ...

    def with_budget(self, nfe: int) -> Sampler:
        """The same sampler with the largest step count whose cost fits ``nfe``."""
        ...

    @classmethod
    def from_budget(cls, params: Mapping[str, Any], nfe: int) -> Sampler:
        """Builds the sampler from its parameters at the largest step count whose cost fits ``nfe``."""
        ...

    @classmethod
    def from_steps(cls, params: Mapping[str, Any], steps: int) -> Sampler:
        """Builds the sampler from its parameters at ``steps`` outer steps (it then makes ``cost(steps)`` calls)."""
        ...

    def __call__(self, model: Adapter, noise: Tensor, cond: Cond, keys: Tensor | None = None) -> SampleOut:
        """Integrates from ``noise`` (t = 0) to data (t = 1)."""
        ...


# ----------------------------------------------------------------------------------------------------
# time grid


def time_grid(steps: int, shift: float = 1.0) -> Tensor:
    """Time grid t_0 = 0 < ... < t_N = 1 in float64, (N + 1,).

    ``shift = 1`` is the uniform grid t_k = k/N. Otherwise the SD3 time shift is applied to the noise
    level σ = 1 − t (SD3's convention: σ = 1 is noise): σ' = shift·σ / (1 + (shift − 1)·σ). In our
    convention (t = 0 is noise) this is t' = t / (shift − (shift − 1)·t), so ``shift > 1`` spends more
    steps near the noise end, exactly as in SD3. The endpoints stay at 0 and 1.
    """
    if steps < 1:
        raise PfbenchError(f"time grid needs steps >= 1, got {steps}")
    if not shift > 0:
        raise PfbenchError(f"time shift must be > 0, got {shift}")
    t = torch.arange(steps + 1, dtype=torch.float64) / steps  # (N+1,)
    if shift != 1.0:
        t = t / (shift - (shift - 1.0) * t)
    t[0], t[-1] = 0.0, 1.0
    return t


def full_time(x: Tensor, patch: int, value: float) -> Tensor:
    """Per-token time (B, T) float32, every token at ``value``, for x (B, C, H, W)."""
    b, _, h, w = x.shape
    return torch.full((b, (h // patch) * (w // patch)), value, dtype=torch.float32, device=x.device)


def to_pixels(tokens: Tensor, patch: int, height: int, width: int) -> Tensor:
    """Per-token values (B, T) -> per-pixel (B, 1, H, W), row-major token order (DiT's patchify)."""
    b = tokens.shape[0]
    grid = tokens.reshape(b, 1, height // patch, width // patch)  # (B, 1, H/p, W/p)
    return grid.repeat_interleave(patch, dim=2).repeat_interleave(patch, dim=3)  # (B, 1, H, W)


# ----------------------------------------------------------------------------------------------------
# accounting and the step-count base class


class Meter:
    """Counts the calls of one sampler invocation; local to that invocation (no hidden state)."""

    def __init__(self, model: Adapter) -> None:
        self.model = model
        self.nfe = 0
        self.forwards = 0
        self.gflops = 0.0

    def __call__(self, x: Tensor, t: Tensor, cond: Cond) -> ModelOut:
        out = self.model(x, t, cond)
        self.nfe += 1
        self.forwards += int(self.model.forwards_per_call(t))
        self.gflops += float(self.model.gflops(t))
        return out

    def result(self, x: Tensor) -> SampleOut:
        return SampleOut(x=x, nfe=self.nfe, forwards=self.forwards, gflops=self.gflops)


@dataclass(frozen=True)
class StepSampler:
    """Base of the step-count samplers: validation, ``cost`` and ``with_budget``.

    Attributes:
        steps: outer steps N.
    """

    steps: int
    name: ClassVar[str] = "step"
    min_steps: ClassVar[int] = 1
    # Bumped when a sampler's output changes for the same parameters (a fix), so that result cells
    # computed by the old code are not reused: it is part of the cell key when > 1.
    revision: ClassVar[int] = 1

    def __post_init__(self) -> None:
        # steps >= 1 is accepted even where min_steps is larger, so callers may build a placeholder
        # (``cls(steps=1, ...)``) and then call ``with_budget``; running below min_steps is an error.
        if not isinstance(self.steps, int) or self.steps < 1:
            raise PfbenchError(f"sampler {self.name!r}: steps must be an int >= 1, got {self.steps!r}")
        shift = getattr(self, "shift", 1.0)
        if not shift > 0:
            raise PfbenchError(f"sampler {self.name!r}: shift must be > 0, got {shift}")

    def cost(self, steps: int) -> int:
        """NFE for ``steps`` steps (one call per step unless a subclass says otherwise)."""
        return steps

    @classmethod
    def from_budget(cls: type[S], params: Mapping[str, Any], nfe: int) -> S:
        """The sampler with ``params`` (every field but ``steps``) at the largest step count whose cost fits.

        Args:
            params: the sampler's parameters, e.g. ``{"p": 0.4}`` (a suite's ``SamplerSpec.params``).
            nfe: model calls per sample the run may spend.

        Raises:
            PfbenchError: unknown or bad parameters, ``steps`` given (it follows from ``nfe``), or a budget
                below the smallest run.
        """
        if "steps" in params:
            raise PfbenchError(f"sampler {cls.name!r}: steps follows from the NFE budget; do not pass it")
        try:
            base = cls(steps=1, **params)  # steps=1 is a placeholder; with_budget picks the real count
        except TypeError as err:
            raise PfbenchError(f"sampler {cls.name!r}: bad parameters {dict(params)}: {err}") from None
        return base.with_budget(nfe)

    @classmethod
    def from_steps(cls: type[S], params: Mapping[str, Any], steps: int) -> S:
        """The sampler with ``params`` (every field but ``steps``) at ``steps`` outer steps.

        Raises:
            PfbenchError: unknown or bad parameters, ``steps`` given twice, or fewer steps than ``min_steps``.
        """
        if "steps" in params:
            raise PfbenchError(f"sampler {cls.name!r}: steps is given separately; do not pass it in the parameters")
        try:
            sampler = cls(steps=steps, **params)
        except TypeError as err:
            raise PfbenchError(f"sampler {cls.name!r}: bad parameters {dict(params)}: {err}") from None
        if steps < cls.min_steps:
            raise PfbenchError(f"sampler {cls.name!r} needs steps >= {cls.min_steps}, got {steps}")
        return sampler

    def with_budget(self: S, nfe: int) -> S:
        """The largest step count whose cost ≤ ``nfe``; raises if not even ``min_steps`` fits."""
        fits = [n for n in range(self.min_steps, max(nfe, 0) + 1) if self.cost(n) <= nfe]
        if not fits:
            raise PfbenchError(
                f"sampler {self.name!r} needs {self.cost(self.min_steps)} NFE for its smallest run "
                f"({self.min_steps} step(s)) but the budget is {nfe}; raise the suite's nfe budget"
            )
        return dataclasses.replace(self, steps=max(fits))


def check_inputs(model: Adapter, noise: Tensor, cond: Cond, sampler: StepSampler | None = None) -> None:
    """Checks shared by all samplers: shapes, and the step count against ``sampler.min_steps``."""
    if sampler is not None and sampler.steps < sampler.min_steps:
        raise PfbenchError(
            f"sampler {sampler.name!r} needs steps >= {sampler.min_steps}, got {sampler.steps}; "
            "use with_budget() or a larger step count"
        )
    if noise.dim() != 4:
        raise PfbenchError(f"noise must be (B, C, H, W), got shape {tuple(noise.shape)}")
    if cond.y.shape != (noise.shape[0],):
        raise PfbenchError(f"labels of shape {tuple(cond.y.shape)} do not match batch {noise.shape[0]}")
    p = model.patch_size
    if noise.shape[2] % p or noise.shape[3] % p:
        raise PfbenchError(f"image size {tuple(noise.shape[2:])} is not a multiple of the patch size {p}")


# ----------------------------------------------------------------------------------------------------
# easy-mask samplers (dual_loop, look_ahead) and their random-mask ablations


@dataclass(frozen=True)
class MaskedSampler(StepSampler):
    """Base of the samplers that split the patches with an easy mask M each (outer) step.

    Attributes:
        steps: outer steps N.
        p: fraction of patches marked easy (the lowest-difficulty fraction p, docs/protocol.md §6).

    The mask comes from ``easy_mask``; the random ablation (``RandomMask``) and tests override that one
    method.
    """

    p: float = 0.4
    # 2: the easy-mask quantile is taken over the pixel-resolution map (docs/protocol.md §6), and look-ahead's
    # warm-up test is strict (t_k < t_warm).
    revision: ClassVar[int] = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.p <= 1.0:
            raise PfbenchError(f"sampler {self.name!r}: p must be in [0, 1], got {self.p}")

    def easy_mask(self, out: ModelOut, keys: Tensor | None, step: int, patch: int) -> Tensor:
        """Easy mask (B, T) bool of (outer) step ``step`` from its first call's (guided) logvar."""
        return difficulty_mask(patch_difficulty(require_logvar(out, self.name), patch), self.p, patch)


@dataclass(frozen=True)
class RandomMask(MaskedSampler):
    """Mixin of the ``random`` ablations: the easy set is drawn uniformly at random each (outer) step.

    Listed first in the bases (``class DualLoopRandom(RandomMask, DualLoop)``) so its ``easy_mask``
    wins. The mask has ``easy_count(T, p, patch)`` patches (the difficulty mask's size for distinct
    values); sample i's mask at step k depends only on (keys[i], k), salted with the sampler's name. The
    difficulty head is not used.
    """

    def easy_mask(self, out: ModelOut, keys: Tensor | None, step: int, patch: int) -> Tensor:
        """Uniformly random easy mask (B, T) bool; ``keys`` (B,) are required."""
        b, _, h, w = out.v.shape
        tokens = (h // patch) * (w // patch)
        ints = require_keys(keys, b, self.name)
        return random_mask(ints, step, tokens, self.p, patch, self.name, out.v.device)
