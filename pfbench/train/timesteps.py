"""Training timestep samplers (docs/protocol.md §4): each draws a (B, T) float32 per-patch time in [0, 1].

Every sampler is a frozen dataclass whose fields are its parameters; calling it with
``(batch, tokens, generator)`` returns a CPU tensor that depends only on the parameters and the
generator state. Draws are always float32, also inside a bf16 autocast region (bf16 would
quantise t to ~1/256, docs/protocol.md §1).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any, ClassVar, Protocol, TypeVar

import numpy as np
import torch
from torch import Tensor

from pfbench import PfbenchError
from pfbench.registry import TIMESTEPS

F = TypeVar("F", bound=Callable[..., Any])


class TimestepSampler(Protocol):
    """What the trainer sees: a frozen dataclass that draws per-token training times."""

    name: ClassVar[str]

    def __call__(self, batch: int, tokens: int, generator: torch.Generator) -> Tensor: ...


def _float32_draw(fn: F) -> F:
    """Validates the call and runs ``fn`` with CPU autocast off, so every op stays float32."""

    @wraps(fn)
    def wrapper(self: Any, batch: int, tokens: int, generator: torch.Generator, *rest: Any) -> Tensor:
        if batch < 0 or tokens < 1:
            raise PfbenchError(
                f"{self.name}: got batch={batch}, tokens={tokens}; need batch >= 0 and tokens >= 1"
            )
        if generator.device.type != "cpu":
            raise PfbenchError(f"{self.name}: timesteps are drawn on CPU; pass a CPU torch.Generator")
        with torch.autocast("cpu", enabled=False):
            t = fn(self, batch, tokens, generator, *rest)
        return t.to(torch.float32)

    return wrapper  # type: ignore[return-value]


def _rand(shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
    return torch.rand(shape, generator=generator, dtype=torch.float32)


def _randn(shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
    return torch.randn(shape, generator=generator, dtype=torch.float32)


def _check(name: str, ok: bool, what: str) -> None:
    if not ok:
        raise PfbenchError(f"timestep sampler {name!r}: {what}")


def _fold_below(top: Tensor, std: float, tokens: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``t_i = top − σ|ε_i|`` with ``σ = min(top/2, std)``; a negative ``t_i`` is redrawn ~ U(0, top).

    Args:
        top: (B, 1) per-sample maximum time.
        std: cap on σ.
        tokens: T.
        generator: CPU generator; draws ε (B, T) then u (B, T) (u is drawn for every token so the
            stream does not depend on how many redraws happen).

    Returns:
        t (B, T) float32 with 0 <= t <= top, and the redraw mask (B, T) bool.
    """
    batch = top.shape[0]
    sigma = torch.clamp(top / 2, max=std)  # (B, 1)
    eps = _randn((batch, tokens), generator)  # (B, T)
    u = _rand((batch, tokens), generator)  # (B, T)
    folded = top - sigma * eps.abs()  # (B, T)
    redrawn = folded < 0
    t = torch.where(redrawn, u * top, folded)
    return t.clamp_(min=0.0), redrawn


@dataclass(frozen=True)
class GlobalUniform:
    """``t ~ U(0, 1)`` per sample, broadcast over tokens (the SiT baseline)."""

    name: ClassVar[str] = "global_uniform"

    @_float32_draw
    def __call__(self, batch: int, tokens: int, generator: torch.Generator) -> Tensor:
        return _rand((batch, 1), generator).expand(batch, tokens).contiguous()  # (B, T)


@dataclass(frozen=True)
class GlobalLogitNormal:
    """``t = sigmoid(m + s·ε)`` per sample, broadcast over tokens."""

    m: float = 0.0
    s: float = 1.0
    name: ClassVar[str] = "global_logit_normal"

    def __post_init__(self) -> None:
        _check(self.name, self.s >= 0, f"s={self.s} must be >= 0")

    @_float32_draw
    def __call__(self, batch: int, tokens: int, generator: torch.Generator) -> Tensor:
        t = torch.sigmoid(self.m + self.s * _randn((batch, 1), generator))  # (B, 1)
        return t.expand(batch, tokens).contiguous()


