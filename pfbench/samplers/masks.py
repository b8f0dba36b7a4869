"""Per-sample randomness and easy masks shared by the masked samplers (docs/protocol.md §6).

The easy mask M marks the lowest-difficulty fraction p of each sample's patches; the difficulty is
``exp(logvar)`` averaged over each patch, and the p-quantile is taken over the pixel-resolution map as
the reference implementation does. The random ablations draw masks of the same size from per-sample keys.
"""

from __future__ import annotations

import functools
import hashlib

import torch
import torch.nn.functional as F
from torch import Tensor

from pfbench import PfbenchError
from pfbench.types import ModelOut

# ----------------------------------------------------------------------------------------------------
# per-sample randomness


def mix_seed(*parts: int | str) -> int:
    """A 63-bit seed that depends only on ``parts`` (e.g. (seed, sample index, purpose))."""
    digest = hashlib.blake2b("|".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def sample_generator(key: int, *salt: int | str) -> torch.Generator:
    """A CPU generator for one sample's randomness, seeded from its key and a purpose ``salt``."""
    return torch.Generator().manual_seed(mix_seed(key, *salt))


def require_keys(keys: Tensor | None, batch: int, who: str) -> list[int]:
    """Validates per-sample keys (B,) int64 and returns them as Python ints."""
    if keys is None:
        raise PfbenchError(
            f"sampler {who!r} draws random numbers and needs per-sample keys; pass keys=(B,) int64 "
            "(pfbench.sample.generate derives them from (seed, sample index))"
        )
    if keys.shape != (batch,):
        raise PfbenchError(f"sampler {who!r} got keys of shape {tuple(keys.shape)}, expected ({batch},)")
    return [int(k) for k in keys.tolist()]


# ----------------------------------------------------------------------------------------------------
# difficulty


def patch_difficulty(logvar: Tensor, patch: int) -> Tensor:
    """d = exp(logvar) averaged over each patch's p×p pixels: (B, 1, H, W) -> (B, T) float64."""
    d = F.avg_pool2d(logvar.double().exp(), kernel_size=patch)  # (B, 1, H/p, W/p)
    return d.flatten(1)  # (B, T), row-major


# torch.quantile refused inputs of more than 2^24 elements in some releases; the pixel-resolution map
# is T·patch² values per sample, so large batches are split into row chunks below that size.
QUANTILE_MAX_ELEMENTS = 1 << 24


def difficulty_mask(difficulty: Tensor, p: float, patch: int) -> Tensor:
    """Easy mask M = d < quantile_p per sample, (B, T) bool (docs/protocol.md §6).

    As in the reference, the quantile is taken over the pixel-resolution difficulty map: the T patch
    values of a row, each repeated patch² times (B, T·patch²), in float64 with linear interpolation;
    the comparison is strict. This is not the quantile of the T values once (at T = 64, p = 0.4 it
    marks 25 patches easy, not 26). p = 0 gives an empty mask; p = 1 leaves out the hardest patch.

    Args:
        difficulty: per-patch difficulty d, (B, T).
        p: quantile level in [0, 1].
        patch: patch size; each patch covers patch² pixels of the map.
    """
    d = difficulty.double()  # (B, T)
    width = d.shape[1] * patch * patch  # pixels per sample
    rows = max(1, QUANTILE_MAX_ELEMENTS // max(width, 1))
    q = torch.cat(
        [
            torch.quantile(
                chunk.repeat_interleave(patch * patch, dim=1), p, dim=1, keepdim=True, interpolation="linear"
            )  # (b, 1) over the (b, T·patch²) pixel map
            for chunk in d.split(rows)
        ]
    )  # (B, 1)
    return d < q


@functools.lru_cache(maxsize=512)
def easy_count(tokens: int, p: float, patch: int) -> int:
    """How many patches ``difficulty_mask`` marks easy when the T values are distinct.

    Computed by running ``difficulty_mask`` on the distinct values 0..T−1, so it follows the same
    quantile arithmetic (e.g. 25 of 64 patches at p = 0.4, patch 2; 102 of 256).
    """
    ranks = torch.arange(tokens, dtype=torch.float64)[None]  # (1, T), distinct
    return int(difficulty_mask(ranks, p, patch).sum())


def random_mask(
    keys: list[int], step: int, tokens: int, p: float, patch: int, salt: str, device: torch.device
) -> Tensor:
    """Uniformly random easy mask of the same size as the difficulty mask, (B, T) bool.

    The size is ``easy_count(tokens, p, patch)``. Sample i's mask at outer step k depends only on
    (keys[i], k, salt).
    """
    k = easy_count(tokens, p, patch)
    mask = torch.zeros(len(keys), tokens, dtype=torch.bool)
    for i, key in enumerate(keys):
        perm = torch.randperm(tokens, generator=sample_generator(key, salt, step))
        mask[i, perm[:k]] = True
    return mask.to(device)


def require_logvar(out: ModelOut, who: str) -> Tensor:
    """The logvar of a call, or a one-line error when the model has no difficulty head."""
    if out.logvar is None:
        raise PfbenchError(
            f"sampler {who!r} needs a difficulty map, but the model returned no logvar; use a PF model "
            f"with a difficulty head, or the random-mask ablation {who}_random"
        )
    return out.logvar
