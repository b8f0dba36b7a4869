"""Embedded procedural dataset: class-conditional shapes on smooth backgrounds, no downloads.

Class = object shape. Colour, texture, size, position and background are random per image and
independent of the class; each image gets a caption that names all of them (text-to-image path).

Images are spatially heterogeneous on purpose: large EASY regions (flat or smooth low-frequency backgrounds)
and small HARD regions (the object's anti-aliased edge band, thin parts, and textured interiors), as unlike as
``EmbeddedSpec.heterogeneity`` says. ``EmbeddedBatch.hard`` marks exactly the hard pixels.

Determinism: the parameters of image ``i`` come from the RNG of its block of ``_BLOCK`` images, seeded by
``(seed, split, block)`` (a non-default heterogeneity: also its own stream); rendering then uses only IEEE
correctly-rounded operations (+, -, *, /, sqrt, min, max, floor) per pixel, so image ``i`` depends only on
``(seed, split, resolution, heterogeneity, i)`` and never on ``start``/``stop``/``size`` or chunking.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from pfbench import PfbenchError
from pfbench.data.heterogeneity import DEFAULT_HETEROGENEITY, check_heterogeneity, vary_params

CLASS_NAMES: tuple[str, ...] = (
    "disk", "square", "triangle", "ring", "cross",
    "diamond", "double bar", "star", "crescent", "L shape",
)  # fmt: skip
NUM_CLASSES = len(CLASS_NAMES)

COLOR_NAMES: tuple[str, ...] = (
    "red", "orange", "yellow", "green", "cyan", "blue",
    "purple", "pink", "white", "black", "gray", "brown",
)  # fmt: skip
_PALETTE = np.array(
    [[0.86, 0.12, 0.12], [0.96, 0.55, 0.10], [0.96, 0.90, 0.16], [0.16, 0.68, 0.22],
     [0.12, 0.82, 0.86], [0.14, 0.24, 0.86], [0.56, 0.20, 0.76], [0.97, 0.55, 0.74],
     [0.95, 0.95, 0.95], [0.07, 0.07, 0.07], [0.50, 0.50, 0.50], [0.50, 0.30, 0.12]],
    dtype=np.float32,
)  # fmt: skip  # (12, 3) RGB in [0, 1]
_LUMA = _PALETTE @ np.array([0.299, 0.587, 0.114], dtype=np.float32)  # (12,)
# Object/background pairs must contrast: RGB distance and a luminance gap.
_DIST = np.linalg.norm(_PALETTE[:, None] - _PALETTE[None], axis=-1)
_COMPAT = (_DIST > 0.55) & (np.abs(_LUMA[:, None] - _LUMA[None]) > 0.12)  # (12, 12) bool
_COMPAT_COUNT = _COMPAT.sum(1)  # (12,)
_COMPAT_TABLE = np.stack([np.resize(np.flatnonzero(r), _PALETTE.shape[0]) for r in _COMPAT])  # (12, 12)

TEXTURE_NAMES: tuple[str, ...] = ("solid", "striped", "checkered", "dotted")
_TEXTURE_P = (0.4, 0.2, 0.2, 0.2)
_BG_P = (0.3, 0.4, 0.3)  # flat, linear gradient, radial gradient
_SPLITS = {"train": 0, "test": 1}
_BLOCK = 1024  # images per parameter block (one RNG per block)
_CHUNK = 4096  # images rendered at once (memory bound only; does not change results)
_EDGE_BAND = 1.0  # pixels within this distance of the boundary are hard
_MAX_SHIFT = 0.08  # centre jitter, fraction of the image side
_POS_WORD = 0.03  # |shift| above this gets a position word
_MAX_ROT = math.radians(12.0)


def _star(n: int, r_out: float, r_in: float) -> np.ndarray:
    a = [-math.pi / 2 + k * math.pi / n for k in range(2 * n)]
    return np.array([[(r_out if k % 2 == 0 else r_in) * math.cos(t), (r_out if k % 2 == 0 else r_in) * math.sin(t)]
                     for k, t in enumerate(a)])  # fmt: skip


# Polygons in object units (y points down, like image rows); the object fits the unit disk.
_TRIANGLE = np.array([[0.0, -1.0], [0.866, 0.5], [-0.866, 0.5]]) + [0.0, 0.12]
_STAR = _star(5, 1.0, 0.45) + [0.0, 0.08]
_L_SHAPE = np.array([[-0.7, -0.9], [-0.15, -0.9], [-0.15, 0.35], [0.75, 0.35], [0.75, 0.9], [-0.7, 0.9]])


@dataclass(frozen=True)
class EmbeddedSpec:
    """Which slice of the embedded dataset to generate.

    Attributes:
        resolution: image side in pixels, a multiple of 4 in [8, 64]; 16 is the CPU default
            (64 tokens at patch 2), 32 gives the 256-token grid of ImageNet-256 latents.
        split: "train" or "test"; the splits use disjoint RNG streams.
        size: number of images in the split.
        seed: dataset seed (non-negative).
        heterogeneity: in [0, 1], how unlike easy and hard regions are (``pfbench.data.heterogeneity``); the
            default 0.5 is the dataset as it always was.
    """

    resolution: int = 16
    split: str = "train"
    size: int = 50_000
    seed: int = 0
    heterogeneity: float = DEFAULT_HETEROGENEITY


@dataclass(frozen=True, eq=False)
class EmbeddedBatch:
    """Generated images with labels, hard-pixel masks and captions.

    Attributes:
        images: (N, 3, H, W) float32 in [-1, 1].
        labels: (N,) int64 in [0, NUM_CLASSES).
        hard: (N, 1, H, W) bool, pixels the generator knows are hard (edges, thin parts, texture).
        captions: N strings, each naming size, colour, texture, class, position and background.
    """

    images: Tensor
    labels: Tensor
    hard: Tensor
    captions: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def _check(spec: EmbeddedSpec, start: int, stop: int) -> None:
    r = spec.resolution
    if not isinstance(r, int) or r % 4 != 0 or not 8 <= r <= 64:
        raise PfbenchError(f"embedded dataset: resolution={r!r} is invalid; use a multiple of 4 in [8, 64]")
    if spec.split not in _SPLITS:
        raise PfbenchError(f"embedded dataset: split={spec.split!r} is invalid; use 'train' or 'test'")
    if spec.size < 0 or spec.seed < 0:
        raise PfbenchError(f"embedded dataset: size={spec.size}, seed={spec.seed} must be >= 0")
    if not 0 <= start <= stop <= spec.size:
        raise PfbenchError(
            f"embedded dataset: slice [{start}, {stop}) is outside [0, {spec.size}]; pass 0 <= start <= stop <= size"
        )
    check_heterogeneity(spec.heterogeneity)


def _block_params(seed: int, split: int, block: int) -> dict[str, np.ndarray]:
    """All per-image parameters of one block; always drawn in full and in this fixed order."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, split, block, 0x5EED]))
    n, f4 = _BLOCK, np.float32
    rot = rng.uniform(-_MAX_ROT, _MAX_ROT, n)
    bg_dir = rng.uniform(0.0, 2 * math.pi, n)
    obj = rng.integers(0, len(COLOR_NAMES), n)
    p: dict[str, np.ndarray] = {
        "label": rng.permutation(np.arange(n) % NUM_CLASSES),
        "shift": rng.uniform(-_MAX_SHIFT, _MAX_SHIFT, (n, 2)),  # (n, 2) x, y fractions of the side
        "scale": rng.uniform(0.26, 0.36, n),  # object radius, fraction of the side
        "cos": np.cos(rot), "sin": np.sin(rot),
        "obj": obj,
        "bg": _COMPAT_TABLE[obj, rng.integers(0, 1 << 30, n) % _COMPAT_COUNT[obj]],
        "obj_jit": rng.uniform(-0.05, 0.05, (n, 3)), "bg_jit": rng.uniform(-0.05, 0.05, (n, 3)),
        "bg_kind": rng.choice(3, n, p=_BG_P),
        "bg_shade": rng.uniform(0.15, 0.3, n),
        "bg_dir": np.stack([np.cos(bg_dir), np.sin(bg_dir)], 1),  # (n, 2)
        "bg_center": rng.uniform(0.0, 1.0, (n, 2)),
        "tex": rng.choice(4, n, p=_TEXTURE_P),
        "tex_a": rng.integers(0, 4, n),  # stripe direction
        "tex_b": rng.integers(0, 2, n),  # period choice
        "tex_phase": rng.integers(0, 8, (n, 2)),
    }  # fmt: skip
    return {k: (v.astype(f4) if v.dtype.kind == "f" else v.astype(np.int64)) for k, v in p.items()}


