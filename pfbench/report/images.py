"""Figures made from plain arrays (no torch): sample grids and difficulty heat-maps."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pfbench.io import atomic_path
from pfbench.report.mpl import plt


def save_figure(fig: Any, path: Path, *, dpi: int = 150, tight: bool = True) -> Path:
    """Saves ``fig`` to ``path`` atomically (``pfbench.io.atomic_path``); the format follows the suffix.

    Args:
        tight: crop to the drawn content (``bbox_inches="tight"``).
    """
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight" if tight else None)
    return Path(path)


def _finish(fig: Any, path: Path, title: str | None = None) -> Path:
    """Titles (if ``title``), lays out, saves and closes a figure; returns the written path."""
    if title is not None:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    out = save_figure(fig, path)
    plt.close(fig)
    return out


def sample_grid(
    path: Path, rows: Sequence[tuple[str, np.ndarray, np.ndarray]], class_names: Sequence[str], per_row: int = 10,
    prompts: Sequence[Sequence[str] | None] = (),
) -> Path:
    """One row per entry ``(title, images (N,H,W,3) uint8, labels (N,))``; one image per class when possible.

    Each image is titled with its class, or with its prompt where ``prompts[row]`` gives the row's N prompts (a
    text-to-image model); a row's title should name its cell (model, sampler, NFE or steps, CFG).
    """
    texts = list(prompts) + [None] * (len(rows) - len(prompts))
    high = 1.25 + (0.45 if any(t is not None for t in texts) else 0.0)
    fig, axes = plt.subplots(len(rows), per_row, figsize=(per_row * 1.0 + 0.8, len(rows) * high + 0.3), squeeze=False)
    for r, (title, images, labels) in enumerate(rows):
        picks: list[int] = []
        for c in range(per_row):  # first sample of each class, then fill
            hits = np.flatnonzero(labels == c % len(class_names))
            picks.append(int(hits[len(picks) // len(class_names)]) if len(hits) else len(picks))
        for c, i in enumerate(picks):
            ax = axes[r, c]
            if i >= len(images):  # fewer images than columns (e.g. a few-sample rehearsal of 1000 classes)
                ax.axis("off")
                continue
            ax.imshow(images[i], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            row_prompts = texts[r]
            if row_prompts is not None:
                ax.set_title(textwrap.fill(str(row_prompts[i]), 22), fontsize=4)
            else:
                ax.set_title(class_names[int(labels[i])], fontsize=6)
            if c == 0:
                ax.set_ylabel(title, fontsize=6, rotation=0, ha="right", va="center")
    return _finish(fig, path)


def difficulty_figure(path: Path, examples: dict[str, np.ndarray], title: str) -> Path:
    """Columns: held-out image, generator's hard mask, predicted variance, realised squared error."""
    n = examples["image"].shape[0]
    cols = [("image", None), ("hard (generator)", "gray"), ("predicted var", "magma"), ("squared error", "magma")]
    fig, axes = plt.subplots(len(cols), n, figsize=(n * 1.1, len(cols) * 1.15 + 0.4), squeeze=False)
    for i in range(n):
        data = [examples["image"][i], examples["hard"][i], examples["var"][i], examples["err"][i]]
        for r, ((name, cmap), arr) in enumerate(zip(cols, data, strict=True)):
            ax = axes[r, i]
            ax.imshow(arr, cmap=cmap, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_ylabel(name, fontsize=7, rotation=0, ha="right", va="center")
    return _finish(fig, path, title)


def schedule_figure(path: Path, times: np.ndarray, image: np.ndarray, difficulty: np.ndarray, title: str) -> Path:
    """Per-patch timestep schedule of one sample: patches (sorted by predicted difficulty) × model calls.

    Args:
        times: (calls, T) time of every patch at every model call.
        image: (H, W, 3) uint8 final sample. difficulty: (T,) patch difficulty used to order patches (may be NaN).
    """
    order = np.argsort(difficulty) if np.isfinite(difficulty).all() else np.arange(times.shape[1])
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(7.5, 3.0), gridspec_kw={"width_ratios": [1, 3]})
    ax0.imshow(image, interpolation="nearest")
    ax0.set_xticks([])
    ax0.set_yticks([])
    ax0.set_title("sample", fontsize=8)
    im = ax1.imshow(times[:, order].T, aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    ax1.set_xlabel("model call")
    ax1.set_ylabel("patch (easy → hard)" if order is not None and np.isfinite(difficulty).all() else "patch")
    fig.colorbar(im, ax=ax1, label="t of the patch (0 noise, 1 data)")
    return _finish(fig, path, title)


def sample_difficulty_figure(path: Path, images: np.ndarray, difficulty: np.ndarray, grid: int, title: str) -> Path:
    """Generated samples above the patch difficulty the model predicted during sampling."""
    n = images.shape[0]
    fig, axes = plt.subplots(2, n, figsize=(n * 1.3, 2.9), squeeze=False)
    for i in range(n):
        axes[0, i].imshow(images[i], interpolation="nearest")
        axes[1, i].imshow(np.log(difficulty[i].reshape(grid, grid)), cmap="magma", interpolation="nearest")
        for r in range(2):
            axes[r, i].set_xticks([])
            axes[r, i].set_yticks([])
    axes[0, 0].set_ylabel("sample", fontsize=7)
    axes[1, 0].set_ylabel("log difficulty", fontsize=7)
    return _finish(fig, path, title)
