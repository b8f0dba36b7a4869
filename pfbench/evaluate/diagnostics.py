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
from pfbench.types import quantize


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
    to_u8 = quantize(images[:n_examples]).permute(0, 2, 3, 1)
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


# ---------------------------------------------------------------- validity study (issue 10, item 5)


def _per_patch(x: Tensor, patch: int) -> Tensor:
    """(B, C, H, W) -> (B, T): mean over channels and each patch's p×p pixels, row-major patch order."""
    return torch.nn.functional.avg_pool2d(x.mean(dim=1, keepdim=True), patch).flatten(1)


@dataclass(frozen=True)
class PatchCorrelation:
    """Per-patch agreement of predicted variance and realised squared error at one common timestep ``t``.

    Pooled over every patch of every held-out image (``n`` = images × T).
    """

    t: float
    pearson: float  # corr(mean exp(logvar), mean (u − v)²) over patches
    spearman: float
    n: int


@torch.no_grad()
def patch_correlations(
    net: DiT, images: Tensor, labels: Tensor, ts: list[float], seed: int = 0, batch: int = 256,
) -> list[PatchCorrelation]:
    """Pearson and Spearman correlation of the difficulty head with the realised error, per patch, at each t.

    Every token of an image sits at the same t (as in the paper's figure); the noise is drawn once on the CPU
    from ``seed``, so the numbers do not depend on the device and the same noise serves every t.

    Args:
        net: a PF network (``difficulty_head=True``).
        images: (N, C, H, W) float in [-1, 1]; labels (N,).
        ts: timesteps in [0, 1) (0 = noise).
    """
    if not net.cfg.difficulty_head:
        raise ValueError("patch_correlations needs a PF model with a difficulty head")
    net.eval()
    dev = next(net.parameters()).device
    x0_all = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed))  # (N, C, H, W)
    out = []
    for t in ts:
        var_all, err_all = [], []
        for i in range(0, images.shape[0], batch):
            x1, x0 = images[i : i + batch].float().to(dev), x0_all[i : i + batch].to(dev)
            tt = torch.full((x1.shape[0], net.cfg.tokens), t, device=dev)  # (b, T)
            v, logvar = net(t * x1 + (1 - t) * x0, tt, labels[i : i + batch].to(dev))
            assert logvar is not None
            var_all.append(_per_patch(logvar.float().clamp(-30, 20).exp(), net.cfg.patch).cpu())  # (b, T)
            err_all.append(_per_patch(((x1 - x0) - v).pow(2), net.cfg.patch).cpu())  # (b, T)
        var, err = torch.cat(var_all).flatten(), torch.cat(err_all).flatten()
        spearman = _pearson(_rank(var.double()), _rank(err.double()))
        out.append(PatchCorrelation(float(t), _pearson(var, err), spearman, int(var.numel())))
    return out


@dataclass(frozen=True)
class ContextPoint:
    """Loss on the hard patches (held at ``t_hard``) while their easy context sits at ``t_ctx``."""

    t_hard: float
    t_ctx: float
    loss_hard: float  # mean (u − v)² over the hard patches' pixels and channels
    n_hard: int  # hard patches pooled over the held-out images


def hard_easy_patches(hard: Tensor, patch: int, threshold: float = 0.5) -> tuple[Tensor, Tensor]:
    """Patch masks from the generator's hard-pixel mask (N, 1, H, W) bool: ``hard`` = at least ``threshold`` of
    the patch's pixels are hard, ``easy`` = none is; patches in between are neither. Returns two (N, T) bool."""
    frac = torch.nn.functional.avg_pool2d(hard.float(), patch).flatten(1)  # (N, T) hard-pixel share per patch
    return frac >= threshold, frac == 0


