"""CLIP score (docs/protocol.md §9): ``100·max(cos(E_image, E_text), 0)`` averaged over the samples.

Two metrics, one formula: ``clip_score`` on the OpenAI CLIP ViT-L/14 (the "clip" network, a local file)
and ``clip_embedded`` on the tiny CLIP pfbench trains on the embedded dataset's captions (the "tiny_clip"
network; an embedded-default number, not a real CLIP score). Both read the network's normalised image
embeddings and ask the same network (``pfbench.encoders.clip.CLIPNetwork``) for the text side.

Texts: ``cond.text`` (captions, text-to-image) when given, else the class prompt
``"a photo of a {class name}."`` for ``cond.y``. The clamp is per sample, before averaging
(Hessel et al. 2021's CLIP-S with w = 100); torchmetrics' ``CLIPScore.compute`` instead clamps
the *mean* (``max(mean(100·cos), 0)``) — the two agree whenever no cosine is negative.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from torch import Tensor

from pfbench import PfbenchError
from pfbench.data.embedded import CLASS_NAMES
from pfbench.encoders.clip import PROMPT, CLIPNetwork
from pfbench.types import Cond


class CLIPScore:
    """Mean per-sample CLIP score of generated images against their captions or class prompts.

    Args:
        network: the CLIP network whose image embeddings ``update`` receives (it embeds the texts too).
        class_names: names for class-conditional prompts; required unless every ``cond`` has text.
        prompt: template for class prompts.
    """

    name: ClassVar[str] = "clip_score"
    higher_is_better: ClassVar[bool] = True
    features: ClassVar[str] = "clip"
    needs: ClassVar[frozenset[str]] = frozenset({"text"})

    def __init__(self, network: CLIPNetwork, class_names: Sequence[str] | None = None, prompt: str = PROMPT) -> None:
        self.network = network
        self.class_names = tuple(class_names) if class_names is not None else None
        self.prompt = prompt
        self._class_emb: Tensor | None = None  # (K, E) normalised prompt embeddings, built lazily
        self._sum = 0.0  # float64 running sum of per-sample scores
        self._n = 0

    def _text_embeddings(self, cond: Cond, batch: int) -> Tensor:
        if cond.text is not None:
            if len(cond.text) != batch:
                raise PfbenchError(f"{self.name}: {len(cond.text)} captions for {batch} images")
            return self.network.encode_text(cond.text)
        if self.class_names is None:
            raise PfbenchError(f"{self.name}: no captions (cond.text) and no class_names to build prompts from")
        y = cond.y.long().cpu()
        if y.shape != (batch,) or (batch and (int(y.min()) < 0 or int(y.max()) >= len(self.class_names))):
            raise PfbenchError(f"{self.name}: labels must be ({batch},) in [0, {len(self.class_names)})")
        if self._class_emb is None:
            self._class_emb = self.network.encode_text([self.prompt.format(c) for c in self.class_names])  # (K, E)
        return self._class_emb[y.to(self._class_emb.device)]

    def scores(self, features: dict[str, Tensor], cond: Cond) -> Tensor:
        """Per-sample ``100·max(cos, 0)`` of one batch, (B,) float32 on the CPU, without accumulating."""
        img = features["image"]  # (B, E) normalised
        txt = self._text_embeddings(cond, img.shape[0])  # (B, E)
        return (100.0 * (img * txt).sum(-1)).clamp_min(0.0).cpu()

    def update(self, features: dict[str, Tensor], cond: Cond) -> None:
        """Adds one batch's image embeddings with its labels or captions."""
        s = self.scores(features, cond)
        self._sum += float(s.double().sum())
        self._n += s.shape[0]

    def compute(self) -> dict[str, float]:
        if self._n == 0:
            raise PfbenchError(f"{self.name}: compute() before any update()")
        return {self.name: self._sum / self._n}


class CLIPEmbedded(CLIPScore):
    """CLIP score with the tiny CLIP and the embedded dataset's class names (``clip_embedded``)."""

    name: ClassVar[str] = "clip_embedded"
    features: ClassVar[str] = "tiny_clip"

    def __init__(self, network: CLIPNetwork) -> None:
        super().__init__(network, class_names=CLASS_NAMES)
