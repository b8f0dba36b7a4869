"""SD-VAE latent space of ImageNet-256 models (docs/protocol.md §1): pixels ↔ latents through diffusers' AutoencoderKL.

The weights resolve offline (``pfbench.weights``): a known name (``sd-vae-ft-ema``, ``sd-vae-ft-mse``) is
looked up in an explicit path, ``$PFBENCH_WEIGHTS/<name>/`` and the Hugging Face hub cache; a path may also
name a diffusers folder (``config.json`` + ``diffusion_pytorch_model.safetensors``) or a bare
``.safetensors`` file with the Stable Diffusion VAE architecture. Nothing is downloaded.

Latents are scaled by ``scaling_factor`` (0.18215 for SD-VAE), as DiT/SiT/REPA/PF train on
``vae.encode(x).latent_dist.sample() · 0.18215`` and decode ``z / 0.18215``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pfbench import PfbenchError

# Stable Diffusion's VAE (kl-f8): the architecture of sd-vae-ft-ema / sd-vae-ft-mse.
SD_VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2,
    "act_fn": "silu",
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 256,
    "scaling_factor": 0.18215,
}
_FILE = "diffusion_pytorch_model.safetensors"


@dataclass
class Vae:
    """A frozen VAE and what identifies it.

    Attributes:
        module: diffusers ``AutoencoderKL`` (eval mode, no grad).
        name: how it was asked for (known name or path). sha256: of the weights file.
        scale: latent scaling factor. factor: spatial down-sampling (8 for SD-VAE).
    """

    module: Any  # diffusers.AutoencoderKL (typed loosely: diffusers is an optional dependency)
    name: str
    sha256: str
    scale: float
    factor: int

    @property
    def channels(self) -> int:
        return int(self.module.config.latent_channels)

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    @torch.no_grad()
    def moments(self, pixels: Tensor) -> tuple[Tensor, Tensor]:
        """Posterior mean and std, unscaled: pixels (B, 3, R, R) in [−1, 1] → two (B, C, R/f, R/f) float32."""
        dist = self.module.encode(pixels.to(self.device, torch.float32)).latent_dist
        return dist.mean.float(), dist.std.float()

    @torch.no_grad()
    def decode(self, z: Tensor) -> Tensor:
        """Scaled latents (B, C, h, w) → pixels (B, 3, h·f, w·f) float32, nominally in [−1, 1]."""
        return self.module.decode(z.to(self.device, torch.float32) / self.scale).sample.float()


def vae_weights_file(ref: str) -> Path:
    """The weights file of a VAE reference (known name resolved offline, diffusers folder or file)."""
    from pfbench.weights import KNOWN_WEIGHTS, resolve_weights

    if ref in KNOWN_WEIGHTS:
        return resolve_weights(ref)
    path = Path(ref).expanduser()
    if path.is_dir():
        path = path / _FILE
    if not path.is_file():
        known = ", ".join(k for k in KNOWN_WEIGHTS if k.startswith("sd-vae"))
        raise PfbenchError(f"VAE {ref!r}: no file {path}; give a diffusers VAE folder, a .safetensors file "
                           f"or a known name ({known})")
    return path


def _weights_and_config(ref: str) -> tuple[Path, dict[str, Any]]:
    path = vae_weights_file(ref)
    config_file = path.parent / "config.json"
    if not config_file.is_file():
        return path, dict(SD_VAE_CONFIG)
    try:
        config = json.loads(config_file.read_text())
    except ValueError as err:
        raise PfbenchError(f"VAE config {config_file} is not valid JSON: {err}") from None
    return path, {k: v for k, v in config.items() if not k.startswith("_")}


def load_vae(ref: str, device: torch.device | str = "cpu") -> Vae:
    """Loads a frozen AutoencoderKL from local files (never downloads).

    Args:
        ref: known name (``sd-vae-ft-ema``), diffusers folder or ``.safetensors`` file.
        device: where it runs.

    Raises:
        PfbenchError: diffusers missing, weights not found, unreadable or not matching the config.
    """
    try:
        from diffusers import AutoencoderKL
    except ImportError:
        raise PfbenchError("the VAE needs diffusers: pip install 'pfbench[imagenet]'") from None
    from safetensors.torch import load_file

    from pfbench.weights import file_sha256

    path, config = _weights_and_config(ref)
    try:
        state = load_file(str(path))
    except Exception as err:  # safetensors raises its own error types for truncated/corrupt files
        raise PfbenchError(f"VAE weights {path} are unreadable ({type(err).__name__}: {err}); fetch them again") \
            from None
    try:
        module = AutoencoderKL.from_config(config)
        module.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, ValueError) as err:
        first = str(err).strip().splitlines()[0]
        raise PfbenchError(f"VAE weights {path} do not fit its config: {first}") from None
    module = module.to(device).eval().requires_grad_(False)
    factor = 2 ** (len(config["block_out_channels"]) - 1)
    scale = float(config.get("scaling_factor", SD_VAE_CONFIG["scaling_factor"]))
    return Vae(module, ref, file_sha256(path), scale, factor)


__all__ = ["SD_VAE_CONFIG", "Vae", "load_vae", "vae_weights_file"]