def _params(spec: EmbeddedSpec, start: int, stop: int) -> dict[str, np.ndarray]:
    split = _SPLITS[spec.split]
    first, last = start // _BLOCK, max(start, stop - 1) // _BLOCK
    parts = []
    for b in range(first, last + 1):
        lo, hi = max(start - b * _BLOCK, 0), max(min(stop - b * _BLOCK, _BLOCK), 0)
        block = vary_params(_block_params(spec.seed, split, b), spec.heterogeneity, spec.seed, split, b)
        parts.append({k: v[lo:hi] for k, v in block.items()})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _sd_box(x: np.ndarray, y: np.ndarray, bx: float, by: float) -> np.ndarray:
    qx, qy = np.abs(x) - bx, np.abs(y) - by
    outside = np.sqrt(np.maximum(qx, 0) ** 2 + np.maximum(qy, 0) ** 2)
    return outside + np.minimum(np.maximum(qx, qy), 0)


def _sd_polygon(x: np.ndarray, y: np.ndarray, verts: np.ndarray) -> np.ndarray:
    """Exact signed distance to a simple polygon (negative inside), vectorised over pixels."""
    v = [(float(a), float(b)) for a, b in verts]
    d, sign = (x - v[0][0]) ** 2 + (y - v[0][1]) ** 2, np.ones_like(x)
    for i in range(len(v)):
        (xi, yi), (xj, yj) = v[i], v[i - 1]
        ex, ey = xj - xi, yj - yi
        wx, wy = x - xi, y - yi
        t = np.clip((wx * ex + wy * ey) * (1.0 / (ex * ex + ey * ey)), 0.0, 1.0)
        d = np.minimum(d, (wx - ex * t) ** 2 + (wy - ey * t) ** 2)
        c1, c2, c3 = y >= yi, y < yj, ex * wy > ey * wx
        sign = np.where((c1 & c2 & c3) | (~c1 & ~c2 & ~c3), -sign, sign)
    return sign * np.sqrt(d)


