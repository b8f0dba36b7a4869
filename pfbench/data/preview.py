"""PNG contact sheet of the embedded dataset, one labelled tile per image (for eyeballing the data)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pfbench import PfbenchError
from pfbench.data.embedded import CLASS_NAMES, EmbeddedSpec, generate
from pfbench.io import atomic_write
from pfbench.types import quantize

_LABEL_H = 12  # pixels of the text strip under each tile
_PAD = 2


def preview(
    spec: EmbeddedSpec, path: str | Path, n: int = 64, *, scale: int = 4, show_hard: bool = False
) -> Path:
    """Write a grid of the first ``n`` images of ``spec`` as a PNG, class name under each tile.

    Args:
        spec: dataset spec; images ``[0, n)`` are shown.
        path: output PNG path (parent folders are created; the write is atomic).
        n: number of tiles, 1 <= n <= spec.size.
        scale: nearest-neighbour upscale factor so that 16x16 images are visible.
        show_hard: also draw each image's hard-pixel mask (white = hard) to the right of it.

    Returns:
        The path written.

    Raises:
        PfbenchError: ``n`` or ``scale`` out of range, or the spec is invalid.
    """
    if not 1 <= n <= spec.size:
        raise PfbenchError(f"preview: n={n} must be in [1, spec.size={spec.size}]; pass a smaller n")
    if not 1 <= scale <= 32:
        raise PfbenchError(f"preview: scale={scale} must be in [1, 32]")
    batch = generate(spec, 0, n)
    imgs = quantize(batch.images).numpy()  # (n, 3, H, W)
    imgs = imgs.transpose(0, 2, 3, 1)  # (n, H, W, 3)
    if show_hard:
        mask = np.repeat(batch.hard.numpy().transpose(0, 2, 3, 1), 3, axis=3).astype(np.uint8) * 255
        sep = np.full((n, imgs.shape[1], 1, 3), 128, np.uint8)
        imgs = np.concatenate([imgs, sep, mask], axis=2)  # (n, H, 2W+1, 3)
    imgs = imgs.repeat(scale, axis=1).repeat(scale, axis=2)
    th, tw = imgs.shape[1], imgs.shape[2]
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    cell_w, cell_h = max(tw, 56) + _PAD, th + _LABEL_H + _PAD
    sheet = Image.new("RGB", (cols * cell_w + _PAD, rows * cell_h + _PAD), (32, 32, 32))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for i in range(n):
        x0, y0 = _PAD + (i % cols) * cell_w, _PAD + (i // cols) * cell_h
        sheet.paste(Image.fromarray(imgs[i]), (x0, y0))
        name = CLASS_NAMES[int(batch.labels[i])]
        draw.text((x0, y0 + th), name, fill=(235, 235, 235), font=font)
    return atomic_write(path, lambda fh: sheet.save(fh, format="PNG"))
