"""What the training loop reads: the embedded pixel dataset or a pre-encoded latent store, behind one face."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor

from pfbench import PfbenchError
from pfbench.data.heterogeneity import DEFAULT_HETEROGENEITY

TRAIN_DATASETS = ("embedded", "latents")  # what training reads (suites evaluate on pfbench.data.DATASETS)


class TrainData(Protocol):
    """A finite, indexable training set in model space.

    ``sample(idx, eps)`` → (x1 (b, C, H, W) float32, y (b,) int64), on the data's device (the caller moves
    them); eps (b, C, H, W) is the posterior noise of a latent store (ignored by pixel data; ``needs_eps`` says
    whether to draw it). ``pixels(idx)`` gives the clean images (b, 3, R, R) in [−1, 1] for REPA's encoder,
    or None. Data with captions also has ``captions(idx) -> list[str]`` (what text-to-image training reads).
    """

    @property
    def size(self) -> int: ...

    @property
    def num_classes(self) -> int: ...

    @property
    def needs_eps(self) -> bool: ...

    def sample(self, idx: Tensor, eps: Tensor | None) -> tuple[Tensor, Tensor]: ...

    def pixels(self, idx: Tensor) -> Tensor | None: ...


@dataclass
class EmbeddedData:
    """The embedded dataset's train split, rendered once and held on the training device."""

    images: Tensor  # (N, 3, R, R) float32 in [-1, 1]
    labels: Tensor  # (N,) int64
    num_classes: int
    needs_eps: bool = False
    texts: tuple[str, ...] = ()  # (N,) captions (text-to-image training)

    @property
    def size(self) -> int:
        return len(self.labels)

    def sample(self, idx: Tensor, eps: Tensor | None) -> tuple[Tensor, Tensor]:
        idx = idx.to(self.images.device)
        return self.images[idx], self.labels[idx]

    def pixels(self, idx: Tensor) -> Tensor:
        return self.images[idx.to(self.images.device)]

    def captions(self, idx: Tensor) -> list[str]:
        """Captions of images ``idx`` (text-to-image training; optional member of ``TrainData``)."""
        return [self.texts[i] for i in idx.tolist()]


def data_shape(name: str, resolution: int, path: str | None) -> tuple[int, int, int]:
    """(channels, side, num_classes) of a training set in model space, without loading it."""
    if name == "embedded":
        from pfbench.data.embedded import NUM_CLASSES

        return 3, resolution, NUM_CLASSES
    if name == "latents":
        if path is None:
            raise PfbenchError("train config: data.path must name a latent store (`pfbench data encode`) for 'latents'")
        man = Path(path) / "manifest.json"
        if not man.is_file():
            raise PfbenchError(f"train config: data.path={path!r} is not a finished latent store (no manifest.json); "
                               "create it with `pfbench data encode`")
        m = json.loads(man.read_text())
        c, h, _ = m["latent_shape"]
        return int(c), int(h), int(m["num_classes"])
    raise PfbenchError(f"train config: data.name={name!r}; choose one of {', '.join(TRAIN_DATASETS)}")


def open_train_data(
    name: str, *, resolution: int, size: int, seed: int, path: str | None, device: torch.device,
    heterogeneity: float = DEFAULT_HETEROGENEITY,
) -> TrainData:
    """Opens a training set: ``embedded`` (rendered, ``size`` images at ``heterogeneity``) or ``latents`` (the
    store at ``path``)."""
    if name == "embedded":
        from pfbench.data.embedded import NUM_CLASSES, EmbeddedSpec, generate

        data = generate(EmbeddedSpec(resolution=resolution, split="train", size=size, seed=seed,
                                     heterogeneity=heterogeneity))
        return EmbeddedData(data.images.to(device), data.labels.to(device), NUM_CLASSES, texts=data.captions)
    if name == "latents":
        from pfbench.data.latents import LatentData

        data_shape(name, resolution, path)
        assert path is not None
        return LatentData.open(path)  # memory-mapped; batches are moved to the device by the caller
    raise PfbenchError(f"train config: data.name={name!r}; choose one of {', '.join(TRAIN_DATASETS)}")


__all__ = ["TRAIN_DATASETS", "EmbeddedData", "TrainData", "data_shape", "open_train_data"]
