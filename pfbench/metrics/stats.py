"""Streaming feature statistics (docs/protocol.md §9): mean and covariance merged in float64.

``FeatureStats`` streams mean and covariance of (N, D) features. Rows are processed in fixed
chunks counted from the first row ever seen; each chunk is centred on its own float64 mean, its Gram
matrix is one float32 ``ssyrk`` (the default, ``gemm="float32"``) or float64 ``dsyrk``, and chunk
statistics are merged in float64 with Chan's exact pairwise formula. The result is bit-identical
however the rows are split into ``update`` calls (batch size never changes a number).

Why float32 GEMMs are accurate here: raw float32 moments lose everything to cancellation
(Σx² − n·mean², with means far from 0 for non-negative ReLU features); a chunk centred first has no
such cancellation, so each Gram entry carries float32 rounding relative to the centred values only,
and the float64 merge adds no more. FIDs agree with the all-float64 path (``gemm="float64"``) to
≤ 3e-7 relative (tests: non-negative, heavy-tailed, rank-deficient features; ~1e-8 at 50,000 × 2048).
Two cases are accumulated in float64 automatically, because there float32 noise would sit in
directions with little or no real variance: a first and only chunk of fewer than 4·D rows (few
samples: a singular or ill-conditioned covariance whose smallest eigenvalues amplify float32 noise;
chunks hold at least 4·D rows, so that chunk is the whole data set), and features with exactly
dependent units, found by a Cholesky of the first chunk's Gram (``_float32_resolves``), after which
``gemm`` reads ``"float64"``.

Cost at N = 50,000, D = 2048: N·D² flops of ``ssyrk``, 2.2 s on one core of the 2-core AMD EPYC
development machine (~95 GFLOP/s; OpenBLAS threads it over both cores when they are free), against
4.6 s for float64 ``dsyrk``; chunk means, centring, merges and the first-chunk check add ~0.3 s.
``frechet_distance`` lives in ``pfbench.metrics.frechet``, the Inception-Score formula and k-NN
precision/recall in ``pfbench.metrics.scores``; ``pfbench bench fd`` measures both stages of an FD
(``gemm=float64`` for the all-float64 path).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from scipy.linalg import blas

from pfbench import PfbenchError
from pfbench.metrics.frechet import _one_thread

__all__ = ["GEMM_DTYPES", "FeatureStats"]

GEMM_DTYPES = ("float32", "float64")


def _as_float(feats: np.ndarray | torch.Tensor, where: str) -> np.ndarray:
    """(N, D) features as a C-contiguous float32 or float64 array, without upcasting a copy of it all.

    float32 stays float32 here (each chunk is converted when it is folded in), which saves a
    full-size float64 copy: 0.8 GB and ~2 s for 50,000 × 2048 features on a busy machine.
    """
    if isinstance(feats, torch.Tensor):
        t = feats.detach().cpu()
        feats = (t if t.dtype in (torch.float32, torch.float64) else t.to(torch.float64)).numpy()
    arr = np.asarray(feats)
    if arr.dtype not in (np.float32, np.float64):
        arr = arr.astype(np.float64)
    if arr.ndim != 2:
        raise PfbenchError(f"{where}: features must be (N, D), got shape {arr.shape}; flatten them first")
    return np.ascontiguousarray(arr)  # finiteness: checked by FeatureStats.update, from column sums


MIN_PIVOT = 1e-4  # smallest share of a unit's variance not explained by the others, see _float32_resolves


def _float32_resolves(gram: np.ndarray) -> bool:
    """Whether a first chunk's float32 Gram (D, D; lower triangle) shows no (near) linear dependence.

    Float32 products leave ~1e-7·‖Σ‖ of noise in every direction. Directions with real variance
    shrug that off, but exactly dependent units (duplicates, a LayerNorm's zero-sum constraint, a
    linear bottleneck) have none: there the noise becomes spurious (even negative) eigenvalues that
    move the FID by ~1e-5 relative or fail its PSD check. A Cholesky of the Gram over the
    non-constant units finds them: each pivot² / diagonal is the share of a unit's variance the
    previous units do not explain, ≥ 0.05 for independent features at 4·D rows, ~1e-7 or a failed
    factorisation for dependent ones. Constant units (dead ReLUs) are exact in float32 and skipped.
    ~0.03 s at D = 2048, once per stream.
    """
    diag = np.diagonal(gram)
    keep = np.flatnonzero(diag > 0)
    sub = torch.from_numpy(gram if len(keep) == len(diag) else gram[np.ix_(keep, keep)])  # (K, K) float32
    with _one_thread():
        chol, info = torch.linalg.cholesky_ex(sub)  # reads the lower triangle only
    if int(info) != 0:
        return False
    share = torch.diagonal(chol).double().square() / torch.from_numpy(diag[keep]).double()
    return bool(torch.isfinite(share).all()) and (len(keep) == 0 or float(share.min()) >= MIN_PIVOT)


class FeatureStats:
    """Streaming mean and covariance of feature vectors, merged in float64.

    Example::

        stats = FeatureStats()
        for feats in loader:          # (B, D) float32 tensors or arrays
            stats.update(feats)
        mu, sigma = stats.mean(), stats.cov()

    Args:
        dim: feature dimension, if known (else fixed by the first update).
        gemm: dtype of each chunk's Gram product: ``"float32"`` (default, ~3× faster; becomes
            ``"float64"`` when the first chunk shows dependent units, see the module doc) or
            ``"float64"`` (the all-float64 path). Means and merges are float64 either way.

    Attributes:
        n: rows folded in so far (including rows still waiting in the current chunk).
        dim: feature dimension D, fixed by the first update (or ``None`` before it).
        gemm: see Args.
    """

    CHUNK: ClassVar[int] = 2048  # minimum rows per chunk; a chunk holds max(CHUNK, 4·D) rows

    def __init__(self, dim: int | None = None, *, gemm: str = "float32") -> None:
        if gemm not in GEMM_DTYPES:
            raise PfbenchError(f"FeatureStats: gemm={gemm!r} is not one of {GEMM_DTYPES}")
        self.gemm = gemm
        self.dim: int | None = None
        self.chunk = self.CHUNK
        self._n = 0  # rows in processed chunks
        self._mean: np.ndarray | None = None  # (D,) mean of processed rows
        self._m2: np.ndarray | None = None  # (D, D) Fortran order; only the lower triangle is valid
        self._pending: list[np.ndarray] = []  # rows of the current, incomplete chunk, each (n_i, D)
        self._pending_n = 0
        self._final: FeatureStats | None = None  # memo of _finished() for mean()/cov(); reset by update
        # work buffers of _fold, not state: reused so that no chunk pays for fresh pages
        self._scratch: np.ndarray | None = None  # (chunk, D) centred chunk, float32 or float64
        self._gram: np.ndarray | None = None  # (D, D) float32 Fortran order, ssyrk output
        if dim is not None:
            self._init(dim)

    @property
    def n(self) -> int:
        return self._n + self._pending_n

    def _init(self, dim: int) -> None:
        if self.dim is None:
            self.dim = dim
            self.chunk = max(self.CHUNK, 4 * dim)
        if dim != self.dim:
            raise PfbenchError(f"FeatureStats.update: feature dim {dim} != {self.dim} seen before")
        if self._mean is None:
            self._mean = np.zeros(dim, np.float64)
            self._m2 = np.zeros((dim, dim), np.float64, order="F")

    def _buffer(self, dtype: type[np.floating], d: int) -> np.ndarray:
        if self._scratch is None or self._scratch.dtype != dtype or self._scratch.shape[1] != d:
            self._scratch = np.empty((self.chunk, d), dtype)
        return self._scratch

    def _fold(self, x: np.ndarray, col_sum: np.ndarray | None = None) -> None:
        """Combines one chunk (n_c, D) into (n, mean, m2) with Chan's formula.

        ``col_sum``: the chunk's float64 column sums (D,) if ``update`` already has them.
        """
        assert self._mean is not None and self._m2 is not None
        n_c, d = x.shape
        if col_sum is None:
            col_sum = np.add.reduce(x, axis=0, dtype=np.float64)
        mean_c = col_sum / n_c  # (D,) float64
        first = self._n == 0
        gram = None
        # A lone first chunk below 4·D rows is the whole (ill-conditioned) data set: float64 (module doc).
        if self.gemm == "float32" and not (first and n_c < 4 * d):
            xc32 = self._buffer(np.float32, d)[:n_c]  # (n_c, D)
            # Centred on the float32-rounded mean: x − m32 is one float32 rounding of the exact
            # difference. Being off the true mean by ≤ eps32·|mean| adds n_c·δδᵀ, ~1e-14 relative.
            np.subtract(x, mean_c.astype(np.float32), out=xc32, casting="same_kind")
            if self._gram is None or self._gram.shape != (d, d):
                self._gram = np.zeros((d, d), np.float32, order="F")  # upper triangle stays 0
            gram = self._gram = blas.ssyrk(1.0, xc32.T, beta=0.0, c=self._gram, trans=0, lower=1, overwrite_c=1)
            if first and not _float32_resolves(gram):
                self.gemm, gram = "float64", None  # for good: every later chunk has the same structure
        if gram is None:
            xc = self._buffer(np.float64, d)[:n_c]  # (n_c, D) float64 copy of the chunk
            np.copyto(xc, x)
            xc -= mean_c  # centred chunk, in place
            # m2 += xcᵀ xc on the lower triangle; xc.T is Fortran-contiguous, so no copy.
            self._m2 = blas.dsyrk(1.0, xc.T, beta=1.0, c=self._m2, trans=0, lower=1, overwrite_c=1)
        else:
            np.add(self._m2, gram, out=self._m2)  # float64 += float32 Gram (lower triangle)
        n = self._n + n_c
        delta = mean_c - self._mean  # (D,)
        if self._n > 0:
            self._m2 = blas.dsyr(self._n * n_c / n, delta, a=self._m2, lower=1, overwrite_a=1)
        self._mean = self._mean + delta * (n_c / n)
        self._n = n

    def update(self, feats: np.ndarray | torch.Tensor) -> None:
        """Adds a batch of features.

        Args:
            feats: (N, D) float features (any float dtype).
        """
        x = _as_float(feats, "FeatureStats.update")  # (N, D) float32 or float64
        n = x.shape[0]
        if n == 0:
            return
        self._init(x.shape[1])
        c = self.chunk
        # rows [0, take) top up the open chunk (chunk boundaries stay global), then whole chunks, then
        # rows [tail, n) are left open
        take = min(c - self._pending_n, n) if self._pending_n else 0
        starts = range(take, n - c + 1, c)
        tail = take + len(starts) * c
        # Column sums of the whole chunks (their means need them anyway) double as the NaN/Inf check,
        # ~10× cheaper than np.isfinite over all N·D values; all checks come before any state change.
        sums = [np.add.reduce(x[s : s + c], axis=0, dtype=np.float64) for s in starts]
        if not (all(np.isfinite(v).all() for v in sums) and np.isfinite(x[:take]).all()
                and np.isfinite(x[tail:]).all()):  # fmt: skip
            raise PfbenchError("FeatureStats.update: features contain NaN or Inf; check the feature network's input")
        self._final = None
        if take:
            self._pending.append(x[:take].copy())
            self._pending_n += take
            if self._pending_n == c:
                self._fold(np.concatenate(self._pending))
                self._pending, self._pending_n = [], 0
        for s, v in zip(starts, sums, strict=True):
            self._fold(x[s : s + c], v)
        if tail < n:
            self._pending.append(x[tail:].copy())
            self._pending_n += n - tail

    def _copy(self) -> FeatureStats:
        out = FeatureStats(gemm=self.gemm)
        if self.dim is not None:
            assert self._mean is not None and self._m2 is not None
            out._init(self.dim)
            out._n, out._mean, out._m2 = self._n, self._mean.copy(), self._m2.copy(order="F")
            out._pending, out._pending_n = list(self._pending), self._pending_n  # rows are never modified
            out._scratch, out._gram = self._scratch, self._gram  # work buffers: contents never carried over
        return out

    def _finished(self) -> FeatureStats:
        """A copy with the open chunk folded in (self stays untouched, so streaming stays exact)."""
        out = self._copy()
        if out._pending_n:
            out._fold(np.concatenate(out._pending))
            out._pending, out._pending_n = [], 0
        return out

    def _finished_memo(self) -> FeatureStats:
        """``_finished()``, kept until the next update (``mean()`` then ``cov()`` fold the open chunk once).

        Only read by ``mean``/``cov``, which never modify it; with no open chunk it is ``self``.
        """
        if self._final is None:
            self._final = self._finished() if self._pending_n else self
        return self._final

    def mean(self) -> np.ndarray:
        """(D,) float64 mean of all rows."""
        fin = self._finished_memo()
        if fin.n == 0 or fin._mean is None:
            raise PfbenchError("FeatureStats.mean: no features were added")
        return fin._mean.copy()

    def cov(self) -> np.ndarray:
        """(D, D) float64 unbiased covariance (divides by N − 1, like ``np.cov``); exactly symmetric."""
        fin = self._finished_memo()
        if fin.n < 2 or fin._m2 is None:
            raise PfbenchError(f"FeatureStats.cov: need at least 2 feature rows, have {fin.n}")
        m2 = fin._m2  # lower triangle; the upper one is exactly 0 (every writer keeps it so)
        out = m2 + m2.T  # (D, D) exactly symmetric, diagonal doubled
        np.fill_diagonal(out, np.diagonal(m2))
        out /= fin.n - 1
        return out
