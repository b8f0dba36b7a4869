"""Feature statistics, Fréchet distance, IS formula and precision/recall (SPEC §6)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.linalg
import torch

from pfbench import PfbenchError
from pfbench.metrics.stats import FeatureStats, frechet_distance, inception_score, precision_recall


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


def test_stats_match_numpy_one_shot() -> None:
    x = _feats(5000, 24)
    st = FeatureStats()
    st.update(torch.from_numpy(x))
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(st.mean(), x64.mean(0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(st.cov(), np.cov(x64, rowvar=False), rtol=1e-10, atol=1e-12)
    assert st.n == 5000 and st.dim == 24


@pytest.mark.parametrize("sizes", [[1] * 7 + [4993], [333] * 15 + [5], [2048, 2048, 904], [4100, 900]])
def test_streaming_is_bit_identical_to_one_shot(sizes: list[int]) -> None:
    x = _feats(sum(sizes), 16, seed=1)
    one = FeatureStats()
    one.update(x)
    many = FeatureStats()
    i = 0
    for s in sizes:
        many.update(x[i : i + s])
        i += s
    assert np.array_equal(one.mean(), many.mean())
    assert np.array_equal(one.cov(), many.cov())


def test_state_round_trip_mid_stream_is_exact(tmp_path) -> None:
    x = _feats(3000, 8, seed=2)
    ref = FeatureStats()
    ref.update(x)
    st = FeatureStats()
    st.update(x[:2500])  # one full chunk + 452 pending rows
    st.save(tmp_path / "s.npz")
    back = FeatureStats.load(tmp_path / "s.npz")
    back.update(x[2500:])
    assert np.array_equal(back.cov(), ref.cov()) and back.n == 3000
    with np.load(tmp_path / "s.npz") as z:  # ADM-style keys ride along
        np.testing.assert_allclose(z["sigma"], np.cov(x[:2500].astype(np.float64), rowvar=False), rtol=1e-10)


def test_merge_equals_concatenation() -> None:
    x = _feats(4000, 12, seed=3)
    a, b, both = FeatureStats(), FeatureStats(), FeatureStats()
    a.update(x[:1300])
    b.update(x[1300:])
    both.update(x)
    m = a.merge(b)
    assert m.n == 4000
    np.testing.assert_allclose(m.mean(), both.mean(), rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(m.cov(), both.cov(), rtol=1e-11, atol=1e-13)


def test_stats_reject_bad_input() -> None:
    st = FeatureStats()
    with pytest.raises(PfbenchError, match=r"\(N, D\)"):
        st.update(np.zeros((2, 3, 4)))
    st.update(np.zeros((2, 3)))
    with pytest.raises(PfbenchError, match="dim 4"):
        st.update(np.zeros((2, 4)))
    with pytest.raises(PfbenchError, match="NaN"):
        st.update(np.full((2, 3), np.nan))


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