def _sd_shape(c: int, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Signed distance of class ``c`` in object units (x, y: (n, H, W) float32)."""
    r = np.sqrt(x * x + y * y)
    if c == 0:
        return r - 0.85
    if c == 1:
        return _sd_box(x, y, 0.72, 0.72)
    if c == 2:
        return _sd_polygon(x, y, _TRIANGLE)
    if c == 3:
        return np.abs(r - 0.72) - 0.24
    if c == 4:
        return np.minimum(_sd_box(x, y, 0.95, 0.27), _sd_box(x, y, 0.27, 0.95))
    if c == 5:
        h = math.sqrt(0.5)
        return _sd_box(h * (x + y), h * (y - x), 0.68, 0.68)
    if c == 6:
        return np.minimum(_sd_box(x, y - 0.45, 0.95, 0.22), _sd_box(x, y + 0.45, 0.95, 0.22))
    if c == 7:
        return _sd_polygon(x, y, _STAR)
    if c == 8:
        return np.maximum(r - 0.9, 0.78 - np.sqrt((x - 0.45) ** 2 + (y + 0.12) ** 2))
    return _sd_polygon(x, y, _L_SHAPE)


def _texture(kind: int, p: dict[str, np.ndarray], ix: np.ndarray, iy: np.ndarray, res: int) -> np.ndarray:
    """Texture weight in [0, 1] (1 = secondary colour), (n, H, W), for rows of one texture kind."""
    k = max(1, (res + 8) // 16)  # pixel periods grow with resolution: >= 2 px at 16
    a, b = p["tex_a"][:, None, None], p["tex_b"][:, None, None].astype(np.float32)
    px, py = (p["tex_phase"][:, i, None, None].astype(np.float32) for i in (0, 1))
    if kind == 1:  # stripes of period k*{2,3} along rows, columns or diagonals
        u = np.select([a == 0, a == 1, a == 2], [iy + 0 * ix, ix + 0 * iy, ix + iy], ix - iy + res) + px
        per = k * (2 + b)
        return (np.mod(u, per) < per * 0.5).astype(np.float32)
    if kind == 2:  # checker with cells of k*{1,2} px
        cell = k * (1 + b)
        return np.mod(np.floor((ix + px) / cell) + np.floor((iy + py) / cell), 2.0)
    # dots: disks of radius ~0.6k px on a lattice of spacing k*{3,4}
    sp = k * (3 + b)
    dx, dy = np.mod(ix + px, sp) - (sp - 1) * 0.5, np.mod(iy + py, sp) - (sp - 1) * 0.5
    return np.clip(0.6 * k + 0.5 - np.sqrt(dx * dx + dy * dy), 0.0, 1.0)


def _object_sdf(c: int, p: dict[str, np.ndarray], ix: np.ndarray, iy: np.ndarray, res: int) -> np.ndarray:
    """Signed distance in pixels to the object, (n, H, W), for rows of class ``c``."""
    col = lambda a: a[:, None, None]  # noqa: E731  (n,) -> (n, 1, 1)
    s = col(p["scale"]) * res  # object radius in pixels
    dx = ix + 0.5 - (0.5 + col(p["shift"][:, 0])) * res  # (n, 1, W) from pixel centres
    dy = iy + 0.5 - (0.5 + col(p["shift"][:, 1])) * res  # (n, H, 1)
    u = (col(p["cos"]) * dx + col(p["sin"]) * dy) / s  # (n, H, W) object units
    v = (col(p["cos"]) * dy - col(p["sin"]) * dx) / s
    return _sd_shape(c, u, v) * s


def _background(p: dict[str, np.ndarray], ix: np.ndarray, iy: np.ndarray, res: int) -> np.ndarray:
    """Smooth background weight in [0, 1], (n, H, W): flat, linear or radial per row."""
    col = lambda a: a[:, None, None]  # noqa: E731
    gx, gy = (ix + 0.5) / res - 0.5, (iy + 0.5) / res - 0.5  # (1, 1, W), (1, H, 1) in [-0.5, 0.5]
    g = np.zeros((p["bg_kind"].shape[0], res, res), np.float32)
    lin, rad = p["bg_kind"] == 1, p["bg_kind"] == 2
    d = p["bg_dir"][lin]
    g[lin] = 0.5 + (col(d[:, 0]) * gx + col(d[:, 1]) * gy) * 0.7071
    c = p["bg_center"][rad]
    rx, ry = gx + 0.5 - col(c[:, 0]), gy + 0.5 - col(c[:, 1])
    g[rad] = np.minimum(np.sqrt(rx * rx + ry * ry) * 0.9, 1.0)
    return g


def _render(p: dict[str, np.ndarray], res: int) -> tuple[np.ndarray, np.ndarray]:
    """Render images (n, 3, H, W) float32 in [0, 1] and hard masks (n, H, W) bool."""
    n = p["label"].shape[0]
    ix = np.arange(res, dtype=np.float32)[None, None, :]  # (1, 1, W)
    iy = np.arange(res, dtype=np.float32)[None, :, None]  # (1, H, 1)
    sdf = np.empty((n, res, res), np.float32)
    for c in range(NUM_CLASSES):  # group rows by class: one SDF per group
        rows = np.flatnonzero(p["label"] == c)
        if rows.size:
            sdf[rows] = _object_sdf(c, {k: v[rows] for k, v in p.items()}, ix, iy, res)
    tex = np.zeros((n, res, res), np.float32)
    for kind in (1, 2, 3):
        rows = np.flatnonzero(p["tex"] == kind)
        if rows.size:
            tex[rows] = _texture(kind, {k: v[rows] for k, v in p.items()}, ix, iy, res)
    bg_tex = p.get("bg_tex", np.zeros(n, np.int64))  # heterogeneity below the default: textured backgrounds
    btex = np.zeros((n, res, res), np.float32) if bg_tex.any() else None
    for kind, rows in ((k, np.flatnonzero(bg_tex == k)) for k in ((1, 2, 3) if btex is not None else ())):
        btex[rows] = _texture(kind, {k: p["bg_" + k][rows] for k in ("tex_a", "tex_b", "tex_phase")}, ix, iy, res)
    # --- per-image colours, (n, 3) float32 in [0, 1]
    obj = np.clip(_PALETTE[p["obj"]] + p["obj_jit"], 0.0, 1.0)
    bg0 = np.clip(_PALETTE[p["bg"]] + p["bg_jit"], 0.0, 1.0)
    # texture colour: a dark or light shade of obj, whichever stays farther from both obj and bg
    dark, light = obj * 0.3, obj + 0.65 * (1.0 - obj)
    score = lambda c: np.minimum(np.abs(c - obj).sum(1), np.abs(c - bg0).sum(1))  # noqa: E731
    second = np.where((score(dark) >= score(light))[:, None], dark, light)
    sign = np.where(_LUMA[p["bg"]] > 0.5, np.float32(-1.0), np.float32(1.0))
    bg1 = np.clip(bg0 + (sign * p["bg_shade"])[:, None], 0.0, 1.0)  # gradient end colour
    # --- composite: bg + cover * (fg - bg), fg = obj + tex * (second - obj)
    c4 = lambda a: a[:, :, None, None]  # noqa: E731  (n, 3) -> (n, 3, 1, 1)
    cover = np.clip(0.5 - sdf, 0.0, 1.0)[:, None]  # (n, 1, H, W) anti-aliased coverage
    img = c4(bg1 - bg0) * _background(p, ix, iy, res)[:, None]  # (n, 3, H, W)
    img += c4(bg0)
    if btex is not None:  # a dark or light shade of the background colour, away from its luminance
        bsec = np.where((_LUMA[p["bg"]] > 0.5)[:, None], bg0 * 0.35, bg0 + 0.6 * (1.0 - bg0))
        img += c4(bsec - bg0) * btex[:, None]
    fg = c4(second - obj) * tex[:, None]
    fg += c4(obj)
    fg -= img
    fg *= cover
    img += fg
    hard = (np.abs(sdf) < _EDGE_BAND) | ((p["tex"] > 0)[:, None, None] & (sdf < 0))
    hard |= (bg_tex > 0)[:, None, None] & (sdf >= 0)
    return img, hard


def _captions(p: dict[str, np.ndarray]) -> tuple[str, ...]:
    out = []
    for i in range(p["label"].shape[0]):
        sc, (sx, sy) = float(p["scale"][i]), (float(v) for v in p["shift"][i])
        size = "small " if sc < 0.29 else "large " if sc > 0.33 else ""
        vert = "top" if sy < -_POS_WORD else "bottom" if sy > _POS_WORD else ""
        hor = "left" if sx < -_POS_WORD else "right" if sx > _POS_WORD else ""
        pos = f"at the {vert} {hor}" if vert and hor else f"at the {vert}" if vert else (
            f"on the {hor}" if hor else "in the center")
        bgc, kind = COLOR_NAMES[p["bg"][i]], int(p["bg_kind"][i])
        bg = (f"plain {bgc}", f"smooth {bgc} gradient", f"{bgc} radial gradient")[kind]
        bg = f"{TEXTURE_NAMES[p['bg_tex'][i]]} {bg}" if "bg_tex" in p and p["bg_tex"][i] else bg
        out.append(f"a {size}{COLOR_NAMES[p['obj'][i]]} {TEXTURE_NAMES[p['tex'][i]]} "
                   f"{CLASS_NAMES[p['label'][i]]} {pos} on a {bg} background")  # fmt: skip
    return tuple(out)


def generate(spec: EmbeddedSpec, start: int = 0, stop: int | None = None) -> EmbeddedBatch:
    """Generate images ``[start, stop)`` of the split described by ``spec``.

    Args:
        spec: dataset spec (resolution, split, size, seed, heterogeneity).
        start: first image index.
        stop: one past the last index; ``None`` means ``spec.size``.

    Returns:
        The batch; image ``i`` depends only on ``(seed, split, resolution, heterogeneity, i)``.

    Raises:
        PfbenchError: invalid resolution, split, size, seed, heterogeneity or slice.
    """
    stop = spec.size if stop is None else stop
    _check(spec, start, stop)
    p = _params(spec, start, stop)
    n, res = stop - start, spec.resolution
    images = np.empty((n, 3, res, res), np.float32)
    hard = np.empty((n, res, res), bool)
    for lo in range(0, n, _CHUNK):
        sl = slice(lo, min(lo + _CHUNK, n))
        images[sl], hard[sl] = _render({k: v[sl] for k, v in p.items()}, res)
    x = torch.from_numpy(images).mul_(2.0).sub_(1.0).clamp_(-1.0, 1.0)  # [0, 1] -> [-1, 1]
    return EmbeddedBatch(
        images=x,
        labels=torch.from_numpy(p["label"].copy()),
        hard=torch.from_numpy(hard)[:, None],
        captions=_captions(p),
    )
