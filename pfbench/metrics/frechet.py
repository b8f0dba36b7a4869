"""Fréchet distance between two Gaussians, real by construction and numerically checked (docs/protocol.md §9, §11).

``frechet_distance`` gets tr(sqrt(Σ1 Σ2)) from the eigenvalues of a symmetric similar matrix
(``Fᵀ·Σ2·F`` with ``F·Fᵀ = Σ1``) in float64, checks it, and never returns a complex number (the classic
``scipy.linalg.sqrtm(Σ1 Σ2)`` route can blow up into imaginary parts: docs/protocol.md §11).

Cost at D = 2048 on one core: a Cholesky (D³/3 flops, ~0.15 s), two ``dtrmm`` for Fᵀ·Σ2·F (~0.45 s,
threaded like all of scipy's BLAS) and one ``eigvalsh`` without eigenvectors (~0.65 s, single-threaded
on purpose: see ``_one_thread``). LAPACK's ``dsygst`` forms Fᵀ·Σ2·F in half the flops, but its many
small steps made it 4× slower than the two ``dtrmm`` with two BLAS threads on a busy machine.
``pfbench bench fd`` measures it.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import numpy as np
import torch
from scipy.linalg import blas

from pfbench import PfbenchError

_TINY = float(np.finfo(np.float64).tiny)


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
