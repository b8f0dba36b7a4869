"""FD-DINOv2 (docs/protocol.md §9 extra; Stein et al. 2023): Fréchet distance in DINOv2 ViT-L/14 CLS features.

The network and its offline weights are ``pfbench.encoders.dinov2`` (the "dinov2" feature network); the
reference statistics are computed from the reference images with the same network (an ADM ``.npz``
holds Inception statistics, so only its images ``arr_0`` can serve here).
"""

from __future__ import annotations

from typing import ClassVar

from pfbench.metrics.standard import FrechetDistance


class FDDINOv2(FrechetDistance):
    """Fréchet distance in DINOv2 features against the reference's DINOv2 ``mu``/``sigma``."""

    name: ClassVar[str] = "fd_dinov2"
    features: ClassVar[str] = "dinov2"
