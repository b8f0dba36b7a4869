"""Embedded-default metrics (docs/protocol.md §9) on the "embedded" feature network (``pfbench.encoders.embedded``).

Its pooled features give ``fd_embedded`` (a Fréchet distance — never call it FID) and precision/recall
(``pr_embedded``); its softmax gives ``is_embedded`` (the Inception-Score formula) and ``class_acc``.
Each metric reads the network's output for a batch, ``{"pool": (B, 128), "logits": (B, 10)}``.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from pfbench import PfbenchError
from pfbench.metrics.base import check_labels
from pfbench.metrics.scores import inception_score
from pfbench.metrics.standard import FrechetDistance, PrecisionRecall
from pfbench.types import Cond


class FDEmbedded(FrechetDistance):
    """Fréchet distance in the embedded network's pool features (``fd_embedded``; not FID)."""

    name: ClassVar[str] = "fd_embedded"
    features: ClassVar[str] = "embedded"


class ISEmbedded:
    """Inception-Score formula with the embedded classifier's softmax, 10 splits (``is_embedded``)."""

    name: ClassVar[str] = "is_embedded"
    higher_is_better: ClassVar[bool] = True
    directions: ClassVar[dict[str, bool]] = {"is_embedded": True, "is_embedded_std": False}
    features: ClassVar[str] = "embedded"
    needs: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, splits: int = 10) -> None:
        self.splits = splits
        self._probs: list[Tensor] = []

    def update(self, features: dict[str, Tensor], cond: Cond) -> None:
        """Keeps one batch's class probabilities; ``cond`` is unused."""
        self._probs.append(torch.softmax(features["logits"].double(), dim=1))  # (B, K) float64

    def compute(self) -> dict[str, float]:
        if not self._probs:
            raise PfbenchError("is_embedded: no images were added")
        mean, std = inception_score(torch.cat(self._probs), self.splits)
        return {self.name: mean, f"{self.name}_std": std}


class ClassAccuracy:
    """Fraction of images the embedded classifier assigns to their conditioning class (``class_acc``)."""

    name: ClassVar[str] = "class_acc"
    higher_is_better: ClassVar[bool] = True
    features: ClassVar[str] = "embedded"
    needs: ClassVar[frozenset[str]] = frozenset({"labels"})

    def __init__(self) -> None:
        self.correct = 0
        self.total = 0

    def update(self, features: dict[str, Tensor], cond: Cond) -> None:
        """Counts one batch; ``cond.y`` (B,) holds the conditioning classes in [0, K)."""
        logits = features["logits"]  # (B, K)
        y = check_labels(cond, logits.shape[0], logits.shape[1], "class_acc")
        self.correct += int((logits.argmax(1) == y.cpu()).sum())
        self.total += logits.shape[0]

    def compute(self) -> dict[str, float]:
        if self.total == 0:
            raise PfbenchError("class_acc: no images were added")
        return {self.name: self.correct / self.total}


class PREmbedded(PrecisionRecall):
    """k-NN precision/recall (k = 3) in the embedded pool features vs the reference's.

    Reports ``precision_embedded`` and ``recall_embedded``; use similar sample and reference counts.
    """

    name: ClassVar[str] = "pr_embedded"
    directions: ClassVar[dict[str, bool]] = {"precision_embedded": True, "recall_embedded": True}
    features: ClassVar[str] = "embedded"
    suffix: ClassVar[str] = "_embedded"
