"""Sampler traces: which timestep every patch had at every model call, and the predicted difficulty.

A recording adapter wraps the model, so no sampler needs a hook: whatever the sampler passes to the model
is what it computed. Used for the per-patch timestep schedule and the sample difficulty figures.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from pfbench.adapters.base import Adapter, AdapterWrapper
from pfbench.sample.generate import Decode, Prompts, balanced_labels, sample_noise, sampler_keys
from pfbench.samplers.base import Sampler
from pfbench.samplers.masks import patch_difficulty
from pfbench.types import Cond, ModelOut, quantize


class Recorder(AdapterWrapper):
    """Adapter wrapper that records the per-token times and patch difficulty of every call."""

    def __init__(self, model: Adapter) -> None:
        super().__init__(model)
        self.times: list[Tensor] = []  # per call: (B, T)
        self.difficulty: list[Tensor | None] = []  # per call: (B, T) float64 or None

    def __call__(self, x: Tensor, t: Tensor, cond: Cond) -> ModelOut:
        out = self.model(x, t, cond)
        self.times.append(t.detach().float().cpu())
        lv = out.logvar
        self.difficulty.append(None if lv is None else patch_difficulty(lv.detach().cpu(), self.patch_size))
        return out


@dataclass(frozen=True)
class Trace:
    """Arrays for figures (numpy: the report layer never imports torch).

    Attributes:
        times: (calls, B, T) per-token time at each model call.
        difficulty: (B, T) patch difficulty at the middle call (NaN when the model has no difficulty head): at
            the first call every patch is pure noise, so the map only becomes informative later.
        difficulty_t: mean time of the call the difficulty map comes from.
        images: (B, H, W, 3) uint8 final samples.
        labels: (B,) class labels.
        grid: patches per side.
    """

    times: np.ndarray
    difficulty: np.ndarray
    difficulty_t: float
    images: np.ndarray
    labels: np.ndarray
    grid: int


@torch.no_grad()
def trace(model: Adapter, sampler: Sampler, shape: tuple[int, int, int] | None = None, n: int = 4, seed: int = 0,
          decode: Decode | None = None, device: torch.device | str = "cpu", prompts: Prompts | None = None) -> Trace:
    """Samples ``n`` images (indices 0..n−1 of ``seed``, as in ``pfbench.sample.generate``) and records the schedule;
    ``shape`` (C, H, W) defaults to ``model.input_shape``; ``decode`` maps latents to [−1, 1] pixels for latent models;
    ``prompts`` conditions a text-to-image model (sample i's prompt as in ``generate``)."""
    shape = shape or model.input_shape
    rec = Recorder(model)
    idx = torch.arange(n)
    noise = sample_noise(seed, idx, shape).to(device)
    labels = balanced_labels(seed, n, model.num_classes)
    texts = None
    if prompts is not None:
        texts, prompt_labels = prompts.take(idx)
        labels = labels if prompt_labels is None else prompt_labels
    out = sampler(rec, noise, Cond(labels.to(device), texts), sampler_keys(seed, idx))
    grid = shape[1] // model.patch_size
    mid = len(rec.difficulty) // 2
    chosen = rec.difficulty[mid] if rec.difficulty else None
    diff = chosen.numpy() if chosen is not None else np.full((n, grid * grid), np.nan)
    return Trace(
        times=torch.stack(rec.times).numpy(),
        difficulty=diff,
        difficulty_t=float(rec.times[mid].mean()) if rec.times else float("nan"),
        images=quantize(out.x if decode is None else decode(out.x)).cpu().permute(0, 2, 3, 1).numpy(),
        labels=labels.numpy(),
        grid=grid,
    )
