"""Inception-v3 features for the ImageNet metrics (docs/protocol.md §9), through torch-fidelity.

The network is torch-fidelity's ``inception-v3-compat`` (the TF-2015 FID graph, ported). One
forward pass yields the three feature sets the ADM evaluator uses:

- ``pool``: pool3, (B, 2048) — FID, precision/recall, KID;
- ``logits``: ``logits_unbiased`` = pool3 · Wᵀ without bias, (B, 1008) — Inception Score (the ADM
  evaluator and torch-fidelity both drop the bias);
- ``spatial``: TF ``mixed_6/conv`` = torch-fidelity ``Mixed_6d.branch1x1`` output (after BN+ReLU),
  first 7 channels, flattened in TF's NHWC order, (B, 7·17·17 = 2023) — sFID. The NHWC order
  matters only for compatibility with ADM's precomputed ``mu_s``/``sigma_s``.

Resize modes: ``"tf1x"`` (default, docs/protocol.md §9) feeds uint8 images to the network, which resizes them to
299 with TensorFlow-1.x-exact bilinear interpolation (ADM/TTUR-comparable numbers). ``"clean"``
resizes with clean-fid's PIL bicubic float resizer first (clean-fid's "clean" mode) and feeds the
float image to the same network.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pfbench import PfbenchError
from pfbench.encoders.base import FeatureContext, check_images, takes_weights
from pfbench.weights import file_sha256, resolve_weights

INCEPTION_KEY = "inception-v3-compat"
INCEPTION_SIZE = 299
RESIZE_MODES = ("tf1x", "clean")
SPATIAL_CHANNELS = 7  # ADM evaluator: spatial[..., :7]


def clean_resize(images: Tensor, size: int = INCEPTION_SIZE) -> Tensor:
    """clean-fid's "clean" resize: PIL bicubic on each float channel, clipped to [0, 255].

    Args:
        images: uint8 (B, 3, H, W).
        size: output side.

    Returns:
        float32 (B, 3, size, size) in [0, 255] (not quantised).
    """
    from cleanfid.resize import make_resizer

    check_images(images, "clean_resize")
    resize = make_resizer("PIL", False, "bicubic", (size, size))
    hwc = images.permute(0, 2, 3, 1).cpu().numpy()  # (B, H, W, 3) uint8
    out = np.stack([resize(img) for img in hwc])  # (B, size, size, 3) float32
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()  # (B, 3, size, size)


class InceptionV3:
    """torch-fidelity's ``inception-v3-compat`` returning ``pool``, ``logits`` and ``spatial`` features.

    Example::

        net = InceptionV3()                       # weights resolved offline (pfbench.weights)
        feats = net(images_uint8)                 # {"pool": (B, 2048), "logits": (B, 1008), "spatial": (B, 2023)}

    Args:
        weights: explicit weights file or folder; ``None`` searches ``$PFBENCH_WEIGHTS`` then the
            torch hub cache. torch-fidelity is always handed this local path, so it never downloads.
        resize: ``"tf1x"`` (default of docs/protocol.md §9) or ``"clean"``.
        device: where the network runs; features come back on the CPU.
        max_batch: images per forward pass (memory bound only; results do not depend on it beyond
            float rounding of the convolution kernels).
        verify: check the weights' sha256 (turn off only for self-made weights, e.g. in tests).
    """

    keys: tuple[str, ...] = ("pool", "logits", "spatial")
    dims: dict[str, int] = {"pool": 2048, "logits": 1008, "spatial": SPATIAL_CHANNELS * 17 * 17}

    def __init__(
        self,
        weights: str | os.PathLike[str] | None = None,
        *,
        resize: str = "tf1x",
        device: str | torch.device = "cpu",
        max_batch: int = 100,
        verify: bool = True,
    ) -> None:
        if resize not in RESIZE_MODES:
            raise PfbenchError(f"InceptionV3: resize={resize!r} is not one of {RESIZE_MODES}")
        import torch_fidelity
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        path = resolve_weights(INCEPTION_KEY, weights, verify=verify)
        self.weights_path = path
        self.weights_sha256 = file_sha256(path)
        self.resize = resize
        self.device = torch.device(device)
        self.max_batch = max_batch
        try:
            net = FeatureExtractorInceptionV3(
                INCEPTION_KEY, ["2048", "logits_unbiased"], feature_extractor_weights_path=str(path)
            )
        except Exception as err:  # unpickling errors, missing/extra keys of a wrong file
            raise PfbenchError(
                f"InceptionV3: cannot load {path} ({type(err).__name__}: {str(err)[:200]}); "
                f"is it torch-fidelity's {INCEPTION_KEY} state dict?"
            ) from None
        self.net = net.to(self.device).eval()
        self._version = torch_fidelity.__version__
        self._spatial: Tensor | None = None
        self._float_input: Tensor | None = None
        self.net.Mixed_6d.branch1x1.register_forward_hook(self._grab_spatial)
        self.net.Conv2d_1a_3x3.register_forward_pre_hook(self._replace_input)

    def _grab_spatial(self, module: Any, args: Any, out: Tensor) -> None:
        # out: (B, 192, 17, 17) -> first 7 channels in TF's NHWC order, (B, 17·17·7)
        self._spatial = out[:, :SPATIAL_CHANNELS].permute(0, 2, 3, 1).reshape(out.shape[0], -1).float()

    def _replace_input(self, module: Any, args: tuple[Tensor, ...]) -> tuple[Tensor, ...] | None:
        # "clean" mode: the float 299×299 image replaces torch-fidelity's own resize + normalisation
        # ((x - 128) / 128, its comment calls this bit-exact with the TF graph).
        if self._float_input is None:
            return None
        x = self._float_input.to(args[0].device, args[0].dtype)
        return ((x - 128) / 128,)

    def fingerprint(self) -> dict[str, str]:
        return {
            "extractor": f"torch-fidelity {INCEPTION_KEY}",
            "torch_fidelity": self._version,
            "weights_sha256": self.weights_sha256,
            "resize": self.resize,
            "pool": "2048",
            "logits": "logits_unbiased",
            "spatial": "Mixed_6d.branch1x1[:7] NHWC (TF mixed_6/conv)",
        }

    @torch.no_grad()
    def _forward(self, images: Tensor) -> dict[str, Tensor]:
        if self.resize == "clean":
            self._float_input = clean_resize(images)  # (B, 3, 299, 299) float32
            # The uint8 placeholder only carries the batch size; the pre-hook swaps in the float image.
            images = torch.zeros(images.shape[0], 3, 1, 1, dtype=torch.uint8)
        try:
            pool, logits = self.net(images.to(self.device))  # (B, 2048), (B, 1008)
        finally:
            self._float_input = None
        spatial, self._spatial = self._spatial, None
        assert spatial is not None
        return {"pool": pool.cpu(), "logits": logits.cpu(), "spatial": spatial.cpu()}

    def __call__(self, images: Tensor) -> dict[str, Tensor]:
        """Features of uint8 (B, 3, H, W) images, as float32 CPU tensors (see module docstring)."""
        check_images(images, "InceptionV3")
        if images.shape[0] == 0:
            return {k: torch.zeros(0, d) for k, d in self.dims.items()}
        parts = [
            self._forward(images[i : i + self.max_batch]) for i in range(0, images.shape[0], self.max_batch)
        ]
        return {k: torch.cat([p[k] for p in parts]) for k in self.keys}


@takes_weights("inception-v3-compat")
def from_context(ctx: FeatureContext) -> InceptionV3:
    """Registry builder ("inception"): weights ``ctx.weights["inception"]``, ``ctx.resize``, ``ctx.verify``."""
    return InceptionV3(ctx.weights.get("inception"), resize=ctx.resize, device=ctx.device, max_batch=ctx.batch_size,
                       verify=ctx.verify)  # fmt: skip