@dataclass(frozen=True)
class PatchUniform:
    """``t_i ~ U(0, 1)`` i.i.d. per token (naive baseline; the paper shows it hurts)."""

    name: ClassVar[str] = "patch_uniform"

    @_float32_draw
    def __call__(self, batch: int, tokens: int, generator: torch.Generator) -> Tensor:
        return _rand((batch, tokens), generator)


@dataclass(frozen=True)
class SRM:
    """SRM "uniform mean": a budget ``T·t̄`` split recursively by symmetric Beta draws.

    A group of ``d`` cells with budget ``L`` gives its first ``⌊d/2⌋`` cells
    ``L1 = lo + (hi − lo)·Beta(a, a)`` with ``a = (d − 1 − d mod 2)^1.05 · sharpness``,
    ``lo = max(0, L − ⌈d/2⌉)``, ``hi = min(L, ⌊d/2⌋)``, the rest ``L − L1``; a single cell's time
    is its budget. Each row is then randomly permuted. Row means equal ``t̄`` up to float error.
    The recursion runs over tree levels (≈ log2 T), vectorised over the batch and groups; Beta
    variates come from a numpy Generator seeded from ``generator`` so draws stay reproducible.
    """

    sharpness: float = 1.0
    name: ClassVar[str] = "srm"

    def __post_init__(self) -> None:
        _check(
            self.name, self.sharpness > 0, f"sharpness={self.sharpness} must be > 0 (Beta(a, a) needs a > 0)"
        )

    @_float32_draw
    def __call__(self, batch: int, tokens: int, generator: torch.Generator) -> Tensor:
        t = self.tree_order(batch, tokens, generator).clamp_(0.0, 1.0).float()  # (B, T)
        perm = torch.rand((batch, tokens), generator=generator).argsort(dim=1)  # (B, T) per-row shuffle
        return torch.gather(t, 1, perm)

    def tree_order(self, batch: int, tokens: int, generator: torch.Generator) -> Tensor:
        """The per-cell budgets before the final shuffle, in tree (leaf) order, float64.

        ``__call__`` draws exactly this (same generator stream) and then permutes each row; the
        first ``⌊T/2⌋`` columns hold the first split's share ``L1``. Exposed for tests.

        Returns:
            (B, T) float64; row sums equal ``T·t̄`` up to float error.
        """
        mean = _rand((batch, 1), generator).double()  # (B, 1) t̄
        seed = torch.randint(0, 2**62, (4,), generator=generator, dtype=torch.int64).tolist()
        rng = np.random.default_rng(np.random.SeedSequence(seed))
        budgets = (mean * tokens).numpy()  # (B, G=1), float64 so the budget sum stays exact
        sizes = np.array([tokens], dtype=np.int64)  # (G,) cells per group, same for every row
        while (sizes > 1).any():
            left = sizes // 2  # (G,) 0 for single cells, which pass their budget on unchanged
            split = sizes > 1
            d = sizes[split].astype(np.float64)
            a = (d - 1 - (sizes[split] % 2)) ** 1.05 * self.sharpness  # (G',) >= sharpness for d >= 2
            lo = np.maximum(0.0, budgets[:, split] - (sizes[split] - left[split]))  # (B, G')
            hi = np.minimum(budgets[:, split], left[split])  # (B, G')
            frac = rng.beta(a, a, size=lo.shape)  # (B, G')
            first = np.zeros_like(budgets)  # (B, G)
            first[:, split] = lo + (hi - lo) * frac
            children = np.stack([first, budgets - first], axis=2).reshape(batch, 2 * len(sizes))  # (B, 2G)
            child_sizes = np.stack([left, sizes - left], axis=1).reshape(-1)  # (2G,)
            keep = child_sizes > 0
            budgets, sizes = children[:, keep], child_sizes[keep]
        return torch.from_numpy(budgets)  # (B, T) leaf order


@dataclass(frozen=True)
class Gaussian:
    """``m ~ U(0,1)``, ``σ = min(min(m, 1−m)/2, std)``, ``t_i = clamp(m + σ·ε_i, 0, 1)``."""

    std: float = 0.2
    name: ClassVar[str] = "gaussian"

    def __post_init__(self) -> None:
        _check(self.name, self.std >= 0, f"std={self.std} must be >= 0")

    @_float32_draw
    def __call__(self, batch: int, tokens: int, generator: torch.Generator) -> Tensor:
        m = _rand((batch, 1), generator)  # (B, 1)
        sigma = torch.clamp(torch.minimum(m, 1 - m) / 2, max=self.std)  # (B, 1)
        return (m + sigma * _randn((batch, tokens), generator)).clamp_(0.0, 1.0)  # (B, T)


