"""Random-mask ablation of the look-ahead sampler (docs/protocol.md §6 ``random``): same fraction p, random patches."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pfbench.samplers.base import RandomMask
from pfbench.samplers.look_ahead import LookAhead


@dataclass(frozen=True)
class LookAheadRandom(RandomMask, LookAhead):
    """Look-ahead with the easy set drawn uniformly at random each (non-warm) step (see ``RandomMask``)."""

    name: ClassVar[str] = "look_ahead_random"
