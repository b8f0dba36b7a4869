"""Helpers shared by metric implementations: the Metric protocol, input checks, cache keys."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import ClassVar, Protocol, runtime_checkable

import torch
from torch import Tensor

from pfbench import PfbenchError
from pfbench.assets import cache_root
from pfbench.types import Cond


@runtime_checkable
class Metric(Protocol):
    """What every metric looks like to the evaluator (STYLE.md): uint8 images in, numbers out."""

    name: ClassVar[str]
    higher_is_better: ClassVar[bool]

    def update(self, images: Tensor, cond: Cond) -> None: ...  # images uint8 (B, 3, H, W)

    def compute(self) -> dict[str, float]: ...


def check_images(images: Tensor, where: str, resolution: int | None = None) -> None:
    """Raises a one-line ``PfbenchError`` unless ``images`` is uint8 (B, 3, H, W) [with H = W = resolution]."""
    if not isinstance(images, Tensor) or images.dtype != torch.uint8:
        got = images.dtype if isinstance(images, Tensor) else type(images).__name__
        raise PfbenchError(f"{where}: images must be a uint8 tensor (B, 3, H, W), got {got}; quantise first")
    if images.ndim != 4 or images.shape[1] != 3:
        raise PfbenchError(f"{where}: images must be (B, 3, H, W), got {tuple(images.shape)}")
    if resolution is not None and tuple(images.shape[2:]) != (resolution, resolution):
        raise PfbenchError(
            f"{where}: images are {tuple(images.shape[2:])} but this metric uses resolution {resolution}; "
            "pass the matching resolution"
        )


def check_labels(cond: Cond, batch: int, num_classes: int, where: str) -> Tensor:
    """Returns ``cond.y`` as (B,) int64 after checking shape and range (no null class allowed)."""
    y = cond.y
    if y.shape != (batch,):
        raise PfbenchError(f"{where}: cond.y must be ({batch},), got {tuple(y.shape)}")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise PfbenchError(
            f"{where}: labels must be in [0, {num_classes}), got range [{int(y.min())}, {int(y.max())}]; "
            "unconditional samples (null class) have no class to check"
        )
    return y.long()


def content_key(*parts: bytes | str) -> str:
    """sha256 over length-prefixed parts (so ``("ab", "c")`` and ``("a", "bc")`` differ)."""
    h = hashlib.sha256()
    for part in parts:
        raw = part.encode() if isinstance(part, str) else part
        h.update(len(raw).to_bytes(8, "little"))
        h.update(raw)
    return h.hexdigest()


def metric_cache_dir(sub: str, cache_dir: str | Path | None = None) -> Path:
    """``<cache_dir or $PFBENCH_CACHE or ~/.cache/pfbench>/<sub>``, created if missing."""
    root = Path(cache_dir).expanduser() if cache_dir is not None else cache_root()
    out = root / sub
    out.mkdir(parents=True, exist_ok=True)
    return out
