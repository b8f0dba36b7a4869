"""DINOv2 ViT features (FD-DINOv2, docs/protocol.md §9 extra; REPA targets, docs/protocol.md §5), without torch hub code.

The network is timm's ``vit_large_patch14_dinov2`` built at 224×224 with random init, then loaded
from the original ``dinov2_vitl14_pretrain.pth`` (facebookresearch key layout) found offline by
``resolve_weights("dinov2-vitl14", path)``. The conversion:

- the position embedding (trained on a 37×37 patch grid, 518 px) is resampled to the 16×16 grid of
  a 224 px input exactly as the DINOv2 hub model does it at run time (bicubic, scale factor
  (16 + 0.1)/37, no antialias), so the features are those of ``torch.hub.load('facebookresearch/
  dinov2', 'dinov2_vitl14')`` used by Stein et al. (2023) / dgm-eval; timm's own resampling
  (antialiased, exact size) would give slightly different features;
- the remaining keys go through timm's ``checkpoint_filter_fn``, which recognises the DINOv2 layout
  (drops ``mask_token``, renames SwiGLU weights of the giant model).

Preprocessing follows dgm-eval: each uint8 image is resized to 224×224 with PIL bicubic (``"pil"``,
torchvision's ``Resize`` on a PIL image, quantised to uint8) or clean-fid's float bicubic
(``"clean"``), scaled to [0, 1] and normalised with the ImageNet mean/std. The feature is the CLS
token after the final LayerNorm (1024-d for ViT-L/14).

The extractor returns its feature under the key ``"pool"`` (the pooled image embedding, as
Inception's pool3), so reference statistics and their cache work as for Inception; its fingerprint
keeps its cache entries apart from Inception's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pfbench import PfbenchError
from pfbench.encoders.base import FeatureContext, check_images, takes_weights
from pfbench.encoders.inception import clean_resize
from pfbench.weights import file_sha256, resolve_weights

INPUT_SIZE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_MODES = ("pil", "clean")
POS_OFFSET = 0.1  # DINOv2 hub: interpolate_offset, "to avoid floating point error in the interpolation"


@dataclass(frozen=True)
class Arch:
    """A DINOv2 network pfbench can build.

    Attributes:
        timm_name: timm model name (architecture only; never downloads).
        dim: CLS feature size.
        depth: transformer blocks; ``None`` keeps the architecture's own (tests shrink it).
    """

    timm_name: str
    dim: int
    depth: int | None = None


# weights key (pfbench.weights.KNOWN_WEIGHTS) -> architecture
ARCHS: dict[str, Arch] = {
    "dinov2-vitl14": Arch("vit_large_patch14_dinov2", 1024),
    "dinov2-vitb14": Arch("vit_base_patch14_dinov2", 768),
}


def _timm() -> Any:
    try:
        import timm
    except ImportError:
        raise PfbenchError(
            "fd_dinov2 needs timm to build the DINOv2 network; `pip install 'timm>=1.0'`"
        ) from None
    return timm


def resample_pos_embed(pos: Tensor, grid: int) -> Tensor:
    """DINOv2 hub's run-time position-embedding interpolation, done once.

    Args:
        pos: (1, 1 + M², D) class + patch position embedding of an M×M grid.
        grid: target patch grid side (16 for 224 px at patch 14).

    Returns:
        (1, 1 + grid², D) float32: bicubic with scale factor (grid + 0.1)/M, no antialias, class
        token position unchanged.
    """
    n = pos.shape[1] - 1
    m = int(round(n**0.5))
    if m * m != n:
        raise PfbenchError(f"DINOv2 pos_embed has {n} patch positions, not a square grid")
    if m == grid:
        return pos.float()
    cls, patch = pos[:, :1].float(), pos[:, 1:].float()  # (1, 1, D), (1, M², D)
    scale = (grid + POS_OFFSET) / m
    patch = patch.reshape(1, m, m, -1).permute(0, 3, 1, 2)  # (1, D, M, M)
    patch = F.interpolate(patch, scale_factor=(scale, scale), mode="bicubic", antialias=False)  # (1, D, g, g)
    if patch.shape[-2:] != (grid, grid):
        raise PfbenchError(
            f"DINOv2 pos_embed resampling gave {tuple(patch.shape[-2:])}, expected {grid}×{grid}"
        )
    return torch.cat([cls, patch.permute(0, 2, 3, 1).reshape(1, grid * grid, -1)], dim=1)


def build_dinov2(arch: Arch, state: dict[str, Tensor], where: str) -> nn.Module:
    """timm DINOv2 ViT at 224 px holding the original-layout ``state`` (see module docstring).

    Raises:
        PfbenchError: the state dict does not fit the architecture (one line, naming ``where``).
    """
    timm = _timm()
    from timm.models.vision_transformer import checkpoint_filter_fn

    extra = {} if arch.depth is None else {"depth": arch.depth}
    net = timm.create_model(arch.timm_name, pretrained=False, num_classes=0, img_size=INPUT_SIZE, **extra)
    state = dict(state)  # the original .pth files are plain state dicts
    if "pos_embed" not in state:
        raise PfbenchError(
            f"{where}: no 'pos_embed' among its {len(state)} keys; not a DINOv2 ViT checkpoint"
        )
    state["pos_embed"] = resample_pos_embed(state["pos_embed"], INPUT_SIZE // 14)
    state = checkpoint_filter_fn(state, net)  # DINOv2 layout -> timm (mask_token dropped, SwiGLU renamed)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = " ".join(str(err).split())[:240]
        raise PfbenchError(
            f"{where}: does not fit timm {arch.timm_name} ({first}); wrong DINOv2 size?"
        ) from None
    return net.eval().requires_grad_(False)


def to_input(images: Tensor, resize: str) -> Tensor:
    """uint8 (B, 3, H, W) -> normalised float32 (B, 3, 224, 224) as dgm-eval feeds DINOv2."""
    if resize == "pil":
        from PIL import Image

        hwc = images.permute(0, 2, 3, 1).cpu().numpy()  # (B, H, W, 3) uint8
        size = (INPUT_SIZE, INPUT_SIZE)
        out = np.stack([np.asarray(Image.fromarray(im).resize(size, Image.Resampling.BICUBIC)) for im in hwc])
        x = torch.from_numpy(out).permute(0, 3, 1, 2).float() / 255.0  # (B, 3, 224, 224) in [0, 1]
    else:
        x = clean_resize(images, INPUT_SIZE) / 255.0  # (B, 3, 224, 224) float, not quantised
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


class DINOv2:
    """DINOv2 CLS features of uint8 images: ``{"pool": (B, dim)}`` float32 on the CPU.

    Example::

        ext = DINOv2()                              # ViT-L/14, weights resolved offline
        feats = ext(images_uint8)["pool"]           # (B, 1024)

    Args:
        weights: explicit weights file or folder; ``None`` searches ``$PFBENCH_WEIGHTS`` then the
            torch hub cache (``resolve_weights``); nothing is ever downloaded.
        model: weights key in ``ARCHS`` (``"dinov2-vitl14"`` as in the FD-DINOv2 literature).
        resize: ``"pil"`` (dgm-eval default) or ``"clean"``.
        device: where the network runs.
        max_batch: images per forward pass (memory only; features agree to float rounding).
        verify: check the file's sha256 where one is recorded.
    """

    keys: tuple[str, ...] = ("pool",)

    def __init__(
        self,
        weights: str | os.PathLike[str] | None = None,
        *,
        model: str = "dinov2-vitl14",
        resize: str = "pil",
        device: str | torch.device = "cpu",
        max_batch: int = 100,
        verify: bool = True,
    ) -> None:
        if model not in ARCHS:
            raise PfbenchError(f"DINOv2: unknown model {model!r}; known: {', '.join(sorted(ARCHS))}")
        if resize not in RESIZE_MODES:
            raise PfbenchError(f"DINOv2: resize={resize!r} is not one of {RESIZE_MODES}")
        path = resolve_weights(model, weights, verify=verify)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # truncated file, not a torch file, pickled objects
            raise PfbenchError(
                f"DINOv2: cannot read {path} ({type(err).__name__}: {' '.join(str(err).split())[:160]}); "
                f"is it the original {path.name}?"
            ) from None
        if not isinstance(state, dict):
            raise PfbenchError(f"DINOv2: {path} holds a {type(state).__name__}, not a state dict")
        self.arch = ARCHS[model]
        self.model, self.resize, self.max_batch = model, resize, max_batch
        self.device = torch.device(device)
        self.weights_path = Path(path)
        self.weights_sha256 = file_sha256(path)
        self.net = build_dinov2(self.arch, state, str(path)).to(self.device)
        self.dims = {"pool": self.arch.dim}

    def fingerprint(self) -> dict[str, str]:
        return {
            "extractor": f"dinov2 {self.model} (timm {self.arch.timm_name}, depth {self.arch.depth or 'default'})",
            "timm": str(_timm().__version__),
            "weights_sha256": self.weights_sha256,
            "resize": f"{self.resize} bicubic {INPUT_SIZE}, ImageNet mean/std",
            "pos_embed": f"hub bicubic scale (g+{POS_OFFSET})/M, no antialias",
            "pool": "CLS token after final norm",
        }

    @torch.inference_mode()
    def __call__(self, images: Tensor) -> dict[str, Tensor]:
        """CLS features of uint8 (B, 3, H, W) images as float32 CPU (B, dim)."""
        check_images(images, "DINOv2")
        parts = [torch.zeros(0, self.arch.dim)]
        for i in range(0, images.shape[0], self.max_batch):
            x = to_input(images[i : i + self.max_batch], self.resize).to(self.device)  # (b, 3, 224, 224)
            parts.append(self.net(x).float().cpu())  # (b, dim)
        return {"pool": torch.cat(parts)}


def patch_tokens(net: nn.Module, x: Tensor) -> Tensor:
    """Patch tokens of a ``build_dinov2`` network (REPA's target; DINOv2's ``x_norm_patchtokens``).

    Args:
        net: timm DINOv2 ViT from ``build_dinov2`` (or ``DINOv2(...).net``).
        x: (B, 3, 224, 224) ImageNet-normalised input.

    Returns:
        (B, 256, dim): every token after the final LayerNorm, class (and any register) tokens dropped.
    """
    tokens: Tensor = net.forward_features(x)  # type: ignore[operator]  # (B, prefix + 256, dim), final norm applied
    return tokens[:, int(getattr(net, "num_prefix_tokens", 1)) :]


@takes_weights("dinov2-vitl14")
def from_context(ctx: FeatureContext) -> DINOv2:
    """Registry builder ("dinov2"): ViT-L/14, weights ``ctx.weights["dinov2"]`` (always checksum-verified)."""
    return DINOv2(ctx.weights.get("dinov2"), device=ctx.device, max_batch=ctx.batch_size)
