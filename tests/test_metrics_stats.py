"""Feature statistics, Fréchet distance, IS formula and precision/recall (docs/protocol.md §9)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.linalg
import torch

from pfbench import PfbenchError
from pfbench.metrics.frechet import frechet_distance
from pfbench.metrics.scores import inception_score, precision_recall
from pfbench.metrics.stats import FeatureStats


def _feats(n: int, d: int, seed: int = 0, offset: float = 3.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((d, d)) / np.sqrt(d)
    return (rng.standard_normal((n, d)) @ mix + offset).astype(np.float32)  # (n, d), mean far from 0


def _reference_fd(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """The classic pytorch-fid formula with scipy's sqrtm on the non-symmetric product."""
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    covmean = np.real(covmean)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def _random_cov(d: int, rank: int, seed: int) -> np.ndarray:
    a = np.random.default_rng(seed).standard_normal((d, rank))
    return a @ a.T / rank


# ---------------------------------------------------------------- FeatureStats


# Covariance agreement with np.cov: float64 Gram products to ~1e-12, float32 ones (centred chunks)
# to float32 rounding of the centred values, relative to the largest entry.
COV_RTOL = {"float64": 1e-10, "float32": 2e-6}


@pytest.mark.parametrize("gemm", ["float32", "float64"])
def test_stats_match_numpy_one_shot(gemm: str) -> None:
    x = _feats(5000, 24)
    st = FeatureStats(gemm=gemm)
    st.update(torch.from_numpy(x))
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(st.mean(), x64.mean(0), rtol=0, atol=1e-12)
    ref = np.cov(x64, rowvar=False)
    np.testing.assert_allclose(st.cov(), ref, rtol=0, atol=COV_RTOL[gemm] * np.abs(ref).max())
    assert np.array_equal(st.cov(), st.cov().T)
    assert st.n == 5000 and st.dim == 24


@pytest.mark.parametrize("gemm", ["float32", "float64"])
@pytest.mark.parametrize("sizes", [[1] * 7 + [4993], [333] * 15 + [5], [2048, 2048, 904], [4100, 900]])
def test_streaming_is_bit_identical_to_one_shot(sizes: list[int], gemm: str) -> None:
    x = _feats(sum(sizes), 16, seed=1)
    one = FeatureStats(gemm=gemm)
    one.update(x)
    many = FeatureStats(gemm=gemm)
    i = 0
    for s in sizes:
        many.update(x[i : i + s])
        i += s
    assert np.array_equal(one.mean(), many.mean())
    assert np.array_equal(one.cov(), many.cov())


def test_stats_reject_bad_input() -> None:
    st = FeatureStats()
    with pytest.raises(PfbenchError, match=r"\(N, D\)"):
        st.update(np.zeros((2, 3, 4)))
    st.update(np.zeros((2, 3)))
    with pytest.raises(PfbenchError, match="dim 4"):
        st.update(np.zeros((2, 4)))
    with pytest.raises(PfbenchError, match="NaN"):
        st.update(np.full((2, 3), np.nan))
    with pytest.raises(PfbenchError, match="gemm"):
        FeatureStats(gemm="float16")


def test_non_finite_values_in_whole_chunks_are_refused_before_any_change() -> None:
    x = _feats(3 * FeatureStats.CHUNK + 10, 8, seed=11)
    st = FeatureStats()
    st.update(x[:5])
    bad = x.copy()
    bad[2 * FeatureStats.CHUNK + 7, 3] = np.inf  # inside the second whole chunk of this update
    with pytest.raises(PfbenchError, match="NaN or Inf"):
        st.update(bad)
    assert st.n == 5  # nothing was folded: the stream goes on as if the bad batch never came
    st.update(x[5:])
    whole = FeatureStats()
    whole.update(x)
    assert np.array_equal(st.cov(), whole.cov()) and np.array_equal(st.mean(), whole.mean())


# ---------------------------------------------------------------- float32 Gram products vs all-float64 (issue 11.5)


