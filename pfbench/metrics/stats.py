"""Feature statistics and the distances built on them (SPEC §6), all in float64.

``FeatureStats`` streams mean and covariance of (N, D) features. Rows are processed in fixed
chunks of ``CHUNK`` rows counted from the first row ever seen, and chunks are combined with Chan's
exact pairwise formula, so the result is bit-identical however the rows are split into ``update``
calls (batch size never changes a number), and it survives a ``state()``/``from_state`` round trip
mid-stream. ``frechet_distance`` gets tr(sqrt(Σ1 Σ2)) from the eigenvalues of a symmetric
similar matrix (``Fᵀ·Σ2·F`` with ``F·Fᵀ = Σ1``) in float64, checks it, and never returns a complex
number (the classic ``scipy.linalg.sqrtm(Σ1 Σ2)`` route can blow up into imaginary parts: SPEC §8).

Cost at N = 50,000, D = 2048, one thread: accumulation is N·D² flops of ``dsyrk`` (~4 s at ~50
GFLOP/s, the floor for float64 statistics); the distance is a Cholesky, two ``dtrmm`` and one
``eigvalsh`` (~1 s). ``pfbench bench fd`` measures both.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from scipy.linalg import blas

from pfbench import PfbenchError

_TINY = float(np.finfo(np.float64).tiny)


def _as_f64(feats: np.ndarray | torch.Tensor, where: str) -> np.ndarray:
    if isinstance(feats, torch.Tensor):
        feats = feats.detach().to("cpu", torch.float64).numpy()
    arr = np.asarray(feats, dtype=np.float64)
    if arr.ndim != 2:
        raise PfbenchError(f"{where}: features must be (N, D), got shape {arr.shape}; flatten them first")
    if not np.isfinite(arr).all():
        raise PfbenchError(f"{where}: features contain NaN or Inf; check the feature network's input")
    return np.ascontiguousarray(arr)


def _as_float(feats: np.ndarray | torch.Tensor, where: str) -> np.ndarray:
    """(N, D) features as a C-contiguous float32 or float64 array, without upcasting a copy of it all.

    float32 stays float32 here (each chunk is converted to float64 when it is folded in), which saves
    a full-size float64 copy: 0.8 GB and ~2 s for 50,000 × 2048 features on a busy machine.
    """
    if isinstance(feats, torch.Tensor):
        t = feats.detach().cpu()
        feats = (t if t.dtype in (torch.float32, torch.float64) else t.to(torch.float64)).numpy()
    arr = np.asarray(feats)
    if arr.dtype not in (np.float32, np.float64):
        arr = arr.astype(np.float64)
    if arr.ndim != 2:
        raise PfbenchError(f"{where}: features must be (N, D), got shape {arr.shape}; flatten them first")
    if not np.isfinite(arr).all():
        raise PfbenchError(f"{where}: features contain NaN or Inf; check the feature network's input")
    return np.ascontiguousarray(arr)


class FeatureStats:
    """Streaming float64 mean and covariance of feature vectors.

    Example::

        stats = FeatureStats()
        for feats in loader:          # (B, D) float32 tensors or arrays
            stats.update(feats)
        mu, sigma = stats.mean(), stats.cov()

    Attributes:
        n: rows folded in so far (including rows still waiting in the current chunk).
        dim: feature dimension D, fixed by the first update (or ``None`` before it).
    """

    CHUNK: ClassVar[int] = 2048

    def __init__(self, dim: int | None = None) -> None:
        self.dim: int | None = None
        self._n = 0  # rows in processed chunks
        self._mean: np.ndarray | None = None  # (D,) mean of processed rows
        self._m2: np.ndarray | None = None  # (D, D) Fortran order; only the lower triangle is valid
        self._pending: list[np.ndarray] = []  # rows of the current, incomplete chunk, each (n_i, D)
        self._pending_n = 0
        self._final: FeatureStats | None = None  # memo of _finished() for mean()/cov(); reset by update
        self._scratch: np.ndarray | None = None  # (CHUNK, D) float64 work buffer of _fold, not state
        if dim is not None:
            self._init(dim)

    @property
    def n(self) -> int:
        return self._n + self._pending_n

    def _init(self, dim: int) -> None:
        if self.dim is None:
            self.dim = dim
        if dim != self.dim:
            raise PfbenchError(f"FeatureStats.update: feature dim {dim} != {self.dim} seen before")
        if self._mean is None:
            self._mean = np.zeros(dim, np.float64)
            self._m2 = np.zeros((dim, dim), np.float64, order="F")

    def _fold(self, x: np.ndarray) -> None:
        """Combines one chunk (n_c, D) into (n, mean, m2) with Chan's formula."""
        assert self._mean is not None and self._m2 is not None
        n_c = x.shape[0]
        if self._scratch is None or self._scratch.shape[1] != x.shape[1]:
            self._scratch = np.empty((self.CHUNK, x.shape[1]), np.float64)  # reused: no page faults per chunk
        xc = self._scratch[:n_c]  # (n_c, D) float64 copy of the chunk (any input dtype)
        np.copyto(xc, x)
        mean_c = xc.mean(axis=0)  # (D,)
        xc -= mean_c  # centred chunk, in place
        # m2 += xcᵀ xc on the lower triangle; xc.T is Fortran-contiguous, so no copy.
        self._m2 = blas.dsyrk(1.0, xc.T, beta=1.0, c=self._m2, trans=0, lower=1, overwrite_c=1)
        n = self._n + n_c
        delta = mean_c - self._mean  # (D,)
        if self._n > 0:
            self._m2 = blas.dsyr(self._n * n_c / n, delta, a=self._m2, lower=1, overwrite_a=1)
        self._mean = self._mean + delta * (n_c / n)
        self._n = n

    def update(self, feats: np.ndarray | torch.Tensor) -> None:
        """Adds a batch of features.

        Args:
            feats: (N, D) float features (any float dtype; converted to float64).
        """
        x = _as_float(feats, "FeatureStats.update")  # (N, D) float32 or float64
        if x.shape[0] == 0:
            return
        self._init(x.shape[1])
        self._final = None
        i = 0
        if self._pending_n:  # top up the open chunk first so chunk boundaries stay global
            take = min(self.CHUNK - self._pending_n, x.shape[0])
            self._pending.append(x[:take].copy())
            self._pending_n += take
            i = take
            if self._pending_n == self.CHUNK:
                self._fold(np.concatenate(self._pending))
                self._pending, self._pending_n = [], 0
        while x.shape[0] - i >= self.CHUNK:
            self._fold(x[i : i + self.CHUNK])
            i += self.CHUNK
        if i < x.shape[0]:
            self._pending.append(x[i:].copy())
            self._pending_n += x.shape[0] - i

    def _finished(self) -> FeatureStats:
        """A copy with the open chunk folded in (self stays untouched, so streaming stays exact)."""
        out = FeatureStats.from_state(self.state())
        if out._pending_n:
            out._fold(np.concatenate(out._pending))
            out._pending, out._pending_n = [], 0
        return out

    def _finished_memo(self) -> FeatureStats:
        """``_finished()``, kept until the next update (``mean()`` then ``cov()`` fold the open chunk once).

        Only read by ``mean``/``cov``, which never modify it.
        """
        if self._final is None:
            self._final = self._finished()
        return self._final

    def merge(self, other: FeatureStats) -> FeatureStats:
        """Returns the statistics of both sets of rows (exact up to float64 rounding).

        Unlike ``update``, the result can differ from one-shot accumulation in the last bits,
        because the two streams were chunked independently.
        """
        a, b = self._finished(), other._finished()
        if a.n == 0:
            return b
        if b.n == 0:
            return a
        if a.dim != b.dim:
            raise PfbenchError(f"FeatureStats.merge: feature dims differ ({a.dim} vs {b.dim})")
        assert a._mean is not None and a._m2 is not None and b._mean is not None and b._m2 is not None
        n = a._n + b._n
        delta = b._mean - a._mean
        m2 = np.asfortranarray(a._m2 + b._m2)
        m2 = blas.dsyr(a._n * b._n / n, delta, a=m2, lower=1, overwrite_a=1)
        a._mean, a._m2, a._n = a._mean + delta * (b._n / n), m2, n
        return a

    def mean(self) -> np.ndarray:
        """(D,) float64 mean of all rows."""
        fin = self._finished_memo()
        if fin.n == 0 or fin._mean is None:
            raise PfbenchError("FeatureStats.mean: no features were added")
        return fin._mean.copy()

    def cov(self) -> np.ndarray:
        """(D, D) float64 unbiased covariance (divides by N − 1, like ``np.cov``)."""
        fin = self._finished_memo()
        if fin.n < 2 or fin._m2 is None:
            raise PfbenchError(f"FeatureStats.cov: need at least 2 feature rows, have {fin.n}")
        low = np.tril(fin._m2)
        return (low + np.tril(low, -1).T) / (fin.n - 1)

    def state(self) -> dict[str, np.ndarray]:
        """Exact state as plain arrays (``np.savez``-able); see ``from_state``."""
        if self.dim is None or self._mean is None or self._m2 is None:
            empty = np.zeros(0)
            return {"n": np.array(0), "dim": np.array(-1), "mean": empty, "m2": empty, "pending": empty}
        pending = (
            np.concatenate(self._pending).astype(np.float64) if self._pending else np.zeros((0, self.dim))
        )
        return {
            "n": np.array(self._n),
            "dim": np.array(self.dim),
            "mean": self._mean.copy(),
            "m2": np.tril(self._m2),
            "pending": pending,
        }

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> FeatureStats:
        """Rebuilds the object ``state()`` described; later updates give bit-identical results."""
        try:
            dim = int(state["dim"])
            out = cls(None if dim < 0 else dim)
            if dim >= 0:
                out._n = int(state["n"])
                out._mean = np.array(state["mean"], np.float64)
                out._m2 = np.asfortranarray(np.array(state["m2"], np.float64))
                pending = np.array(state["pending"], np.float64).reshape(-1, dim)
                if len(pending):
                    out._pending, out._pending_n = [pending], pending.shape[0]
        except KeyError as err:
            raise PfbenchError(
                f"FeatureStats.from_state: missing key {err}; was it written by state()?"
            ) from None
        if dim >= 0 and (
            out._mean is None or out._mean.shape != (dim,) or out._m2 is None or out._m2.shape != (dim, dim)
        ):
            raise PfbenchError(f"FeatureStats.from_state: arrays do not match dim {dim}; the file is corrupt")
        return out

    def save(self, path: str | Path) -> None:
        """Writes ``state()`` plus ADM-style ``mu``/``sigma`` to an ``.npz`` atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = self.state()
        if self.n >= 2:
            arrays = {**arrays, "mu": self.mean(), "sigma": self.cov()}
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)  # type: ignore[arg-type]  # stubs type **kwds as allow_pickle
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path) -> FeatureStats:
        """Reads a file written by ``save``."""
        if not Path(path).is_file():
            raise PfbenchError(f"feature stats file {path} not found; recompute it (delete the cache entry)")
        with np.load(path) as z:
            return cls.from_state({k: z[k] for k in z.files})


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Runs LAPACK eigensolvers single-threaded.

    Threaded symmetric eigensolvers (MKL and OpenBLAS alike) collapse when the cores are shared:
    a 2048² ``eigh`` measured 1.7 s single-threaded but 20–38 s with 2 threads on a busy 2-core
    machine. One thread costs at most ~2× on an idle one.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _cholesky(sigma: np.ndarray) -> np.ndarray | None:
    """Lower Cholesky factor L (L·Lᵀ = Σ) of a (D, D) float64 matrix, or ``None`` if Σ is not definite."""
    with _one_thread():
        chol, info = torch.linalg.cholesky_ex(torch.from_numpy(sigma))
    if int(info) != 0 or not bool(torch.isfinite(chol).all()):
        return None
    return chol.numpy()  # (D, D) C order, upper triangle zero


def _factor_residual(f: np.ndarray, sigma: np.ndarray) -> float:
    """Relative Frobenius residual ‖F·Fᵀ − Σ‖ / ‖Σ‖, estimated in O(D²) from 4 random probes.

    For E = F·Fᵀ − Σ and V with 4 standard normal columns, E‖E·V‖² = 4‖E‖²: the probe sees a wrong
    factor as surely as the full (D³) product would, at the cost of 4 matrix-vector products.
    """
    v = np.random.default_rng(0).standard_normal((sigma.shape[0], 4))  # (D, 4), fixed: deterministic
    r = f @ (f.T @ v) - sigma @ v  # (D, 4)
    return float(np.linalg.norm(r)) / (2.0 * max(float(np.linalg.norm(sigma)), _TINY))


def _congruence(f: np.ndarray, b: np.ndarray, triangular: bool) -> np.ndarray:
    """M = Fᵀ·B·F, (D, D) float64; lower triangle exact (eigvalsh reads only that one).

    For a lower-triangular F (Cholesky) two ``dtrmm`` calls cost D³ flops in all, half of two GEMMs.
    """
    if not triangular:
        return f.T @ b @ f
    ft = f.T  # Fortran-contiguous view of Fᵀ: upper triangular, passed to BLAS without a copy
    bf = blas.dtrmm(1.0, ft, b.T, side=1, lower=0, trans_a=1)  # B·F (Bᵀ = B), new array
    return blas.dtrmm(1.0, ft, bf, side=0, lower=0, trans_a=0, overwrite_b=1)  # Fᵀ·(B·F)


def _trace_sqrt_product(s1: np.ndarray, s2: np.ndarray, tol: float) -> tuple[float, bool]:
    """tr(sqrt(Σ1 Σ2)) = Σ sqrt(eig(Fᵀ·B·F)) with F·Fᵀ = A, {A, B} = {Σ1, Σ2}; returns (value, checks passed).

    Fᵀ·B·F is symmetric PSD and has the eigenvalues of A·B, which are those of Σ1·Σ2 whichever
    covariance is factored (tr sqrt(Σ1Σ2) = tr sqrt(Σ2Σ1)), so the trace is real by construction.
    A = Σ1 with its Cholesky factor when Σ1 is definite (~0.1 s at D = 2048). A singular Σ1 (fewer
    samples than dimensions) is checked to be PSD up to rounding from its eigenvalues alone, and then
    Σ2 is factored instead if it is definite; only when both are singular does F come from ``eigh``
    (F = V·diag(sqrt(w)), rounding-level negative w clipped). No eigenvectors are computed otherwise.
    """
    a, b, f, ok = s1, s2, _cholesky(s1), True
    if f is None:
        f = _cholesky(s2)
        if f is not None:  # swap roles; Σ1 itself must still be PSD up to rounding (same test as eigh)
            a, b = s2, s1
            with _one_thread():
                w = torch.linalg.eigvalsh(torch.from_numpy(s1))  # ascending (D,)
            ok = bool(w[0] >= -tol * max(float(w.abs().max()), _TINY))
    triangular = f is not None
    if f is None:
        with _one_thread():
            w, v = torch.linalg.eigh(torch.from_numpy(a))  # w ascending (D,); v (D, D)
        ok = bool(w[0] >= -tol * max(float(w.abs().max()), _TINY))
        f = (v * w.clamp_min(0.0).sqrt()).numpy()  # (D, D): F·Fᵀ = V·W·Vᵀ = A
    ok = ok and _factor_residual(f, a) < 1e-6
    m = _congruence(f, b, triangular)  # (D, D)
    with _one_thread():
        lam = torch.linalg.eigvalsh(torch.from_numpy(m), UPLO="L")  # ascending (D,)
    scale = max(float(lam.abs().max()), _TINY)
    ok = ok and bool(lam[0] >= -tol * scale)
    # Independent check: Σλ = tr(M) must equal tr(Σ1 Σ2) = Σ_ij Σ1_ij Σ2_ij.
    tr12 = float(np.vdot(s1, s2))
    ok = ok and abs(float(lam.sum()) - tr12) <= 1e-6 * max(abs(tr12), scale) + 1e-12
    return float(lam.clamp_min(0.0).sqrt().sum()), ok


def _symmetrized(s: np.ndarray, name: str) -> np.ndarray:
    """``s`` if exactly symmetric (``FeatureStats.cov`` output), else (s + sᵀ)/2 after a tolerance check."""
    if np.array_equal(s, s.T):
        return s
    sym = (s + s.T) / 2
    if np.abs(s - sym).max() > 0.5e-6 * max(np.abs(s).max(), 1e-300):  # |s − sᵀ| > 1e-6·max|s|
        raise PfbenchError(f"frechet_distance: {name} is not symmetric; pass a covariance matrix")
    return sym


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2).

    ``‖mu1 − mu2‖² + tr(Σ1) + tr(Σ2) − 2·tr(sqrt(Σ1 Σ2))``, in float64. The trace of the square
    root comes from the eigenvalues (``eigvalsh``, no eigenvectors) of the symmetric ``Fᵀ·Σ2·F``
    with ``F·Fᵀ = Σ1`` (Cholesky; the roles swap when only Σ2 is definite; an ``eigh`` factor when
    both are singular), so it is real by construction and fine for singular (rank-deficient)
    covariances. The result is checked (factor residual, no clearly negative eigenvalues, trace
    identity); if a check fails, ``eps·I``
    is added to both covariances and it is retried once with a warning, as the standard
    implementations do; a second failure raises ``PfbenchError``.

    Args:
        mu1, mu2: (D,) means.
        sigma1, sigma2: (D, D) symmetric positive semi-definite covariances.
        eps: diagonal offset used on the retry.

    Returns:
        The distance as a Python float (≥ 0).
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    d = mu1.shape[0]
    if mu2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise PfbenchError(
            f"frechet_distance: shapes differ: mu1 {mu1.shape}, sigma1 {s1.shape}, mu2 {mu2.shape}, "
            f"sigma2 {s2.shape}; both sides must come from the same feature extractor"
        )
    for name, a in (("mu1", mu1), ("sigma1", s1), ("mu2", mu2), ("sigma2", s2)):
        if not np.isfinite(a).all():
            raise PfbenchError(f"frechet_distance: {name} contains NaN or Inf")
    s1, s2 = _symmetrized(s1, "sigma1"), _symmetrized(s2, "sigma2")
    tol = 1e-9
    tr_sqrt, ok = _trace_sqrt_product(s1, s2, tol)
    if not ok:
        warnings.warn(
            f"frechet_distance: covariance product is singular or ill-conditioned; adding {eps:g}·I "
            "to both covariances and retrying",
            RuntimeWarning,
            stacklevel=2,
        )
        eye = np.eye(d) * eps
        s1, s2 = s1 + eye, s2 + eye
        tr_sqrt, ok = _trace_sqrt_product(s1, s2, tol)
        if not ok:
            raise PfbenchError(
                "frechet_distance: matrix square root failed its checks even after adding eps·I; "
                "a covariance is not positive semi-definite (was it accumulated in float32?)"
            )
    diff = mu1 - mu2
    fd = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_sqrt)
    scale = float(np.trace(s1) + np.trace(s2) + diff @ diff)
    if fd < -1e-8 * max(scale, 1.0):
        raise PfbenchError(f"frechet_distance: got negative distance {fd:.3g}; covariances are inconsistent")
    return max(fd, 0.0)


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
