"""Text-to-image metric of the embedded default: caption-attribute accuracy (``attr_acc``).

Does a generated image show what its prompt asked for? Per attribute a prompt names (class/shape, colour,
texture, size, position, background colour and kind; ``pfbench.data.captions``), the fraction of images from
which the embedded judge (the "embedded_attrs" network, ``pfbench.encoders.attributes``: the embedded
classifier for the shape, a small attribute CNN for the rest) reads that value. Keys: ``attr_acc`` (mean over
the attributes judged), ``attr_acc_<attribute>`` (each), ``attr_acc_all`` (images with every named attribute
right). The CLIP score on prompts is ``clip_score`` / ``clip_embedded`` (``pfbench.metrics.clipscore``, which
reads ``Cond.text``); a suite's shuffled-prompt baseline re-scores the same images against permuted prompts
(``pfbench.suite.prompts``).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from pfbench import PfbenchError
from pfbench.data.captions import ATTRIBUTES, attribute_targets
from pfbench.types import Cond


def _texts(cond: Cond, batch: int, where: str) -> tuple[str, ...]:
    if cond.text is None or len(cond.text) != batch:
        got = "no prompts" if cond.text is None else f"{len(cond.text)} prompts"
        raise PfbenchError(f"{where}: {got} for {batch} images; text-to-image samples need their prompts (cond.text)")
    return cond.text


class AttrAccuracy:
    """Caption-attribute accuracy of generated images, judged by the embedded attribute network (``attr_acc``)."""

    name: ClassVar[str] = "attr_acc"
    higher_is_better: ClassVar[bool] = True
    directions: ClassVar[dict[str, bool]] = {
        "attr_acc": True, "attr_acc_all": True,
        **{f"attr_acc_{a}": True for a in ATTRIBUTES},
    }  # fmt: skip
    features: ClassVar[str] = "embedded_attrs"
    needs: ClassVar[frozenset[str]] = frozenset({"text"})

    def __init__(self) -> None:
        self._pred: list[Tensor] = []  # (B, A) int64 judged values, attribute order of ATTRIBUTES
        self._want: list[Tensor] = []  # (B, A) int64 asked values, -1 where the prompt names none

    def update(self, features: dict[str, Tensor], cond: Cond) -> None:
        """Keeps the judge's reading and the prompt's attributes of one batch."""
        b = features["class"].shape[0]
        targets = attribute_targets(_texts(cond, b, self.name))
        self._pred.append(torch.stack([features[a].argmax(1).cpu() for a in ATTRIBUTES], 1))
        self._want.append(torch.stack([targets[a] for a in ATTRIBUTES], 1))

    @staticmethod
    def accuracies(pred: Tensor, want: Tensor) -> dict[str, float]:
        """Per attribute named at least once: fraction right among the images whose prompt names it."""
        named = want >= 0  # (N, A)
        right = (pred == want) & named
        return {a: float(right[:, k].sum() / named[:, k].sum()) for k, a in enumerate(ATTRIBUTES) if named[:, k].any()}

    def compute(self) -> dict[str, float]:
        if not self._pred:
            raise PfbenchError(f"{self.name}: compute() before any update()")
        pred, want = torch.cat(self._pred), torch.cat(self._want)  # (N, A)
        acc = self.accuracies(pred, want)
        if not acc:
            raise PfbenchError(f"{self.name}: no prompt names a colour, shape, texture, size or position to judge "
                               "(it judges embedded-style captions)")  # fmt: skip
        named = want >= 0
        all_right = ((pred == want) | ~named).all(1)[named.any(1)]
        return {
            self.name: sum(acc.values()) / len(acc),
            f"{self.name}_all": float(all_right.float().mean()),
            **{f"{self.name}_{a}": v for a, v in acc.items()},
        }


__all__ = ["AttrAccuracy"]
