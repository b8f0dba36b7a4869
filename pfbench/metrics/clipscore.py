"""CLIP score (SPEC §6) with any open_clip model: ``100·max(cos(E_image, E_text), 0)`` averaged.

The metric takes an open_clip model object, its tokenizer and its image preprocessing, so the
same code scores with a pretrained CLIP loaded from a local file (``load_openclip``, offline) and
with the tiny CLIP pfbench trains on the embedded dataset's captions.

Texts: ``cond.text`` (captions, text-to-image) when given, else the class prompt
``"a photo of a {class name}."`` for ``cond.y``. The clamp is per sample, before averaging
(Hessel et al. 2021's CLIP-S with w = 100); torchmetrics' ``CLIPScore.compute`` instead clamps
the *mean* (``max(mean(100·cos), 0)``) — the two agree whenever no cosine is negative.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
from PIL import Image
from torch import Tensor

from pfbench import PfbenchError
from pfbench.metrics.base import check_images
from pfbench.types import Cond
from pfbench.weights import resolve_weights

PROMPT = "a photo of a {}."


class CLIPScore:
    """Mean per-sample CLIP score of generated images against their captions or class prompts.

    Args:
        model: an open_clip model (``encode_image``/``encode_text``), in eval mode.
        tokenizer: open_clip tokenizer (``list[str] -> (B, L) int64``).
        preprocess: open_clip image transform (PIL image -> (3, S, S) float tensor).
        class_names: names for class-conditional prompts; required unless every ``cond`` has text.
        prompt: template for class prompts.
        device: where the model runs.
    """

    name: ClassVar[str] = "clip_score"
    higher_is_better: ClassVar[bool] = True

    def __init__(
        self,
        model: Any,
        tokenizer: Callable[[list[str]], Tensor],
        preprocess: Callable[[Image.Image], Tensor],
        *,
        class_names: Sequence[str] | None = None,
        prompt: str = PROMPT,
        device: str | torch.device = "cpu",
    ) -> None:
        self.model = model.to(device).eval()
        self.tokenizer, self.preprocess = tokenizer, preprocess
        self.class_names = tuple(class_names) if class_names is not None else None
        self.prompt = prompt
        self.device = torch.device(device)
        self._class_emb: Tensor | None = None  # (K, E) normalised prompt embeddings, built lazily
        self._sum = 0.0  # float64 running sum of per-sample scores
        self._n = 0

    @torch.no_grad()
    def _embed_text(self, texts: Sequence[str]) -> Tensor:
        emb = self.model.encode_text(self.tokenizer(list(texts)).to(self.device)).float()  # (B, E)
        return emb / emb.norm(dim=-1, keepdim=True)

    @torch.no_grad()
    def _embed_images(self, images: Tensor) -> Tensor:
        pil = [Image.fromarray(img.permute(1, 2, 0).cpu().numpy()) for img in images]
        x = torch.stack([self.preprocess(p) for p in pil]).to(self.device)  # (B, 3, S, S)
        emb = self.model.encode_image(x).float()  # (B, E)
        return emb / emb.norm(dim=-1, keepdim=True)

    def _text_embeddings(self, cond: Cond, batch: int) -> Tensor:
        if cond.text is not None:
            if len(cond.text) != batch:
                raise PfbenchError(f"clip_score: {len(cond.text)} captions for {batch} images")
            return self._embed_text(cond.text)
        if self.class_names is None:
            raise PfbenchError("clip_score: no captions (cond.text) and no class_names to build prompts from")
        y = cond.y.long().cpu()
        if y.shape != (batch,) or (batch and (int(y.min()) < 0 or int(y.max()) >= len(self.class_names))):
            raise PfbenchError(f"clip_score: labels must be ({batch},) in [0, {len(self.class_names)})")
        if self._class_emb is None:
            self._class_emb = self._embed_text([self.prompt.format(c) for c in self.class_names])  # (K, E)
        return self._class_emb[y.to(self._class_emb.device)]

    def scores(self, images: Tensor, cond: Cond) -> Tensor:
        """Per-sample ``100·max(cos, 0)``, (B,) float32, without accumulating."""
        check_images(images, "clip_score")
        txt = self._text_embeddings(cond, images.shape[0])  # (B, E)
        img = self._embed_images(images)  # (B, E)
        return (100.0 * (img * txt).sum(-1)).clamp_min(0.0).cpu()

    def update(self, images: Tensor, cond: Cond) -> None:
        """Adds uint8 (B, 3, H, W) images with their labels or captions."""
        s = self.scores(images, cond)
        self._sum += float(s.double().sum())
        self._n += s.shape[0]

    def compute(self) -> dict[str, float]:
        if self._n == 0:
            raise PfbenchError("clip_score: compute() before any update()")
        return {"clip_score": self._sum / self._n}


def load_openclip(
    arch: str = "ViT-L-14",
    weights: str | os.PathLike[str] | None = None,
    *,
    key: str = "clip-vit-l-14-openai",
    quick_gelu: bool = True,
    verify: bool = True,
    device: str | torch.device = "cpu",
) -> tuple[Any, Callable[[list[str]], Tensor], Callable[[Image.Image], Tensor]]:
    """(model, tokenizer, preprocess) of an open_clip architecture with weights from a local file.

    Args:
        arch: open_clip model config name.
        weights: explicit file; ``None`` resolves ``key`` offline (``$PFBENCH_WEIGHTS``, ``~/.cache/clip``).
        key: ``KNOWN_WEIGHTS`` entry, for the search and the checksum.
        quick_gelu: True for OpenAI's CLIP weights.
        verify: check the known sha256.
        device: where the model goes.
    """
    import open_clip

    path = resolve_weights(key, weights, verify=verify)
    # OpenAI files are TorchScript archives, which torch.load refuses with weights_only=True; the
    # file's sha256 was verified above (or the caller vouched for it with verify=False).
    model, _, preprocess = open_clip.create_model_and_transforms(
        arch, pretrained=str(path), force_quick_gelu=quick_gelu, weights_only=False, device=device
    )
    return model.eval(), open_clip.get_tokenizer(arch), preprocess
