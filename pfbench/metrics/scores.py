"""Scores computed from kept features (docs/protocol.md §9): the Inception-Score formula and k-NN precision/recall.

Both work in float64 on the CPU; ``pfbench.metrics.embedded`` and ``pfbench.metrics.standard`` feed them the
rows their feature networks produced, in sample order.
"""

from __future__ import annotations

import numpy as np
import torch

from pfbench import PfbenchError

__all__ = ["inception_score", "precision_recall"]


def _as_f64(feats: np.ndarray | torch.Tensor, where: str) -> np.ndarray:
    if isinstance(feats, torch.Tensor):
        feats = feats.detach().to("cpu", torch.float64).numpy()
    arr = np.asarray(feats, dtype=np.float64)
    if arr.ndim != 2:
        raise PfbenchError(f"{where}: features must be (N, D), got shape {arr.shape}; flatten them first")
    if not np.isfinite(arr).all():
        raise PfbenchError(f"{where}: features contain NaN or Inf; check the feature network's input")
    return np.ascontiguousarray(arr)


def inception_score(probs: np.ndarray | torch.Tensor, splits: int = 10) -> tuple[float, float]:
    """Inception-Score formula ``exp(E_x KL(p(y|x) ‖ p(y)))`` over contiguous splits.

    Args:
        probs: (N, K) class probabilities (rows sum to 1), in sample order (not shuffled).
        splits: number of contiguous, near-equal splits (``np.array_split``).

    Returns:
        (mean, std) of the per-split scores.
    """
    p = _as_f64(probs, "inception_score")  # (N, K)
    if p.shape[0] < splits:
        raise PfbenchError(f"inception_score: {p.shape[0]} samples is fewer than {splits} splits")
    scores = []
    for part in np.array_split(p, splits):
        py = part.mean(axis=0, keepdims=True)  # (1, K)
        logp = np.log(np.clip(part, 1e-30, None))
        kl = (part * (logp - np.log(np.clip(py, 1e-30, None)))).sum(axis=1).mean()
        scores.append(np.exp(kl))
    return float(np.mean(scores)), float(np.std(scores))


def _sq_dists(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(n, m) squared Euclidean distances in float64, clamped at 0."""
    d = a.square().sum(1, keepdim=True) - 2.0 * a @ b.T + b.square().sum(1)[None]
    return d.clamp_min_(0.0)


def _knn_radii(x: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    """(N,) squared distance from each row to its k-th nearest other row."""
    out = []
    for i in range(0, x.shape[0], chunk):
        d = _sq_dists(x[i : i + chunk], x)  # (c, N); the row itself sits at distance 0
        out.append(d.topk(k + 1, dim=1, largest=False).values[:, k])
    return torch.cat(out)


def _coverage(query: torch.Tensor, ref: torch.Tensor, radii: torch.Tensor, chunk: int) -> float:
    """Fraction of query rows inside at least one ball (ref_j, radius_j)."""
    inside = 0
    for i in range(0, query.shape[0], chunk):
        d = _sq_dists(query[i : i + chunk], ref)  # (c, M)
        inside += int((d <= radii[None]).any(dim=1).sum())
    return inside / query.shape[0]


def precision_recall(
    real: np.ndarray | torch.Tensor, fake: np.ndarray | torch.Tensor, k: int = 3, chunk: int = 1024
) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) with k-NN manifolds.

    Precision: fraction of generated features inside the real manifold (union of balls around
    each real feature with radius = distance to its k-th nearest real neighbour). Recall: the
    same with the roles swapped. Distances are computed in float64 in row chunks.

    Args:
        real: (N, D) reference features.
        fake: (M, D) generated features.
        k: neighbourhood size (3 in the paper and the ADM evaluator).
        chunk: rows per distance block (memory ~ chunk × max(N, M) float64 values).

    Returns:
        (precision, recall), each in [0, 1].
    """
    r = torch.from_numpy(_as_f64(real, "precision_recall(real)"))
    f = torch.from_numpy(_as_f64(fake, "precision_recall(fake)"))
    if r.shape[1] != f.shape[1]:
        raise PfbenchError(f"precision_recall: feature dims differ ({r.shape[1]} vs {f.shape[1]})")
    if min(r.shape[0], f.shape[0]) <= k:
        raise PfbenchError(f"precision_recall: need more than k={k} samples on each side")
    precision = _coverage(f, r, _knn_radii(r, k, chunk), chunk)
    recall = _coverage(r, f, _knn_radii(f, k, chunk), chunk)
    return precision, recall
