"""Frozen REPA target encoders (docs/protocol.md §5): clean pixels → patch tokens the DiT's projector is aligned to.

Every encoder has one face, ``RepaEncoder``: ``dim`` and ``encoder(pixels) -> (B, T_enc, D_enc)`` float32,
pixels being clean images (B, 3, R, R) in [−1, 1]. Encoders are frozen (eval mode, no parameter wants a
gradient) and are plain objects, not ``nn.Module``s, so nothing can register them in a DiT, its optimiser or
its checkpoint.

- ``dinov2-vitb14`` (the paper's): DINOv2 ViT-B/14 from the original ``dinov2_vitb14_pretrain.pth``, built by
  ``pfbench.encoders.dinov2`` (resolved offline; nothing is downloaded). As REPA's reference code does: pixels
  to [0, 1], ImageNet mean/std, bicubic resize to 224 → 16×16 = 256 patch tokens of 768 dims after the final
  LayerNorm, class token dropped.
- ``embedded``: the shipped feature network of the embedded metrics (``embedded_net_r16``), so the whole REPA
  path runs on a CPU with targets that carry class information. Tokens are its last conv block after the
  GroupNorm and before the ReLU, (B, 128, R/4, R/4) at its training resolution 16 → 4×4 = 16 tokens of 128
  dims. Why this layer: it is the deepest, most semantic spatial one (the metrics' pooled feature is its
  ReLU), mirroring REPA's DINOv2 last-layer tokens, which are likewise taken right after a norm; the R/2
  layer would match a patch-2 DiT's grid but is two convolutions deep (colour and edges). Why before the
  ReLU: rectified tokens are all non-negative, so one constant vector already has cosine ≈ 0.63 with them
  and the loss would mostly teach the mean direction; the normalised pre-activations keep their sign and
  drop that floor to ≈ 0.35, so alignment above it reflects image content. Other resolutions are resized
  (bilinear, antialiased) to 16 first, as DINOv2's input is resized to 224.

``tokens_for_grid`` resamples an encoder's square token grid to the DiT's g×g grid: area averaging when it
shrinks (each DiT token's target is the mean of the encoder tokens it covers), bilinear when it grows (a
smooth target instead of repeated blocks), the identity when the grids agree.
"""

from __future__ import annotations

import copy
import difflib
import math
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from pfbench import PfbenchError

# Token dims, known without loading any weights (TrainSpec.net_config sizes the projector from them).
ENCODER_DIMS: dict[str, int] = {"dinov2-vitb14": 768, "embedded": 128}
EMBEDDED_RESOLUTION = 16  # the shipped embedded feature network's training resolution


class RepaEncoder(Protocol):
    """A frozen REPA target encoder."""

    dim: int

    def __call__(self, pixels: Tensor) -> Tensor:
        """Clean images (B, 3, R, R) in [−1, 1] → patch tokens (B, T_enc, dim) float32, row-major grid."""
        ...


