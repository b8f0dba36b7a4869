"""Held-out diagnostics of a trained model: is the difficulty head informative? (issue: foundation §5).

At a fixed time t every pixel of a held-out image is noised, the PF model predicts velocity and logvar, and
the predicted variance exp(logvar) is compared with (a) the hard/easy pixel masks that the embedded
generator knows and (b) the realised per-pixel squared error of the velocity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from pfbench.nets import DiT


@dataclass(frozen=True)
class DifficultyReport:
    """Numbers and example maps; arrays are numpy so reports need no torch."""

    t: float
    hard_easy_ratio: float  # mean predicted variance on hard pixels / on easy pixels
    pearson_var_err: float  # correlation of predicted variance and squared error over pixels
    spearman_var_err: float
    pearson_log: float  # correlation of logvar and log squared error
    examples: dict[str, np.ndarray]  # image (N,H,W,3) uint8, hard (N,H,W), var (N,H,W), err (N,H,W)


def _rank(x: Tensor) -> Tensor:
    r = torch.empty_like(x)
    r[x.argsort()] = torch.arange(x.numel(), dtype=x.dtype)
    return r


def _pearson(a: Tensor, b: Tensor) -> float:
    a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
    return float((a * b).sum() / (a.norm() * b.norm()).clamp_min(1e-30))


@torch.no_grad()
def difficulty_report(
    net: DiT, images: Tensor, labels: Tensor, hard: Tensor, t: float = 0.6, seed: int = 0, batch: int = 256,
    n_examples: int = 8,
) -> DifficultyReport:
    """Evaluates the difficulty head on held-out data.

    Args:
        net: a PF network (``difficulty_head=True``), in eval mode.
        images: (N, C, H, W) float in [-1, 1]; labels (N,); hard (N, 1, H, W) bool.
        t: the common timestep of every token.
        seed: noise seed (the numbers are deterministic).
    """
    if not net.cfg.difficulty_head:
        raise ValueError("difficulty_report needs a PF model with a difficulty head")
    net.eval()
    g = torch.Generator().manual_seed(seed)
    var_all, err_all = [], []
    dev = next(net.parameters()).device  # noise is drawn on the CPU, so the numbers do not depend on it
    for i in range(0, images.shape[0], batch):
        x1 = images[i : i + batch].float()
        x0 = torch.randn(x1.shape, generator=g)
        x1, x0 = x1.to(dev), x0.to(dev)
        tt = torch.full((x1.shape[0], net.cfg.tokens), t, device=dev)
        v, logvar = net(t * x1 + (1 - t) * x0, tt, labels[i : i + batch].to(dev))
        assert logvar is not None
        var_all.append(logvar.float().clamp(-30, 20).exp().cpu())  # (b, 1, H, W)
        err_all.append(((x1 - x0) - v).pow(2).mean(dim=1, keepdim=True).cpu())  # (b, 1, H, W)
    var, err = torch.cat(var_all), torch.cat(err_all)
    mask = hard.bool()
    ratio = float(var[mask].double().mean() / var[~mask].double().mean())
    flat_v, flat_e = var.flatten(), err.flatten()
    k = min(flat_v.numel(), 200_000)  # rank correlation on a fixed subset keeps it fast
    idx = torch.randperm(flat_v.numel(), generator=g)[:k]
    spearman = _pearson(_rank(flat_v[idx].double()), _rank(flat_e[idx].double()))
    to_u8 = ((images[:n_examples] * 127.5 + 127.5).round().clamp(0, 255).to(torch.uint8)).permute(0, 2, 3, 1)
    return DifficultyReport(
        t=t,
        hard_easy_ratio=ratio,
        pearson_var_err=_pearson(flat_v, flat_e),
        spearman_var_err=spearman,
        pearson_log=_pearson(flat_v.log(), flat_e.clamp_min(1e-12).log()),
        examples={
            "image": to_u8.numpy(),
            "hard": mask[:n_examples, 0].numpy(),
            "var": var[:n_examples, 0].numpy(),
            "err": err[:n_examples, 0].numpy(),
        },
    )