@torch.no_grad()
def context_curve(
    net: DiT, images: Tensor, labels: Tensor, hard: Tensor, t_hard: float, t_ctx: list[float], seed: int = 0,
    batch: int = 256,
) -> list[ContextPoint]:
    """The "context helps" curve: loss on hard patches at ``t_hard`` as the easy patches move to each ``t_ctx``.

    Hard and easy patches come from the embedded generator's mask (``hard_easy_patches``); patches that are
    neither stay at ``t_hard`` with the hard ones. Each token is noised at its own t (``x = t·x1 + (1−t)·x0``
    per patch) with one noise draw shared by every ``t_ctx``, so the points differ only in the context's time.
    ``t_ctx = t_hard`` is the no-context reference; PF's samplers rely on the loss falling as t_ctx grows.
    """
    if not net.cfg.per_token_t:
        raise ValueError("context_curve needs a per-token-t (PF) model")
    net.eval()
    dev, p, grid = next(net.parameters()).device, net.cfg.patch, net.cfg.input_size // net.cfg.patch
    hard_p, easy_p = hard_easy_patches(hard, p)  # (N, T) each
    x0_all = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed))  # (N, C, H, W)
    out = []
    for tc in t_ctx:
        se, count = 0.0, 0
        for i in range(0, images.shape[0], batch):
            x1, x0 = images[i : i + batch].float().to(dev), x0_all[i : i + batch].to(dev)
            easy, hp = easy_p[i : i + batch].to(dev), hard_p[i : i + batch].to(dev)
            t = torch.where(easy, tc, t_hard).float()  # (b, T)
            tp = t.reshape(-1, 1, grid, grid).repeat_interleave(p, 2).repeat_interleave(p, 3)  # (b, 1, H, W)
            v, _ = net(tp * x1 + (1 - tp) * x0, t, labels[i : i + batch].to(dev))
            err = _per_patch(((x1 - x0) - v).pow(2), p)  # (b, T): mean over a patch's pixels and channels
            se += float(err[hp].double().sum())
            count += int(hp.sum())
        out.append(ContextPoint(float(t_hard), float(tc), se / max(count, 1), count))
    return out


def context_grid(t_hard: float, points: int = 5) -> list[float]:
    """Context times from ``t_hard`` (no context) to 1 (clean context), evenly spaced, rounded to 3 decimals."""
    return [round(t_hard + (1.0 - t_hard) * k / (points - 1), 3) for k in range(points)]


@dataclass(frozen=True)
class ErrorSpread:
    """How unevenly a model's per-patch flow-matching error is spread within images at one common ``t``."""

    t: float
    cv: float  # mean over images of std / mean of the per-patch squared error across the image's patches
    hard_easy: float  # mean error of hard patches / of easy patches (``hard_easy_patches``; nan if either is empty)
    n: int  # images


@torch.no_grad()
def error_spread(
    net: DiT, images: Tensor, labels: Tensor, hard: Tensor, ts: list[float], seed: int = 0, batch: int = 256,
) -> list[ErrorSpread]:
    """Per-patch difficulty spread of a per-token-t model at each t (every token at t, one noise draw from
    ``seed`` on the CPU shared by every t, as in ``patch_correlations``); the model-side measure of how
    heterogeneous the data are (``pfbench.data.heterogeneity``)."""
    if not net.cfg.per_token_t:
        raise ValueError("error_spread needs a per-token-t (PF) model")
    net.eval()
    dev = next(net.parameters()).device
    hard_p, easy_p = hard_easy_patches(hard, net.cfg.patch)  # (N, T) each
    x0_all = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed))  # (N, C, H, W)
    out = []
    for t in ts:
        errs = []
        for i in range(0, images.shape[0], batch):
            x1, x0 = images[i : i + batch].float().to(dev), x0_all[i : i + batch].to(dev)
            tt = torch.full((x1.shape[0], net.cfg.tokens), t, device=dev)  # (b, T)
            v, _ = net(t * x1 + (1 - t) * x0, tt, labels[i : i + batch].to(dev))
            errs.append(_per_patch(((x1 - x0) - v).pow(2), net.cfg.patch).double().cpu())  # (b, T)
        err = torch.cat(errs)  # (N, T)
        cv = (err.std(dim=1, correction=0) / err.mean(dim=1).clamp_min(1e-12)).mean()
        he = err[hard_p].mean() / err[easy_p].mean() if hard_p.any() and easy_p.any() else torch.tensor(float("nan"))
        out.append(ErrorSpread(float(t), float(cv), float(he), int(err.shape[0])))
    return out
