"""Random-mask ablation of the dual-loop sampler (docs/protocol.md §6 ``random``): same fraction p, random patches."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pfbench.samplers.base import RandomMask
from pfbench.samplers.dual_loop import DualLoop


@dataclass(frozen=True)
class DualLoopRandom(RandomMask, DualLoop):
    """Dual-loop with the easy set drawn uniformly at random each outer step (see ``RandomMask``)."""

    name: ClassVar[str] = "dual_loop_random"
