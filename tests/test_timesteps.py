"""Tests for pfbench.train.timesteps: contract over every registered sampler, then per-sampler laws.

Distribution checks use large batches and tolerances of ~5 standard errors (estimated from i.i.d.
rows), and compare against reference values computed here with scipy as well as the numbers of docs/protocol.md §4.
Some tests recover a sampler's per-sample centre by replaying the generator: samplers draw their
per-sample quantity (t, t̄, m, ε0) first, as a (B, 1) tensor.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from scipy import integrate, special, stats

from pfbench import PfbenchError
from pfbench.registry import TIMESTEPS
from pfbench.train.timesteps import (
    LTG,
    SRM,
    Gaussian,
    GlobalLogitNormal,
    GlobalUniform,
    PatchUniform,
    TruncatedGaussian,
    make_timestep_sampler,
)

ALL = [
    "global_uniform",
    "global_logit_normal",
    "patch_uniform",
    "srm",
    "gaussian",
    "truncated_gaussian",
    "ltg",
]
P_MIN = 1e-5  # KS p-value floor: a correct sampler fails with this probability


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def first_uniform(seed: int, batch: int) -> torch.Tensor:
    return torch.rand((batch, 1), generator=gen(seed))  # (B, 1) the centre the sampler drew first


def assert_close_se(samples: np.ndarray, ref: float, what: str, extra: float = 0.0) -> None:
    """samples: one i.i.d. statistic per row; ref within 5 standard errors (+ extra slack)."""
    mean, se = samples.mean(), samples.std(ddof=1) / np.sqrt(len(samples))
    assert abs(mean - ref) <= 5 * se + extra, f"{what}: {mean:.5f} vs {ref:.5f} (se {se:.2g})"


# ---- contract over every registered sampler ----


def test_registry_holds_every_spec_sampler() -> None:
    assert set(ALL) <= set(TIMESTEPS.names())


@pytest.mark.parametrize("name", ALL)
def test_contract_shape_dtype_range_under_bf16_autocast(name: str) -> None:
    sampler = make_timestep_sampler(name)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        t = sampler(64, 37, gen(1))
    assert t.shape == (64, 37) and t.dtype == torch.float32 and t.device.type == "cpu"
    assert bool(((t >= 0) & (t <= 1)).all())
    # bf16 has 8 mantissa bits: float32 draws take far more than 256 distinct values
    assert t.unique().numel() > 256 or name.startswith("global")
    assert sampler(0, 5, gen(0)).shape == (0, 5)


@pytest.mark.parametrize("name", ALL)
def test_contract_determinism_and_seed_dependence(name: str) -> None:
    sampler = make_timestep_sampler(name)
    a, b, c = sampler(8, 16, gen(3)), sampler(8, 16, gen(3)), sampler(8, 16, gen(4))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    g = gen(5)
    assert not torch.equal(sampler(8, 16, g), sampler(8, 16, g))  # the generator advances


def test_sampler_rejects_bad_call() -> None:
    with pytest.raises(PfbenchError, match="tokens"):
        LTG()(4, 0, gen())


# ---- make_timestep_sampler ----


def test_make_defaults_match_spec() -> None:
    assert make_timestep_sampler("ltg") == LTG(m=0.7, s=1.0, std=0.6)
    assert make_timestep_sampler("srm") == SRM(sharpness=1.0)
    assert make_timestep_sampler("gaussian") == Gaussian(std=0.2)
    assert make_timestep_sampler("truncated_gaussian") == TruncatedGaussian(std=0.2)
    assert make_timestep_sampler("global_logit_normal") == GlobalLogitNormal(m=0.0, s=1.0)
    assert make_timestep_sampler("ltg", m=0.5) == LTG(m=0.5)
    assert isinstance(make_timestep_sampler("patch_uniform"), PatchUniform)
    assert dataclasses.is_dataclass(LTG) and LTG.__dataclass_params__.frozen  # type: ignore[attr-defined]


def test_make_errors_name_the_fix() -> None:
    with pytest.raises(PfbenchError, match="'sharpness'"):
        make_timestep_sampler("srm", sharpnes=2)
    with pytest.raises(PfbenchError, match="'ltg'"):
        make_timestep_sampler("ltgg")
    with pytest.raises(PfbenchError, match="no parameter 'm'"):
        make_timestep_sampler("global_uniform", m=0.1)
    with pytest.raises(PfbenchError, match="finite number"):
        make_timestep_sampler("ltg", m="0.7")
    with pytest.raises(PfbenchError, match="sharpness"):
        make_timestep_sampler("srm", sharpness=0)


# ---- global and i.i.d. samplers ----


def test_global_uniform_constant_rows_and_ks() -> None:
    t = GlobalUniform()(50_000, 3, gen(10))
    assert torch.equal(t, t[:, :1].expand_as(t))
    assert stats.kstest(t[:, 0].double().numpy(), "uniform").pvalue > P_MIN


@pytest.mark.parametrize("m,s", [(0.0, 1.0), (0.3, 1.5)])
def test_global_logit_normal_ks(m: float, s: float) -> None:
    t = GlobalLogitNormal(m=m, s=s)(50_000, 3, gen(11))
    assert torch.equal(t, t[:, :1].expand_as(t))
    cdf = lambda x: stats.norm.cdf((special.logit(x) - m) / s)
    assert stats.kstest(t[:, 0].double().numpy(), cdf).pvalue > P_MIN


def test_patch_uniform_iid() -> None:
    t = PatchUniform()(50_000, 4, gen(12)).double().numpy()
    assert stats.kstest(t.reshape(-1), "uniform").pvalue > P_MIN
    r = np.corrcoef(t[:, 0], t[:, 1])[0, 1]
    assert abs(r) < 5 / np.sqrt(len(t))
    assert t.std(axis=1).mean() > 0.2  # rows are not constant


# ---- SRM ----


def srm_reference(tokens: int, sharpness: float, mean: float, rng: np.random.Generator) -> np.ndarray:
    """Plain per-sample recursion, read straight from docs/protocol.md §4 (no vectorisation)."""

    def split(d: int, budget: float) -> list[float]:
        if d == 1:
            return [budget]
        k = d // 2
        a = (d - 1 - d % 2) ** 1.05 * sharpness
        lo, hi = max(0.0, budget - (d - k)), min(budget, k)
        first = lo + (hi - lo) * rng.beta(a, a)
        return split(k, first) + split(d - k, budget - first)

    return rng.permutation(split(tokens, tokens * mean))


def test_srm_row_mean_is_t_bar_and_range() -> None:
    t = SRM()(2000, 37, gen(20))
    t_bar = first_uniform(20, 2000)[:, 0]
    assert torch.allclose(t.double().mean(1), t_bar.double(), atol=1e-6)
    assert bool(((t >= 0) & (t <= 1)).all())
    assert stats.kstest(t.double().mean(1).numpy(), "uniform").pvalue > P_MIN


@pytest.mark.parametrize("tokens,sharpness", [(2, 1.0), (6, 2.0), (7, 0.5)])
def test_srm_matches_reference_recursion(tokens: int, sharpness: float) -> None:
    n = 4000
    ours = SRM(sharpness=sharpness)(n, tokens, gen(21)).double().numpy()
    rng = np.random.default_rng(0)
    ref = np.stack([srm_reference(tokens, sharpness, rng.uniform(), rng) for _ in range(n)])
    for name in ("max", "min", "std"):
        p = stats.ks_2samp(getattr(ours, name)(axis=1), getattr(ref, name)(axis=1)).pvalue
        assert p > P_MIN, f"row {name} differs from the recursion of docs/protocol.md §4 (p={p:.2g})"
    # a (randomly placed) cell's deviation from its row mean
    p = stats.ks_2samp(ours[:, 0] - ours.mean(1), ref[:, 0] - ref.mean(1)).pvalue
    assert p > P_MIN


def test_srm_two_tokens_split_is_uniform_between_bounds() -> None:
    t = SRM()(20_000, 2, gen(22)).double()
    budget = t.sum(1)
    lo, hi = (budget - 1).clamp(min=0), budget.clamp(max=1)
    frac = ((t[:, 0] - lo) / (hi - lo)).numpy()  # Beta(1, 1) for d = 2
    assert stats.kstest(frac, "uniform").pvalue > P_MIN


def test_srm_sharpness_controls_spread() -> None:
    spread = [SRM(sharpness=s)(2000, 64, gen(23)).std(1).mean().item() for s in (0.25, 1.0, 4.0)]
    assert spread[0] > 1.2 * spread[1] > 1.44 * spread[2], spread


@pytest.mark.parametrize("tokens,sharpness", [(64, 1.0), (7, 1.0), (16, 0.3)])
def test_srm_first_split_is_scaled_beta(tokens: int, sharpness: float) -> None:
    leaves = SRM(sharpness=sharpness).tree_order(20_000, tokens, gen(24))  # (B, T) float64
    k = tokens // 2
    budget, first = leaves.sum(1), leaves[:, :k].sum(1)
    lo, hi = (budget - (tokens - k)).clamp(min=0), budget.clamp(max=k)
    frac = ((first - lo) / (hi - lo)).numpy()
    a = (tokens - 1 - tokens % 2) ** 1.05 * sharpness
    assert stats.kstest(frac, stats.beta(a, a).cdf).pvalue > P_MIN
    assert bool((leaves >= -1e-9).all() and (leaves <= 1 + 1e-9).all())


def test_srm_output_is_a_uniform_row_permutation_of_the_tree() -> None:
    b, n_tok = 20_000, 8
    leaves = SRM().tree_order(b, n_tok, gen(25)).float().clamp(0, 1)
    t = SRM()(b, n_tok, gen(25))
    assert torch.equal(t.sort(1).values, leaves.sort(1).values)
    # where did leaf 0 go? uniform over the T positions
    pos = (t == leaves[:, :1]).float().argmax(1).numpy()
    assert stats.chisquare(np.bincount(pos, minlength=n_tok)).pvalue > P_MIN


# ---- Gaussian family ----


def test_gaussian_sigma_rule_and_clamp() -> None:
    std, b, n_tok = 0.2, 20_000, 32
    t = Gaussian(std=std)(b, n_tok, gen(30)).double()
    m = first_uniform(30, b).double()
    sigma = torch.clamp(torch.minimum(m, 1 - m) / 2, max=std)
    z = ((t - m) / sigma).numpy()
    # ε is N(0,1) where unclamped; σ ≤ min(m, 1−m)/2 means clamping needs |ε| > 2
    zz = z[np.abs(z) < 2]
    assert stats.kstest(zz[:100_000], stats.truncnorm(-2, 2).cdf).pvalue > P_MIN

    def p_zero(mu: float) -> float:
        return float(stats.norm.cdf(-mu / min(min(mu, 1 - mu) / 2, std)))

    ref = integrate.quad(p_zero, 0, 1, points=[2 * std, 0.5])[0]  # E_m[P(m + σε < 0)]
    assert_close_se((t == 0).double().mean(1).numpy(), ref, "P(t = 0)")
    assert_close_se((t == 1).double().mean(1).numpy(), ref, "P(t = 1)")
    assert (t == 0).any() and (t == 1).any()


def test_truncated_gaussian_below_m_and_sigma_rule() -> None:
    std, b = 0.2, 20_000
    t = TruncatedGaussian(std=std)(b, 32, gen(31)).double()
    m = first_uniform(31, b).double()
    assert bool((t <= m + 1e-7).all())
    low = (m[:, 0] < 2 * std).numpy()  # σ = m/2: fold threshold at |ε| = 2
    z = (2 * (m - t) / m).numpy()[low]
    ref = (2 * stats.norm.cdf(1) - 1) + 0.5 * 2 * stats.norm.sf(2)  # P(|ε|≤1) + redraw·P(2(1−U)≤1)
    assert_close_se((z <= 1).mean(1), ref, "P(z<=1), m<2std")
    # small std: σ = std, no redraws; (m − t)/σ is half-normal
    t2 = TruncatedGaussian(std=0.05)(b, 8, gen(32)).double()
    m2 = first_uniform(32, b).double()
    z2 = ((m2 - t2) / 0.05).numpy()[(m2[:, 0] > 0.5).numpy()]
    assert stats.kstest(z2.reshape(-1)[:100_000], stats.halfnorm.cdf).pvalue > P_MIN


# ---- LTG ----


def ltg_reference(m: float = 0.7, s: float = 1.0) -> dict[str, float]:
    """Numerical integration of the LTG law (std ≥ 0.5, so σ = t_max/2)."""
    phi = stats.norm.pdf
    e_tmax = integrate.quad(lambda e: special.expit(m + s * e) * phi(e), -np.inf, np.inf)[0]
    redraw = 2 * stats.norm.sf(2)
    k = integrate.quad(lambda e: (1 - abs(e) / 2) * phi(e), -2, 2)[0] + 0.5 * redraw  # E[t | t_max] / t_max

    def p_above(e0: float, x: float = 0.9) -> float:
        tm = special.expit(m + s * e0)
        if tm <= x:
            return 0.0
        return (2 * stats.norm.cdf(2 * (1 - x / tm)) - 1) + redraw * (tm - x) / tm

    p09 = integrate.quad(lambda e: p_above(e) * phi(e), (special.logit(0.9) - m) / s, np.inf)[0]
    return {
        "E_tmax": e_tmax,
        "median": float(special.expit(m)),
        "E_t": k * e_tmax,
        "p09": p09,
        "redraw": redraw,
    }


def test_ltg_reference_agrees_with_spec_numbers() -> None:
    ref = ltg_reference()
    spec = {"E_tmax": 0.642, "median": 0.667, "E_t": 0.406, "p09": 0.0034, "redraw": 0.0455}
    for key, value in spec.items():
        assert abs(ref[key] - value) <= 0.0015, (key, ref[key], value)  # docs/protocol.md §4 rounds to ~3 digits


def test_ltg_distribution() -> None:
    b, n_tok = 200_000, 8
    draw = LTG().sample_with_info(b, n_tok, gen(40))
    t, t_max, red = draw.t.double(), draw.t_max.double(), draw.redrawn
    ref = ltg_reference()
    assert torch.equal(draw.t, LTG()(b, n_tok, gen(40)))  # same stream as __call__
    assert bool((t <= t_max[:, None]).all()) and bool((t >= 0).all())
    assert_close_se(t_max.numpy(), ref["E_tmax"], "E[t_max]")
    assert_close_se(t_max.numpy(), 0.642, "E[t_max] (docs/protocol.md §4)", extra=0.0015)
    below = (t_max <= ref["median"]).double().numpy()
    assert_close_se(below, 0.5, "P(t_max <= sigmoid(m))")
    assert abs(t_max.median().item() - 0.667) < 0.003
    assert_close_se(t.mean(1).numpy(), ref["E_t"], "E[t_i]")
    assert_close_se(t.mean(1).numpy(), 0.406, "E[t_i] (docs/protocol.md §4)", extra=0.0015)
    assert_close_se((t > 0.9).double().mean(1).numpy(), ref["p09"], "P(t_i > 0.9)")
    assert_close_se(red.double().mean(1).numpy(), ref["redraw"], "redraw rate")
    # redrawn tokens are U(0, t_max); kept ones are t_max(1 − |ε|/2) with |ε| ≤ 2
    frac = (t / t_max[:, None])[red].numpy()
    assert stats.kstest(frac[:100_000], "uniform").pvalue > P_MIN
    z = (2 * (1 - t / t_max[:, None]))[~red].numpy()
    assert stats.kstest(z[:100_000], stats.truncnorm(0, 2).cdf).pvalue > P_MIN
    assert (
        stats.kstest(draw.t_max.double().numpy(), lambda x: stats.norm.cdf(special.logit(x) - 0.7)).pvalue
        > P_MIN
    )


def test_ltg_std_caps_sigma() -> None:
    # std = 0.05 < t_max/2 for t_max > 0.1: (t_max − t)/0.05 is half-normal, no redraws there
    draw = LTG(std=0.05).sample_with_info(20_000, 8, gen(41))
    rows = draw.t_max > 0.5
    z = ((draw.t_max[:, None] - draw.t) / 0.05)[rows].double().numpy()
    assert stats.kstest(z.reshape(-1)[:100_000], stats.halfnorm.cdf).pvalue > P_MIN
    assert not bool(draw.redrawn[rows].any())
