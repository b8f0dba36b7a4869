"""Claims of the validity study (pfbench.report.claims): paired comparisons on frames with a known answer."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from pfbench import PfbenchError
from pfbench.report.claims import (
    FAILS,
    HOLDS,
    PAPER_CLAIMS,
    PF_SIT,
    SHOWN,
    SKIPPED,
    UNSURE,
    Claim,
    Side,
    compare,
    evaluate_claims,
    split_model,
)

LA_DL = next(c for c in PAPER_CLAIMS if c.name == "look_ahead < dual_loop")


def _cells(values: dict[str, list[float]], nfes: tuple[int, ...] = (8, 16), seeds_per_model: int = 1,
           gflops: dict[str, list[float]] | None = None, metric: str = "fd_embedded") -> pd.DataFrame:
    """Cell rows of model ``pf`` trained with seeds 0..n-1; values[sampler][train_seed] (same at every NFE unless
    gflops gives per-NFE GFLOPs, then value = values + log2(gflops))."""
    rows = []
    for sampler, per_seed in values.items():
        for ts, v in enumerate(per_seed):
            for k, nfe in enumerate(nfes):
                for s in range(seeds_per_model):
                    g = gflops[sampler][k] if gflops else nfe * 0.03
                    value = v + (math.log2(g) if gflops else 0.0) + 0.01 * s
                    rows.append({"kind": "cell", "model": f"pf@s{ts}", "sampler": sampler, "variant": "",
                                 "nfe_budget": nfe, "gflops": g, "seed": ts + 10 * s, "cfg_scale": 1.0,
                                 "metric": metric, "value": value, "higher_is_better": metric != "fd_embedded"})
    return pd.DataFrame(rows)


def _rows_for(table: pd.DataFrame, claim: str, basis_prefix: str = "NFE") -> pd.DataFrame:
    return table[(table["claim"] == claim) & table["basis"].str.startswith(basis_prefix)]


def test_split_model() -> None:
    assert split_model("pf@s12") == ("pf", 12.0)
    base, seed = split_model("pf")
    assert base == "pf" and math.isnan(seed)


def test_compare_matches_paired_t_test() -> None:
    # scipy's ttest_rel path against the textbook formula written out in numpy: t = mean(d) / (sd(d) / sqrt(n))
    rng = np.random.default_rng(3)
    for n in (2, 3, 4, 9):
        a, b = rng.normal(size=n), rng.normal(size=n)
        d = a - b
        out = compare(a, b)
        se = np.sqrt(np.sum((d - d.mean()) ** 2) / (n - 1)) / np.sqrt(n)
        half = stats.t.ppf(0.975, n - 1) * se
        assert out["n"] == n and out["diff"] == pytest.approx(d.mean(), rel=1e-12)
        assert out["p"] == pytest.approx(2 * stats.t.sf(abs(d.mean()) / se, n - 1), rel=1e-9)
        assert (out["lo"], out["hi"]) == pytest.approx((d.mean() - half, d.mean() + half), rel=1e-9)


def test_clear_ordering_holds() -> None:
    table = evaluate_claims(_cells({"look_ahead": [1.0, 1.1, 0.9], "dual_loop": [2.0, 2.2, 1.95]}))
    rows = _rows_for(table, LA_DL.name)
    assert list(rows["basis"]) == ["NFE 8", "NFE 16"]
    assert (rows["verdict"] == HOLDS).all()
    assert (rows["unit"] == "training seed").all() and (rows["n"] == 3).all()
    # by how much: (2.05 - 1.0) / 2.05 of the worse side's mean
    assert rows["pct"].iloc[0] == pytest.approx(100 * (np.mean([2.0, 2.2, 1.95]) - 1.0) / np.mean([2.0, 2.2, 1.95]))


def test_reversed_ordering_does_not_hold() -> None:
    table = evaluate_claims(_cells({"look_ahead": [2.0, 2.2, 1.95], "dual_loop": [1.0, 1.1, 0.9]}))
    rows = _rows_for(table, LA_DL.name)
    assert (rows["verdict"] == FAILS).all() and (rows["pct"] < 0).all()


def test_noise_is_inconclusive() -> None:
    table = evaluate_claims(_cells({"look_ahead": [1.0, 2.0, 1.5], "dual_loop": [1.5, 1.4, 1.7]}))
    rows = _rows_for(table, LA_DL.name)
    assert (rows["verdict"] == UNSURE).all()
    assert (rows["lo"] < 0).all() and (rows["hi"] > 0).all()


def test_higher_is_better_metric_is_oriented() -> None:
    table = evaluate_claims(_cells({"look_ahead": [0.9, 0.91, 0.92], "dual_loop": [0.5, 0.52, 0.49]},
                                   metric="class_acc"))
    assert (_rows_for(table, LA_DL.name)["verdict"] == HOLDS).all()


def test_sampling_seeds_average_within_training_seed() -> None:
    # 3 training seeds x 2 sampling seeds: the unit is the training seed (n = 3), not the 6 cells.
    table = evaluate_claims(_cells({"look_ahead": [1.0, 1.1, 0.9], "dual_loop": [2.0, 2.2, 1.95]},
                                   seeds_per_model=2))
    assert (_rows_for(table, LA_DL.name)["n"] == 3).all()


def test_without_training_seeds_pairs_sampling_seeds() -> None:
    df = _cells({"look_ahead": [1.0, 1.1, 0.9], "dual_loop": [2.0, 2.2, 1.95]})
    df = df.assign(model="pf")  # one model, its seeds 0, 1, 2 are sampling seeds
    rows = _rows_for(evaluate_claims(df), LA_DL.name)
    assert (rows["unit"] == "sampling seed").all() and (rows["n"] == 3).all()


def test_equal_gflops_interpolates_in_log_gflops() -> None:
    # value = offset + log2(gflops): at the worse side's GFLOPs 2^1.5 the better side reads offset + 1.5 exactly.
    gf = {"look_ahead": [1.0, 2.0, 4.0], "dual_loop": [2 ** 1.5, 8.0, 16.0]}
    df = _cells({"look_ahead": [0.0, 0.1, -0.1], "dual_loop": [1.0, 1.2, 0.8]}, nfes=(8, 16, 32), gflops=gf)
    all_rows = _rows_for(evaluate_claims(df), LA_DL.name, "GFLOPs")
    rows = all_rows[all_rows["basis_kind"] == "interpolated"]
    assert len(rows) == 1  # dual_loop's 8 and 16 GFLOPs lie outside look_ahead's range: no extrapolation
    assert rows["better_mean"].iloc[0] == pytest.approx(1.5)
    assert rows["worse_mean"].iloc[0] == pytest.approx(1.5 + 1.0)
    # shown, not counted: an interpolation re-reads the cells of the NFE bases
    assert rows["verdict"].iloc[0] == SHOWN and rows["verdict_raw"].iloc[0] == HOLDS and np.isnan(rows["p_holm"].iloc[0])
    # the two budgets outside the range are listed with the reason, never dropped
    skipped = all_rows[all_rows["basis_kind"] == "not compared"]
    assert len(skipped) == 2 and (skipped["verdict"] == SKIPPED).all()
    assert list(skipped["reason"]) == [f"look_ahead 4 vs dual_loop {g} GFLOPs: no common point" for g in (8, 16)]


def test_curve_claim_reads_worse_curve_at_equal_compute() -> None:
    rows = []
    for ts in range(3):
        rows.append({"kind": "curve", "model": f"pf@s{ts}", "sampler": "euler_pf", "nfe_budget": 16,
                     "train_step": 100, "train_gflops": 10.0, "train_wall_s": 5.0, "seed": 0,
                     "metric": "fd_embedded", "value": 1.0 + 0.1 * ts, "higher_is_better": False})
        for step, (gf, wall, v) in {100: (6.0, 4.0, 3.0), 200: (12.0, 8.0, 2.0)}.items():
            rows.append({"kind": "curve", "model": f"sit_flops@s{ts}", "sampler": "euler", "nfe_budget": 16,
                         "train_step": step, "train_gflops": gf, "train_wall_s": wall, "seed": 0,
                         "metric": "fd_embedded", "value": v + 0.1 * ts + 0.05 * ts**2, "higher_is_better": False})
    table = evaluate_claims(pd.DataFrame(rows))
    got = table[table["family"] == PF_SIT].set_index("basis")
    steps = got.loc[[b for b in got.index if b.startswith("train steps")][0]]
    flops = got.loc[[b for b in got.index if b.startswith("train GFLOPs")][0]]
    wall = got.loc[[b for b in got.index if b.startswith("train wall")][0]]
    jitter = 0.1 + 0.05 * 5 / 3  # mean over training seeds of 0.1·ts + 0.05·ts²
    assert steps["worse_mean"] == pytest.approx(3.0 + jitter)  # step 100 of the SiT curve
    assert flops["worse_mean"] == pytest.approx(3.0 - 2 / 3 + jitter)  # 10 GFLOPs: 2/3 of the way from 6 to 12
    assert wall["worse_mean"] == pytest.approx(2.75 + jitter)  # 5 s: a quarter of the way from 4 to 8 (3 -> 2)
    assert (got["verdict_raw"] == HOLDS).all()
    # equal steps is the curve claim's counted basis; training FLOPs and wall-clock interpolate the same curve
    assert steps["basis_kind"] == "primary" and steps["verdict"] == HOLDS
    assert (flops["verdict"], wall["verdict"]) == (SHOWN, SHOWN)


def test_diagnostic_claim_per_model() -> None:
    rows = [{"kind": "diagnostic", "model": f"pf@s{ts}", "metric": f"difficulty_pearson_patch_t{t}", "value": v,
             "higher_is_better": True} for ts in range(3) for t, v in (("0.6", 0.5 + 0.01 * ts), ("0.2", 0.1))]
    table = evaluate_claims(pd.DataFrame(rows))
    row = table[table["claim"].str.startswith("corr")]
    assert len(row) == 1 and row["verdict"].iloc[0] == HOLDS and row["n"].iloc[0] == 3


def test_missing_side_is_skipped() -> None:
    claim = Claim("x", "a < b", Side("pf", "look_ahead"), Side("nope", "euler"))
    assert evaluate_claims(_cells({"look_ahead": [1.0, 2.0]}), claims=(claim,)).empty


def test_validity_sections_draw_figures(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from pfbench.report.validity import validity_sections

    df = _cells({"look_ahead": [1.0, 1.1, 0.9], "dual_loop": [2.0, 2.2, 1.95], "euler_pf": [2.5, 2.6, 2.4]})
    sections = dict(validity_sections(df, tmp_path))
    assert "Claims" in sections and sections["Claims"][0].rows
    names = {f.png.name for f in sections["Validity figures"]}
    assert {"fig_validity_nfe.png", "fig_validity_gflops.png"} <= names
    assert all((tmp_path / n).stat().st_size > 1000 for n in names)


def test_identical_differences_are_not_significant() -> None:
    out = compare(np.array([0.75, 0.5]), np.array([0.5, 0.25]))  # two quantised accuracies moving by one step each
    assert out["diff"] == 0.25 and math.isnan(out["lo"]) and math.isnan(out["p"])


def test_trend_slope_is_tested_over_training_seeds() -> None:
    # FD: look_ahead is behind dual_loop by 3 - s·log2(NFE) with slope s = 0.5, 0.7, 0.9 per training seed
    slopes = (0.5, 0.7, 0.9)
    rows = []
    for ts, s in enumerate(slopes):
        for nfe in (8, 16, 32, 64):
            for sampler, v in (("dual_loop", 1.0 + 0.1 * ts), ("look_ahead", 4.0 + 0.1 * ts - s * math.log2(nfe))):
                rows.append({"kind": "cell", "model": f"pf@s{ts}", "sampler": sampler, "variant": "",
                             "nfe_budget": nfe, "gflops": 0.03 * nfe, "seed": ts, "cfg_scale": 1.0,
                             "metric": "fd_embedded", "value": v, "higher_is_better": False})
    table = evaluate_claims(pd.DataFrame(rows), trends=(LA_DL.name,))
    trend = table[table["basis_kind"] == "trend"]
    assert len(trend) == 1 and trend["basis"].iloc[0] == "slope per NFE doubling (NFE 8–64)"
    ref = stats.ttest_1samp(slopes, 0.0)
    assert trend["diff"].iloc[0] == pytest.approx(np.mean(slopes))
    assert trend["p"].iloc[0] == pytest.approx(ref.pvalue)
    assert (trend["lo"].iloc[0], trend["hi"].iloc[0]) == pytest.approx(tuple(ref.confidence_interval(0.95)))
    assert trend["family"].iloc[0] == LA_DL.family and not math.isnan(trend["p_holm"].iloc[0])
    from pfbench.report.claim_tables import trend_lines

    (line,) = trend_lines(table)
    assert line.startswith("look_ahead's deficit to dual_loop shrinks with budget (fd_embedded): slope +0.7/doubling")
    # without the declaration there is no trend row; an unknown claim name is a one-line error
    assert not (evaluate_claims(pd.DataFrame(rows))["basis_kind"] == "trend").any()
    with pytest.raises(PfbenchError, match="did you mean 'look_ahead < dual_loop'"):
        evaluate_claims(pd.DataFrame(rows), trends=("look_ahead < dual_lop",))


def test_two_instances_of_a_model_are_never_pooled() -> None:
    from pfbench.report.keys import instance_warning

    df = _cells({"look_ahead": [1.0, 1.1, 0.9], "dual_loop": [2.0, 2.2, 1.95]}).assign(model_id="a" * 64)
    rerun = df[df["model"] == "pf@s0"].assign(model_id="b" * 64, value=lambda d: d["value"] + 5.0)
    both = pd.concat([df, rerun], ignore_index=True)
    warning = instance_warning(both, "results/x")
    assert warning is not None and "pf@s0: aaaaaaaaaaaa, bbbbbbbbbbbb" in warning and "never pooled" in warning
    assert instance_warning(df, "results/x") is None
    table = evaluate_claims(both)
    rows = table[table["basis"] == "NFE 8"]
    assert sorted(rows["claim"]) == [f"{LA_DL.name} [instance pf@s0 {c * 8}]" for c in "ab"]
    per = rows.set_index("claim")["better_mean"]
    # instance a: the original three seeds; instance b: seed 0 replaced by the rerun (+5), never a mean of both
    assert per[f"{LA_DL.name} [instance pf@s0 aaaaaaaa]"] == pytest.approx(1.0)
    assert per[f"{LA_DL.name} [instance pf@s0 bbbbbbbb]"] == pytest.approx(1.0 + 5.0 / 3)
