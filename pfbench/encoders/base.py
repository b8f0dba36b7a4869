"""What every frozen feature network looks like, the context evaluate builds one from, and image conventions.

A feature network maps a uint8 batch (B, 3, H, W) to named feature arrays (``{"pool": (B, D), ...}``). The
registry ``pfbench.registry.FEATURES`` maps a name ("inception", "embedded", "dinov2", "clip", "tiny_clip",
"images") to a builder ``(FeatureContext) -> FeatureExtractor``; metrics name the network they read
(``Metric.features``) and ``pfbench.evaluate`` builds each network once and runs it once per batch.

Weights: one map ``{network name: file or folder}`` (``FeatureContext.weights``; a suite's ``eval.weights``,
``pfbench eval --weights NETWORK=PATH``). A builder that reads a weights file declares its weights key with
``@takes_weights(KEY)``: a ``pfbench.weights.KNOWN_WEIGHTS`` name (then an unset entry resolves offline) or the
plugin's own name (then the entry must be set; ``FeatureContext.weights_file`` says so in one line).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import torch
from torch import Tensor

from pfbench import PfbenchError

WeightsPath = str | os.PathLike[str] | None
B = TypeVar("B")


class FeatureExtractor(Protocol):
    """uint8 images in, named (B, D) float32 features out (``pool`` is the pooled embedding, if any).

    A network trained at one image side also has ``resolution: int`` (evaluate checks samples and reference
    against it before any pass); one that resizes its input itself has none.
    """

    @property
    def keys(self) -> tuple[str, ...]:
        """Names of the features ``__call__`` returns."""
        ...

    def fingerprint(self) -> dict[str, str]:
        """Everything that changes the features (network, weights checksum, preprocessing): a cache key part."""
        ...

    def __call__(self, images: Tensor) -> dict[str, Tensor]: ...  # uint8 (B, 3, H, W) -> {key: (B, D)}


@dataclass(frozen=True)
class FeatureContext:
    """What a feature network is built from: the settings of every network of one evaluation (``evaluate(...,
    context)``), plus the side of the images, which ``pfbench.evaluate`` fills in from the samples.

    Attributes:
        resolution: side of the images to score (networks trained at one resolution load that one); 0 until
            ``evaluate`` sets it.
        device: where the network runs.
        batch_size: images per forward pass (memory only).
        weights: explicit weights file or folder per feature network name (``{"inception": path}``); a missing
            name resolves offline (``pfbench.weights``) or, for a plugin's own weights key, is an error.
        verify: check the Inception file's sha256 (off: a non-official file is accepted and recorded).
        resize: Inception input resize, ``"tf1x"`` or ``"clean"``.
    """

    resolution: int = 0
    device: str | torch.device = "cpu"
    batch_size: int = 250
    weights: Mapping[str, WeightsPath] = field(default_factory=dict)
    verify: bool = True
    resize: str = "tf1x"

    def weights_file(self, network: str) -> Path:
        """The file given for ``network`` in ``weights`` (a plugin's network whose key ``pfbench.weights`` does not
        know has no offline fallback).

        Raises:
            PfbenchError: unset or not a file, in one line naming the network and the key to set.
        """
        given = self.weights.get(network)
        how = f"set eval.weights.{network} in the suite (pfbench eval: --weights {network}=PATH)"
        if given is None:
            raise PfbenchError(f"feature network {network!r} needs its weights file: {how}")
        if not Path(given).expanduser().is_file():
            raise PfbenchError(f"feature network {network!r}: weights file {given} not found; {how}")
        return Path(given).expanduser()


def takes_weights(key: str) -> Callable[[B], B]:
    """Declares the weights key of a feature-network builder (its registry entry): ``@takes_weights("x")``.

    Args:
        key: a ``pfbench.weights.KNOWN_WEIGHTS`` name (resolved offline when ``eval.weights`` has no entry for
            the network) or the plugin's own name (the entry is then required).
    """

    def declare(builder: B) -> B:
        builder.weights_key = key  # type: ignore[attr-defined]
        return builder

    return declare


def weights_key(builder: Any) -> str | None:
    """The weights key a feature-network builder declares (``takes_weights``), or None: it reads no file."""
    key = getattr(builder, "weights_key", None)
    return None if key is None else str(key)


class Identity:
    """The "images" network: metrics with ``features = "images"`` get the uint8 batch (B, 3, H, W) as it is."""

    keys: tuple[str, ...] = ()

    def fingerprint(self) -> dict[str, str]:
        return {"extractor": "uint8 images"}

    def __call__(self, images: Tensor) -> Tensor:
        """The batch itself, checked to be uint8 (B, 3, H, W)."""
        check_images(images, "images")
        return images


def identity(ctx: FeatureContext) -> Identity:
    """Registry builder of the "images" network (``ctx`` is unused)."""
    return Identity()


def check_images(images: Tensor, where: str, resolution: int | None = None) -> None:
    """Raises a one-line ``PfbenchError`` unless ``images`` is uint8 (B, 3, H, W) [with H = W = resolution]."""
    if not isinstance(images, Tensor) or images.dtype != torch.uint8:
        got = images.dtype if isinstance(images, Tensor) else type(images).__name__
        raise PfbenchError(f"{where}: images must be a uint8 tensor (B, 3, H, W), got {got}; quantise first")
    if images.ndim != 4 or images.shape[1] != 3:
        raise PfbenchError(f"{where}: images must be (B, 3, H, W), got {tuple(images.shape)}")
    if resolution is not None and tuple(images.shape[2:]) != (resolution, resolution):
        raise PfbenchError(
            f"{where}: images are {tuple(images.shape[2:])} but it uses resolution {resolution}; "
            "score images of that side or use the network built for theirs"
        )


@contextlib.contextmanager
def deterministic(threads: int) -> Iterator[None]:
    """Fixed thread count + deterministic kernels for building shipped assets; restores the caller's settings."""
    threads_before, det_before = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(threads_before)
        torch.use_deterministic_algorithms(det_before)
