"""CLIP image and text towers for the CLIP score (docs/protocol.md §9): any open_clip model behind one face.

``CLIPNetwork`` wraps an open_clip model object with its tokenizer and image preprocessing, so the same
metric code scores with a pretrained CLIP loaded from a local file (``load_openclip``, offline; the "clip"
network) and with the tiny CLIP pfbench trains on the embedded dataset's captions (``pfbench.encoders.
tiny_clip``; the "tiny_clip" network). Image and text embeddings are L2-normalised float32 and stay on the
network's device, where the metric takes their cosine.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from pfbench.encoders.base import FeatureContext, check_images, takes_weights
from pfbench.weights import resolve_weights

PROMPT = "a photo of a {}."  # class prompt of the CLIP score (and of the tiny CLIP's training captions)


class CLIPNetwork:
    """An open_clip model as a feature network: ``{"image": (B, E)}`` plus ``encode_text`` for the text side.

    Args:
        model: an open_clip model (``encode_image``/``encode_text``).
        tokenizer: open_clip tokenizer (``list[str] -> (B, L) int64``).
        preprocess: open_clip image transform (PIL image -> (3, S, S) float tensor).
        device: where the model runs (it is moved there and put in eval mode).
        resolution: the image side the model was trained for, if it takes only that one (the tiny CLIP).
        fingerprint: what identifies the weights (name, sha256).
    """

    keys: tuple[str, ...] = ("image",)

    def __init__(self, model: Any, tokenizer: Callable[[list[str]], Tensor], preprocess: Callable[[Image.Image], Tensor],
                 *, device: str | torch.device = "cpu", resolution: int | None = None,
                 fingerprint: dict[str, str] | None = None) -> None:  # fmt: skip
        self.model = model.to(device).eval()
        self.tokenizer, self.preprocess = tokenizer, preprocess
        self.device = torch.device(device)
        self.resolution = resolution
        self._fingerprint = {"extractor": "open_clip", **(fingerprint or {})}

    def fingerprint(self) -> dict[str, str]:
        return dict(self._fingerprint)

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str]) -> Tensor:
        """Normalised text embeddings (T, E) float32 on the network's device."""
        emb = self.model.encode_text(self.tokenizer(list(texts)).to(self.device)).float()  # (T, E)
        return emb / emb.norm(dim=-1, keepdim=True)

    @torch.no_grad()
    def __call__(self, images: Tensor) -> dict[str, Tensor]:
        """uint8 (B, 3, H, W) → ``{"image": (B, E)}`` normalised float32 on the network's device."""
        check_images(images, "clip", self.resolution)
        pil = [Image.fromarray(img.permute(1, 2, 0).cpu().numpy()) for img in images]
        x = torch.stack([self.preprocess(p) for p in pil]).to(self.device)  # (B, 3, S, S)
        emb = self.model.encode_image(x).float()  # (B, E)
        return {"image": emb / emb.norm(dim=-1, keepdim=True)}


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


@takes_weights("clip-vit-l-14-openai")
def from_context(ctx: FeatureContext) -> CLIPNetwork:
    """Registry builder ("clip"): OpenAI CLIP ViT-L/14 from ``ctx.weights["clip"]`` (checksum-verified)."""
    return CLIPNetwork(*load_openclip(weights=ctx.weights.get("clip"), device=ctx.device), device=ctx.device,
                       fingerprint={"model": "ViT-L-14", "weights": "clip-vit-l-14-openai"})  # fmt: skip