def _real_like(kind: str, n: int, d: int, seed: int, shift: float = 0.0) -> np.ndarray:
    """Pool3-like (n, d) float32 features: non-negative, heavy-tailed, means far from 0.

    ``relu``: ReLU of correlated Gaussians (spectrum over 3 decades) times a log-normal per-image scale.
    ``subspace``: non-negative log-normal codes on 24 non-negative directions: rank-24 covariance.
    ``dead``: ``relu`` with a quarter of the units dead (constant 0).
    ``twins``: ``relu`` with a quarter of the units duplicated (exactly dependent).
    ``layernorm``: ``relu`` through a LayerNorm with affine weights (zero-sum constraint: rank D − 1).
    """
    rng = np.random.default_rng(seed)
    fixed = np.random.default_rng(1000)  # the same feature "network" for every set
    scale = rng.lognormal(0.0, 0.5, (n, 1))  # heavy tail: a few images with large activations
    if kind == "subspace":
        w = fixed.uniform(0.0, 1.0, (24, d))
        return (rng.lognormal(shift, 0.7, (n, 24)) @ w * scale).astype(np.float32)
    mix = fixed.standard_normal((d, d)) * np.geomspace(1.0, 1e-3, d)[:, None]  # rows scaled
    x = np.maximum(rng.standard_normal((n, d)) @ mix + 0.3 + shift, 0.0) * scale
    if kind == "dead":
        x[:, : d // 4] = 0.0
    if kind == "twins":
        x[:, : d // 4] = x[:, d // 4 : d // 2]
    if kind == "layernorm":
        x = (x - x.mean(1, keepdims=True)) / x.std(1, keepdims=True)
        x = x * fixed.uniform(0.5, 2.0, d) + fixed.uniform(0.0, 1.0, d)
    return x.astype(np.float32)


def _fid(a: np.ndarray, b: np.ndarray, gemm: str) -> tuple[float, str]:
    """FID of a vs b and the Gram dtype the generated side's statistics ended up with."""
    sa, sb = FeatureStats(gemm=gemm), FeatureStats(gemm=gemm)
    sa.update(a)
    sb.update(b)
    return frechet_distance(sa.mean(), sa.cov(), sb.mean(), sb.cov()), sa.gemm


@pytest.mark.parametrize(
    "kind,n_gen,n_ref,d,used",
    [("relu", 12_000, 20_000, 192, "float32"), ("dead", 12_000, 20_000, 192, "float32"),
     ("twins", 12_000, 20_000, 192, "float64"), ("layernorm", 12_000, 20_000, 192, "float64"),
     ("subspace", 12_000, 20_000, 192, "float64"), ("relu", 1500, 20_000, 256, "float32"),
     ("relu", 700, 20_000, 256, "float32"),
     ("relu", 100, 20_000, 256, "float32"), ("relu", 100, 150, 256, "float32")],
)  # fmt: skip
def test_float32_gram_fid_matches_all_float64(kind: str, n_gen: int, n_ref: int, d: int, used: str) -> None:
    """Issue 11.5 acceptance: FID relative difference ≤ 1e-6 against the all-float64 path.

    Generated and reference sets come from nearly the same distribution (small FID, where
    cancellation in tr Σ1 + tr Σ2 − 2·tr sqrt(Σ1Σ2) makes relative errors largest). Exactly dependent
    units (twins, LayerNorm, a rank-24 subspace) switch to float64 Gram products; the last three
    cases have few generated rows (N < 4·D, N < D: singular covariances) and a tiny reference.
    """
    gen, ref = _real_like(kind, n_gen, d, seed=1), _real_like(kind, n_ref, d, seed=2, shift=0.02)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # neither path may need the eps·I retry
        (exact, _), (fast, gemm) = _fid(gen, ref, "float64"), _fid(gen, ref, "float32")
    assert exact > 0 and gemm == used
    assert abs(fast - exact) <= 1e-6 * exact


def test_float32_gram_needs_centred_chunks() -> None:
    """The same float32 Gram product on raw (uncentred) rows is far off: centring is what makes it exact."""
    x = _real_like("relu", 4096, 64, seed=3) + np.float32(100.0)  # means ≫ spread: offset activations
    from scipy.linalg import blas

    st = FeatureStats(gemm="float32")
    st.update(x)
    exact = np.cov(x.astype(np.float64), rowvar=False)
    raw = blas.ssyrk(1.0, x.T, trans=0, lower=1).astype(np.float64)  # (D, D) Σxxᵀ in float32
    raw = np.tril(raw) + np.tril(raw, -1).T
    mu = x.mean(0, dtype=np.float64)
    naive = (raw - x.shape[0] * np.outer(mu, mu)) / (x.shape[0] - 1)
    err = lambda c: np.abs(c - exact).max() / np.abs(exact).max()  # noqa: E731
    assert err(st.cov()) < COV_RTOL["float32"] < 1e-4 < err(naive)  # raw moments: 100× worse or more


def test_few_rows_are_accumulated_in_float64() -> None:
    """A lone chunk below 4·D rows (singular or ill-conditioned covariance) never goes through float32."""
    x = _real_like("relu", 300, 256, seed=4)
    a, b = FeatureStats(gemm="float32"), FeatureStats(gemm="float64")
    a.update(x)
    b.update(x)
    assert np.array_equal(a.cov(), b.cov()) and a.chunk == b.chunk == 2048
    big = FeatureStats(dim=2048)
    assert big.chunk == 8192  # a chunk holds at least 4·D rows, so the lone first chunk is all the data


# ---------------------------------------------------------------- Fréchet distance


@pytest.mark.parametrize("d,rank", [(16, 16), (64, 64), (32, 10), (48, 20)])
def test_fd_matches_sqrtm_reference(d: int, rank: int) -> None:
    rng = np.random.default_rng(d + rank)
    s1, s2 = _random_cov(d, rank, 1) + 1e-3 * np.eye(d) * (rank == d), _random_cov(d, rank, 2)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    got = frechet_distance(mu1, s1, mu2, s2)
    ref = _reference_fd(mu1, s1, mu2, s2)
    assert got == pytest.approx(ref, rel=1e-7, abs=1e-7)


def test_fd_self_zero_and_symmetric_on_real_stats() -> None:
    a, b = FeatureStats(), FeatureStats()
    a.update(_feats(3000, 32, seed=4))
    b.update(_feats(3000, 32, seed=5, offset=3.2))
    mu1, s1, mu2, s2 = a.mean(), a.cov(), b.mean(), b.cov()
    assert abs(frechet_distance(mu1, s1, mu1, s1)) < 1e-9
    fd12, fd21 = frechet_distance(mu1, s1, mu2, s2), frechet_distance(mu2, s2, mu1, s1)
    assert fd12 > 0.1
    assert fd12 == pytest.approx(fd21, rel=1e-9)


def test_fd_closed_form_diagonal() -> None:
    rng = np.random.default_rng(6)
    v1, v2 = rng.uniform(0.1, 3, 40), rng.uniform(0.1, 3, 40)
    v1[:5] = 0.0  # singular: some zero variances
    mu1, mu2 = rng.standard_normal(40), rng.standard_normal(40)
    expected = float(((mu1 - mu2) ** 2).sum() + ((np.sqrt(v1) - np.sqrt(v2)) ** 2).sum())
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, rel=1e-10)


def test_fd_rank_deficient_few_samples_is_real_and_stable() -> None:
    # N < D: both covariances singular, where sqrtm(Σ1Σ2) is known to go complex/unstable.
    x, y = _feats(50, 128, seed=7), _feats(50, 128, seed=8)
    s1, s2 = np.cov(x.astype(np.float64), rowvar=False), np.cov(y.astype(np.float64), rowvar=False)
    mu1, mu2 = x.mean(0).astype(np.float64), y.mean(0).astype(np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no retry warning for a merely singular covariance
        fd = frechet_distance(mu1, s1, mu2, s2)
    assert isinstance(fd, float) and np.isfinite(fd) and fd > 0
    # Same value computed with the roles of the two covariances swapped.
    assert fd == pytest.approx(frechet_distance(mu2, s2, mu1, s1), rel=1e-8)


def test_fd_retries_with_eps_then_refuses() -> None:
    d = 10
    s = _random_cov(d, d, 9)
    w, v = np.linalg.eigh(s)
    w[0] = -1e-7 * w[-1]  # slightly indefinite, like a float32-accumulated covariance
    s_bad = (v * w) @ v.T
    with pytest.warns(RuntimeWarning, match="adding"):
        fd = frechet_distance(np.zeros(d), s_bad, np.zeros(d), s, eps=1e-3)
    assert fd >= 0.0
    w[0] = -0.5 * w[-1]  # clearly not a covariance
    with pytest.raises(PfbenchError, match="positive semi-definite"), pytest.warns(RuntimeWarning):
        frechet_distance(np.zeros(d), (v * w) @ v.T, np.zeros(d), s)


def test_fd_rejects_shape_mismatch() -> None:
    with pytest.raises(PfbenchError, match="shapes differ"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


# ---------------------------------------------------------------- IS and precision/recall


def test_inception_score_extremes() -> None:
    k, n = 10, 1000
    confident_diverse = np.eye(k)[np.arange(n) % k]  # one-hot, all classes used
    assert inception_score(confident_diverse)[0] == pytest.approx(k, rel=1e-9)
    uniform = np.full((n, k), 1.0 / k)
    assert inception_score(uniform)[0] == pytest.approx(1.0, abs=1e-9)
    collapsed = np.eye(k)[np.zeros(n, int)]
    assert inception_score(collapsed)[0] == pytest.approx(1.0, abs=1e-9)


def test_precision_recall_manifolds() -> None:
    rng = np.random.default_rng(10)
    real = rng.standard_normal((600, 8))
    p, r = precision_recall(real, rng.standard_normal((600, 8)))
    assert p > 0.8 and r > 0.8
    # Mode collapse: samples all near one real point: precise but no recall.
    p, r = precision_recall(real, real[:1] + 0.01 * rng.standard_normal((600, 8)))
    assert p > 0.95 and r < 0.05
    # Far away samples: neither.
    p, r = precision_recall(real, rng.standard_normal((600, 8)) + 10.0)
    assert p == 0.0 and r == 0.0
