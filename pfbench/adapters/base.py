"""What every model looks like to a sampler (ARCHITECTURE.md contract).

Samplers, the sample stage and the cost estimates see a model only through this protocol: no sampler
imports a concrete adapter, and nothing digs into a wrapped network for its shape or cost. A third-party
adapter (entry-point group ``pfbench.adapters``) implements these members and nothing else.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from torch import Tensor

from pfbench import PfbenchError
from pfbench.types import Cond, ModelOut

# The members every adapter has (checked by ``check_adapter`` and the contract tests).
MEMBERS: tuple[str, ...] = (
    "patch_size", "num_classes", "has_difficulty", "input_shape", "forwards_per_call", "gflops", "__call__",
)


@runtime_checkable
class Adapter(Protocol):
    """A velocity model called with per-token timesteps.

    Attributes:
        patch_size: p; timesteps are per p×p patch, so H and W are multiples of p.
        num_classes: labels are in [0, num_classes); index num_classes is the null class.
        has_difficulty: whether calls return a logvar map.
        input_shape: (C, H, W) of the space the model samples in (latents for a latent model).
    """

    patch_size: int
    num_classes: int
    has_difficulty: bool
    input_shape: tuple[int, int, int]

    def __call__(self, x: Tensor, t: Tensor, cond: Cond) -> ModelOut:
        """x (B, C, H, W), t (B, T) float32 -> ModelOut(v (B, C, H, W), logvar (B, 1, H, W) | None, v_cond)."""
        ...

    def forwards_per_call(self, t: Tensor) -> int:
        """Network passes per sample of one call at timesteps t (B, T): 1, or 2 for a guided (CFG) pair."""
        ...

    def gflops(self, t: Tensor) -> float:
        """Analytic GFLOPs per sample of one call at timesteps t (B, T), as executed (all passes included)."""
        ...


def check_adapter(obj: Any, where: str) -> Adapter:
    """Returns ``obj`` if it has every ``Adapter`` member, else raises one line naming the missing ones.

    Args:
        obj: what an adapter factory (a registered plugin) returned.
        where: who built it, for the message (e.g. ``"models.demo (adapter 'demo_flow')"``).
    """
    missing = [m for m in MEMBERS if not hasattr(obj, m)]
    if missing:
        raise PfbenchError(f"{where}: built a {type(obj).__name__}, which is not an adapter: it lacks "
                           f"{', '.join(missing)} (see pfbench.adapters.base.Adapter)")
    shape = obj.input_shape
    if not (isinstance(shape, tuple) and len(shape) == 3 and all(isinstance(n, int) and n > 0 for n in shape)):
        raise PfbenchError(f"{where}: input_shape must be a (C, H, W) tuple of positive ints, got {shape!r}")
    p = obj.patch_size
    if not (isinstance(p, int) and p > 0 and shape[1] % p == 0 and shape[2] % p == 0):
        raise PfbenchError(f"{where}: patch_size {p!r} must be a positive int dividing H and W of {shape}")
    return obj  # type: ignore[no-any-return]


class AdapterWrapper:
    """Base of adapters that wrap another one (CFG, call recorders, timers): the wrapped model's shape and
    conditioning attributes, and its cost per call unless a subclass changes it (CFG does)."""

    def __init__(self, model: Adapter) -> None:
        self.model = model
        self.patch_size = model.patch_size
        self.num_classes = model.num_classes
        self.has_difficulty = model.has_difficulty
        self.input_shape = model.input_shape

    def __call__(self, x: Tensor, t: Tensor, cond: Cond) -> ModelOut:
        return self.model(x, t, cond)

    def forwards_per_call(self, t: Tensor) -> int:
        return int(self.model.forwards_per_call(t))

    def gflops(self, t: Tensor) -> float:
        return float(self.model.gflops(t))

    def gflops_once(self) -> float:
        """The wrapped model's once-per-sample cost (``gflops_once``), e.g. a text encoder; 0 if it has none."""
        return gflops_once(self.model)


def gflops_once(model: Any) -> float:
    """GFLOPs a model spends once per sample outside its calls (optional member ``gflops_once()``, e.g. a
    text-to-image adapter's text encoder, which runs once per prompt, not per step); 0 when it declares none.

    The sample stage adds it once per sample to the samplers' per-call sums; CFG does not double it (the empty
    prompt of the unconditional branch is encoded once for the whole run).
    """
    once = getattr(model, "gflops_once", None)
    return float(once()) if callable(once) else 0.0
