"""The heterogeneity knob of the embedded dataset (``EmbeddedSpec.heterogeneity``) and its data-side measure.

``h`` in [0, 1]; ``DEFAULT_HETEROGENEITY`` (0.5) is the generator as it always was: this module then changes
nothing, so images, cell keys and committed results at the default stay what they were.

- Below the default (toward homogeneous images): a share ``1 - 2h`` of the images gets a textured background
  (stripes, checks or dots of a shade of the background colour: hard everywhere, like a textured object) and
  objects grow by up to 25 %, so easy and hard regions look alike. At ``h = 0`` every background is textured.
- Above it (toward heterogeneous images): a share ``2h - 1`` of the images gets a flat background and a textured
  object (a solid one is given a texture), so hard patches (the whole object) sit on a trivially easy rest. At
  ``h = 1`` every image is a textured object on a flat background. Object sizes stay as they are: smaller
  objects would also lower the share of hard patches, and with it their spread (``hard_share_stats``).

The extra draws come from a stream of their own per parameter block, seeded by ``(seed, split, block)``, and
are made whatever ``h`` is, so image ``i`` depends only on ``(seed, split, resolution, heterogeneity, i)``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from pfbench import PfbenchError

DEFAULT_HETEROGENEITY = 0.5
_SIZE = 0.25  # largest relative growth of the object radius (at h = 0)
_STREAM = 0x4E7E  # the extra draws' stream tag (the default draws use 0x5EED)


def check_heterogeneity(h: object, where: str = "embedded dataset") -> float:
    """``h`` as a float in [0, 1].

    Raises:
        PfbenchError: not a number in [0, 1].
    """
    if isinstance(h, bool) or not isinstance(h, int | float) or not math.isfinite(h) or not 0.0 <= h <= 1.0:
        raise PfbenchError(f"{where}: heterogeneity={h!r} is invalid; use a number in [0, 1] "
                           f"(default {DEFAULT_HETEROGENEITY}: the images as they always were)")
    return float(h)


def vary_params(p: dict[str, np.ndarray], h: float, seed: int, split: int, block: int) -> dict[str, np.ndarray]:
    """The parameters of one block of ``_BLOCK`` images at heterogeneity ``h`` (``p`` itself at the default).

    Adds ``bg_tex`` (0 = plain background, else a texture kind), ``bg_tex_a``, ``bg_tex_b``, ``bg_tex_phase``
    and grows ``scale`` below the default; changes ``bg_kind`` and ``tex`` above it.
    """
    if h == DEFAULT_HETEROGENEITY:
        return p
    n, f4, i8 = p["label"].shape[0], np.float32, np.int64
    rng = np.random.default_rng(np.random.SeedSequence([seed, split, block, _STREAM]))
    pick = rng.uniform(0.0, 1.0, n)  # which images change
    kind = rng.integers(1, 4, n)  # texture of a changed background or of a formerly solid object
    tex_a, tex_b, phase = rng.integers(0, 4, n), rng.integers(0, 2, n), rng.integers(0, 8, (n, 2))
    q = dict(p)
    share = abs(2.0 * h - 1.0)
    on = pick < share
    if h < DEFAULT_HETEROGENEITY:
        q["scale"] = (p["scale"] * f4(1.0 + _SIZE * share)).astype(f4)
        q["bg_tex"] = np.where(on, kind, 0).astype(i8)
        q["bg_tex_a"], q["bg_tex_b"], q["bg_tex_phase"] = tex_a.astype(i8), tex_b.astype(i8), phase.astype(i8)
    else:
        q["bg_kind"] = np.where(on, 0, p["bg_kind"]).astype(i8)
        q["tex"] = np.where(on & (p["tex"] == 0), kind, p["tex"]).astype(i8)
    return q


def patch_hard_share(hard: Tensor, patch: int = 2) -> Tensor:
    """Share of hard pixels in each ``patch`` x ``patch`` patch: (N, 1, H, W) bool -> (N, T) float64."""
    if hard.ndim != 4 or hard.shape[-1] % patch or hard.shape[-2] % patch:
        raise PfbenchError(f"patch_hard_share: hard masks (N, 1, H, W) with H, W multiples of {patch}, "
                           f"got {tuple(hard.shape)}")
    return torch.nn.functional.avg_pool2d(hard.double().mean(1, keepdim=True), patch).flatten(1)


def hard_share_stats(hard: Tensor, patch: int = 2) -> dict[str, float]:
    """How heterogeneous the images are, from the generator's hard masks, per ``patch`` x ``patch`` patch.

    Returns:
        ``hard_share_mean``: mean share of hard pixels over all patches; ``hard_share_spread``: the mean over
        images of the standard deviation of the share across one image's patches (what an adaptive sampler,
        choosing patches within an image, can exploit); ``hard_share_easy``: share of patches with no hard pixel.
    """
    s = patch_hard_share(hard, patch)  # (N, T)
    return {"hard_share_mean": float(s.mean()), "hard_share_spread": float(s.std(dim=1, correction=0).mean()),
            "hard_share_easy": float((s == 0).double().mean())}


__all__ = ["DEFAULT_HETEROGENEITY", "check_heterogeneity", "hard_share_stats", "patch_hard_share", "vary_params"]
