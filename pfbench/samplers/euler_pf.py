"""Euler on a Patch Forcing model (docs/protocol.md §6 ``euler_pf``): t_k broadcast per token, difficulty unused.

The update is the global Euler step; the separate name keeps PF-Euler rows distinct in reports
(the paper's "PF-Euler" column) and documents that the difficulty head is ignored. Cost N.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pfbench.samplers.euler import Euler


@dataclass(frozen=True)
class EulerPF(Euler):
    """Euler with per-token time t_k on every patch of a PF model.

    Attributes:
        steps: N.
        shift: SD3-style time shift (1 = uniform grid).
    """

    name: ClassVar[str] = "euler_pf"
