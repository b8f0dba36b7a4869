"""Random-mask ablation of the look-ahead sampler (SPEC §5 ``random``): same fraction p, random patches."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from pfbench.samplers.base import random_mask, require_keys
from pfbench.samplers.look_ahead import LookAhead
from pfbench.types import ModelOut


@dataclass(frozen=True)
class LookAheadRandom(LookAhead):
    """Look-ahead with the easy set drawn uniformly at random each (non-warm) step.

    The mask has ⌈p·(T − 1)⌉ patches (the difficulty mask's size for distinct values); sample i's mask
    at step k depends only on (keys[i], k). The difficulty head is not used.
    """

    name: ClassVar[str] = "look_ahead_random"

    def easy_mask(self, out: ModelOut, keys: Tensor | None, step: int, patch: int) -> Tensor:
        b, _, h, w = out.v.shape
        tokens = (h // patch) * (w // patch)
        return random_mask(require_keys(keys, b, self.name), step, tokens, self.p, self.name, out.v.device)