def encoder_dim(name: str) -> int:
    """Token dimension of encoder ``name``.

    Raises:
        PfbenchError: unknown encoder (naming the nearest known one).
    """
    if name not in ENCODER_DIMS:
        close = difflib.get_close_matches(name, list(ENCODER_DIMS), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise PfbenchError(f"unknown REPA encoder {name!r}; {hint}known: {', '.join(ENCODER_DIMS)}")
    return ENCODER_DIMS[name]


class DINOv2Encoder:
    """DINOv2 patch tokens of clean pixels (see the module docstring)."""

    def __init__(self, name: str, weights: str | None, device: torch.device) -> None:
        from pfbench.encoders.dinov2 import DINOv2

        ext = DINOv2(weights, model=name, device=device)  # raises resolve_weights' message when missing
        self.net = ext.net  # eval, requires_grad False (build_dinov2)
        self.dim = ext.arch.dim
        self.device = device

    @torch.no_grad()  # not inference_mode: the tokens are saved by autograd as the target of a cosine
    def __call__(self, pixels: Tensor) -> Tensor:
        from pfbench.encoders.dinov2 import IMAGENET_MEAN, IMAGENET_STD, INPUT_SIZE, patch_tokens

        x = (pixels.float() + 1) / 2  # (B, 3, R, R) in [0, 1]
        mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
        x = (x - mean) / std
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bicubic", align_corners=False)  # (B, 3, 224, 224)
        return patch_tokens(self.net, x).float()  # (B, 256, 768)


class EmbeddedEncoder:
    """The embedded feature network's last conv block as patch tokens (see the module docstring)."""

    def __init__(self, device: torch.device) -> None:
        from pfbench.encoders.embedded import load_feature_net

        shared = load_feature_net(EMBEDDED_RESOLUTION)  # verified asset; cached per process for the metrics
        self.net = copy.deepcopy(shared).to(device).eval().requires_grad_(False)  # the metrics' copy stays put
        self.resolution = EMBEDDED_RESOLUTION
        self.dim = int(shared.feat_dim)

    @torch.no_grad()
    def __call__(self, pixels: Tensor) -> Tensor:
        x = pixels.float()  # (B, 3, R, R) in [-1, 1], the network's own input range
        if x.shape[-2:] != (self.resolution, self.resolution):
            size = (self.resolution, self.resolution)
            x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)  # (B, 3, 16, 16)
        h = self.net.body[:-1](x)  # (B, 128, 4, 4): last block after its GroupNorm, before its ReLU
        return h.flatten(2).transpose(1, 2).float()  # (B, 16, 128), row-major as DiT's tokens


def load_encoder(name: str, *, weights: str | None = None, device: torch.device | str = "cpu") -> RepaEncoder:
    """Builds a frozen REPA target encoder.

    Args:
        name: ``"dinov2-vitb14"`` or ``"embedded"``.
        weights: DINOv2 weights file or folder (None: ``$PFBENCH_WEIGHTS``, then the torch hub cache);
            must be None for ``embedded`` (a shipped asset).
        device: where the encoder runs.

    Raises:
        PfbenchError: unknown name, weights not found (naming the file, the places looked and how to get
            it), unreadable weights, or weights whose token size is not the one ``ENCODER_DIMS`` promises.
    """
    want = encoder_dim(name)
    device = torch.device(device)
    encoder: DINOv2Encoder | EmbeddedEncoder
    if name == "embedded":
        if weights is not None:
            raise PfbenchError("repa.weights is for DINOv2 encoders; the 'embedded' encoder is a shipped asset")
        encoder = EmbeddedEncoder(device)
    else:
        encoder = DINOv2Encoder(name, weights, device)
    if encoder.dim != want:
        raise PfbenchError(
            f"REPA encoder {name!r} gives {encoder.dim}-d tokens, expected {want}; wrong weights file or asset?"
        )
    return encoder


def tokens_for_grid(z: Tensor, grid: int) -> Tensor:
    """Resamples encoder tokens on a square row-major grid to the DiT's ``grid``×``grid`` tokens.

    Args:
        z: (B, T_enc, D) tokens, T_enc = s² for some side s.
        grid: DiT token grid side (input_size / patch).

    Returns:
        (B, grid², D) float32: ``z`` itself when s == grid, area averages when s > grid, bilinear
        (align_corners=False) when s < grid.

    Raises:
        PfbenchError: T_enc is not a square number.
    """
    b, n, d = z.shape
    side = math.isqrt(n)
    if side * side != n:
        raise PfbenchError(f"tokens_for_grid: {n} encoder tokens do not form a square grid")
    if side == grid:
        return z
    m = z.float().transpose(1, 2).reshape(b, d, side, side)  # (B, D, s, s)
    if side > grid:
        m = F.interpolate(m, size=(grid, grid), mode="area")  # (B, D, g, g): mean over covered tokens
    else:
        m = F.interpolate(m, size=(grid, grid), mode="bilinear", align_corners=False)  # (B, D, g, g)
    return m.flatten(2).transpose(1, 2)  # (B, g², D)


__all__ = ["ENCODER_DIMS", "RepaEncoder", "encoder_dim", "load_encoder", "tokens_for_grid"]