@dataclass(frozen=True)
class TruncatedGaussian:
    """``m ~ U(0,1)``, ``σ = min(m/2, std)``, ``t_i = m − σ|ε_i|``; ``t_i < 0`` is redrawn ~ U(0, m)."""

    std: float = 0.2
    name: ClassVar[str] = "truncated_gaussian"

    def __post_init__(self) -> None:
        _check(self.name, self.std >= 0, f"std={self.std} must be >= 0")

    @_float32_draw
    def __call__(self, batch: int, tokens: int, generator: torch.Generator) -> Tensor:
        m = _rand((batch, 1), generator)  # (B, 1)
        return _fold_below(m, self.std, tokens, generator)[0]


@dataclass(frozen=True)
class LTGDraw:
    """One LTG draw with its internals, for distribution tests and logging."""

    t: Tensor  # (B, T) float32
    t_max: Tensor  # (B,) float32
    redrawn: Tensor  # (B, T) bool: tokens whose folded value was negative and got U(0, t_max)


@dataclass(frozen=True)
class LTG:
    """Logit-normal truncated Gaussian, the paper's sampler.

    ``t_max = sigmoid(m + s·ε0)`` per sample; ``σ = min(t_max/2, std)``; ``t_i = t_max − σ|ε_i|``;
    a negative ``t_i`` is redrawn ~ U(0, t_max). With ``std >= 0.5`` the cap never binds.
    ImageNet uses the defaults; text-to-image uses ``m = 0.5``.
    """

    m: float = 0.7
    s: float = 1.0
    std: float = 0.6
    name: ClassVar[str] = "ltg"

    def __post_init__(self) -> None:
        _check(self.name, self.s >= 0, f"s={self.s} must be >= 0")
        _check(self.name, self.std >= 0, f"std={self.std} must be >= 0")

    def sample_with_info(self, batch: int, tokens: int, generator: torch.Generator) -> LTGDraw:
        """Draws like ``__call__`` (same stream) and also returns ``t_max`` and the redraw mask."""
        out: dict[str, Tensor] = {}
        t = self._draw(batch, tokens, generator, out)
        return LTGDraw(t=t, t_max=out["t_max"], redrawn=out["redrawn"])

    @_float32_draw
    def __call__(self, batch: int, tokens: int, generator: torch.Generator) -> Tensor:
        return self._draw(batch, tokens, generator, {})

    @_float32_draw
    def _draw(self, batch: int, tokens: int, generator: torch.Generator, info: dict[str, Tensor]) -> Tensor:
        t_max = torch.sigmoid(self.m + self.s * _randn((batch, 1), generator))  # (B, 1)
        t, redrawn = _fold_below(t_max, self.std, tokens, generator)  # (B, T), (B, T)
        info.update(t_max=t_max[:, 0], redrawn=redrawn)
        return t


def make_timestep_sampler(name: str, **params: Any) -> TimestepSampler:
    """Builds a registered timestep sampler from its name and parameters.

    Args:
        name: registry name, e.g. ``"ltg"`` (see ``pfbench.registry.TIMESTEPS.names()``).
        **params: dataclass fields of that sampler; numbers are coerced to float.

    Returns:
        The frozen sampler instance.

    Raises:
        PfbenchError: unknown name, unknown parameter (naming the nearest valid one), or a
            non-numeric / out-of-range value.
    """
    cls = TIMESTEPS.get(name)
    valid = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, float] = {}
    for key, value in params.items():
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"valid: {', '.join(valid) or 'none'}"
            raise PfbenchError(f"timestep sampler {name!r} has no parameter {key!r}; {hint}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise PfbenchError(f"timestep sampler {name!r}: {key}={value!r} must be a finite number")
        kwargs[key] = float(value)
    return cls(**kwargs)  # type: ignore[no-any-return]


__all__ = [
    "LTG",
    "SRM",
    "Gaussian",
    "GlobalLogitNormal",
    "GlobalUniform",
    "LTGDraw",
    "PatchUniform",
    "TimestepSampler",
    "TruncatedGaussian",
    "make_timestep_sampler",
]
