"""Claims at equal outer steps (pfbench.report.steps), the sit_ln control claims and the headline comparisons'
power (pfbench.report.power), on synthetic frames with a known answer."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from pfbench.report.claims import HOLDS, PAPER_CLAIMS, PF_SIT, STEPS, TRAIN, evaluate_claims
from pfbench.report.power import ALPHA, POWER, detectable_dz, mde_rows, power_table
from pfbench.report.steps import steps_block, steps_table

# FD per (sampler, steps multiple): look_ahead best per step, euler_pf(2N) better still; seeds shift all sides.
STEP_FD = {"euler_pf": 2.0, "dual_loop": 1.8, "look_ahead": 1.5}
NOISE = (0.0, 0.03, -0.02)
OWN = {"euler_pf": (0.0, 0.0, 0.0), "dual_loop": (-0.01, 0.02, -0.01), "look_ahead": (0.02, -0.01, -0.01)}  # mean 0


def _row(model: str, sampler: str, value: float, seed: int, *, nfe: int | None = None, steps: int | None = None,
         gflops: float = 0.1, metric: str = "fd_embedded", calls: int | None = None) -> dict:
    return {"kind": "cell", "model": model, "sampler": sampler, "variant": "", "nfe_budget": nfe, "steps": steps,
            "gflops": gflops, "seed": seed, "cfg_scale": 1.0, "metric": metric, "value": value,
            "higher_is_better": metric != "fd_embedded", "nfe_used": calls if calls is not None else (nfe or steps)}


def _steps_rows(ns: tuple[int, ...] = (4, 8, 16), seeds: int = 3) -> pd.DataFrame:
    """Steps-mode cells of pf@s0..: euler_pf at N and 2N, dual_loop and look_ahead at N; FD falls with log2(steps)."""
    rows = []
    for ts in range(seeds):
        for sampler, base in STEP_FD.items():
            for n in sorted({*ns, *(2 * n for n in ns)} if sampler == "euler_pf" else ns):
                value = base - 0.2 * math.log2(n) + NOISE[ts % 3] + 0.01 * ts + OWN[sampler][ts % 3]
                calls = 2 * n if sampler == "look_ahead" else 4 * n if sampler == "dual_loop" else n
                rows.append(_row(f"pf@s{ts}", sampler, value, ts, steps=n, gflops=0.01 * calls, calls=calls))
    return pd.DataFrame(rows)


def _nfe_rows(seeds: int = 3) -> pd.DataFrame:
    rows = [_row(f"pf@s{ts}", s, v + 0.1 * ts + (0.05 if s == "dual_loop" else 0.0) * ts, ts, nfe=nfe,
                 gflops=0.01 * nfe) for ts in range(seeds) for s, v in (("look_ahead", 3.0), ("dual_loop", 2.5),
                                                                        ("euler_pf", 2.8)) for nfe in (8, 16, 32)]
    return pd.DataFrame(rows)


def test_equal_steps_claims_pair_n_with_n_and_2n() -> None:
    table = evaluate_claims(_steps_rows())
    steps = table[table["family"] == STEPS]
    la_pf = steps[steps["claim"] == "look_ahead < euler_pf (equal steps)"]
    assert list(la_pf["basis"]) == ["steps 4", "steps 8", "steps 16"]
    assert (la_pf["better_mean"] - la_pf["worse_mean"]).to_numpy() == pytest.approx([-0.5] * 3)
    assert set(la_pf["verdict_raw"]) == {HOLDS} and set(la_pf["unit"]) == {"training seed"}
    half = steps[steps["claim"].str.startswith("look_ahead(N) < euler_pf(2N)")]
    assert list(half["basis"]) == ["steps 4 vs 8", "steps 8 vs 16", "steps 16 vs 32"]
    # euler_pf(2N) is 0.2 better than euler_pf(N) per doubling: look_ahead(N) is still 0.3 ahead of it
    assert (half["worse_mean"] - half["better_mean"]).to_numpy() == pytest.approx([0.3] * 3)
    # Holm runs within the equal-steps family only; BH over every counted row of the report
    assert steps["p_holm"].to_numpy() == pytest.approx(multipletests(steps["p"], method="holm")[1])
    counted = table[table["basis_kind"] == "primary"]
    assert counted["q_bh"].to_numpy() == pytest.approx(multipletests(counted["p"], method="fdr_bh")[1])
    assert not table["basis"].str.startswith("NFE").any()  # steps cells make no NFE basis


def test_steps_cells_never_leak_into_claims_at_equal_nfe() -> None:
    nfe = _nfe_rows()
    alone = evaluate_claims(nfe)
    both = evaluate_claims(pd.concat([nfe, _steps_rows()], ignore_index=True))
    assert len(both[both["family"] == STEPS]) > 0
    other = both[both["family"] != STEPS].reset_index(drop=True)
    cols = ["claim", "metric", "basis", "basis_kind", "n", "better_mean", "worse_mean", "diff", "p", "reason"]
    # the steps cells' GFLOPs lie inside the NFE cells' range: a leak would move the interpolated bases
    pd.testing.assert_frame_equal(other[cols], alone[cols].reset_index(drop=True))
    # the NFE table without the steps family's rows is the same claim set (Holm per family is unaffected too)
    assert other["p_holm"].to_numpy() == pytest.approx(alone["p_holm"].to_numpy(), nan_ok=True)


def test_equal_steps_table_means_calls_and_deltas() -> None:
    rows = _steps_rows(ns=(4, 8))
    table = evaluate_claims(rows)
    t = steps_table(table, rows)
    assert t is not None and t.columns[:5] == ("N", "euler_pf(N)", "dual_loop(N)", "look_ahead(N)", "euler_pf(2N)")
    assert [r[0] for r in t.rows] == ["4", "8"]
    la = np.mean([STEP_FD["look_ahead"] - 0.4 + NOISE[k] + 0.01 * k for k in range(3)])
    assert t.rows[0][3] == f"{la:.4g} (8 calls)" and t.rows[0][4] == t.rows[1][1]  # euler_pf(2·4) = euler_pf(8)
    delta = t.rows[0][t.columns.index("Δ look_ahead − euler_pf")]
    assert delta.startswith("-0.5 [") and "Holm p" in delta  # in FD units, negative = look_ahead lower
    nfe = _nfe_rows()
    assert steps_table(evaluate_claims(nfe), nfe) is None
    assert "has no cells on the equal-steps axis" in steps_block(evaluate_claims(nfe), nfe, "validity")
    block = steps_block(table, rows, "validity_quick")
    assert block.startswith("_Generated by `pfbench report validity_quick`") and "### Equal steps (fd_embedded)" in block


def test_sit_ln_control_claims_run_where_sit_ln_has_rows() -> None:
    rows = [_row(f"{m}@s{ts}", s, v + 0.1 * ts + 0.02 * ts * (m == "sit"), ts, nfe=16)
            for ts in range(3) for m, s, v in (("pf", "euler_pf", 1.0), ("sit", "euler", 2.0),
                                               ("sit_ln", "euler", 1.5))]
    table = evaluate_claims(pd.DataFrame(rows))
    ln = table[table["claim"] == "SiT logit-normal < SiT uniform"]
    assert len(ln) == 1 and ln["family"].iloc[0] == TRAIN and ln["diff"].iloc[0] == pytest.approx(0.52)
    ctrl = table[table["claim"] == "LTG < SiT logit-normal (equal training steps)"]
    assert len(ctrl) == 1 and ctrl["family"].iloc[0] == PF_SIT and ctrl["diff"].iloc[0] == pytest.approx(0.5)
    # without sit_ln rows the control claims are not run (no row), the others are
    without = evaluate_claims(pd.DataFrame([r for r in rows if not r["model"].startswith("sit_ln")]))
    assert not without["claim"].str.contains("logit-normal").any() and len(without) > 0
    assert {c.name for c in PAPER_CLAIMS if "logit-normal" in c.name} == {
        "SiT logit-normal < SiT uniform", "LTG < SiT logit-normal (equal training steps)"}


def test_detectable_effect_has_the_stated_power() -> None:
    for n in (3, 5, 12):
        dz = detectable_dz(n)
        crit = stats.t.ppf(1 - ALPHA / 2, n - 1)
        nc = stats.nct(n - 1, dz * math.sqrt(n))
        assert nc.sf(crit) + nc.cdf(-crit) == pytest.approx(POWER, abs=1e-6)
    assert detectable_dz(5) < detectable_dz(3) and math.isnan(detectable_dz(1))


def test_mde_rows_scale_the_sd_of_paired_differences() -> None:
    rows = _nfe_rows(seeds=5)
    table = evaluate_claims(rows)
    mde = mde_rows(table)
    assert set(mde["claim"]) == {"look_ahead < dual_loop"} and list(mde["basis"]) == ["NFE 8", "NFE 16", "NFE 32"]
    la = rows[(rows["sampler"] == "look_ahead") & (rows["nfe_budget"] == 8)].sort_values("seed")["value"]
    dl = rows[(rows["sampler"] == "dual_loop") & (rows["nfe_budget"] == 8)].sort_values("seed")["value"]
    sd = np.std(dl.to_numpy() - la.to_numpy(), ddof=1)
    assert mde["sd"].iloc[0] == pytest.approx(sd) and mde["mde"].iloc[0] == pytest.approx(detectable_dz(5) * sd)
    t = power_table(table)
    assert t is not None and len(t.rows) == 3 and t.rows[0][3] == "5 training seeds"
    assert power_table(evaluate_claims(_steps_rows().iloc[:0])) is None


def test_an_nfe_cell_is_read_as_the_cell_of_its_step_count() -> None:
    """A suite that runs euler_pf(N) and look_ahead(N) only through NFE budgets (euler_pf at NFE N, look_ahead at
    NFE 2N) gets the same equal-steps claims and table as one that runs them as steps-mode cells; where both were
    run, the steps-mode row is the one read."""
    ran = _steps_rows()
    as_budget = ran["sampler"].isin(["euler_pf", "look_ahead"])
    calls = ran["nfe_used"].where(ran["sampler"] == "euler_pf", ran["steps"] * 2)
    moved = ran[as_budget].assign(nfe_budget=calls)  # steps column = the sampler's step count at that budget
    budget_only = pd.concat([ran[~as_budget], moved], ignore_index=True)
    want = evaluate_claims(ran, claims=tuple(c for c in PAPER_CLAIMS if c.family == STEPS))
    got = evaluate_claims(budget_only, claims=tuple(c for c in PAPER_CLAIMS if c.family == STEPS))
    key = ["claim", "metric", "basis"]
    pd.testing.assert_frame_equal(got.sort_values(key).reset_index(drop=True), want.sort_values(key).reset_index(drop=True))
    assert steps_table(got, budget_only).markdown() == steps_table(want, ran).markdown()
    # both run: a budget row with a different value does not replace (or join) the steps-mode one
    both = pd.concat([ran, moved.assign(value=moved["value"] + 100.0)], ignore_index=True)
    again = evaluate_claims(both, claims=tuple(c for c in PAPER_CLAIMS if c.family == STEPS))
    pd.testing.assert_frame_equal(again.sort_values(key).reset_index(drop=True), want.sort_values(key).reset_index(drop=True))
    # the step count comes from sampler_args where the steps column is empty (rows of older runs)
    old = moved.assign(steps=pd.NA, sampler_args=[f'{{"shift": 1.0, "steps": {int(n)}}}' for n in moved["steps"]])
    older = evaluate_claims(pd.concat([ran[~as_budget], old], ignore_index=True),
                            claims=tuple(c for c in PAPER_CLAIMS if c.family == STEPS))
    pd.testing.assert_frame_equal(older.sort_values(key).reset_index(drop=True), want.sort_values(key).reset_index(drop=True))


@pytest.mark.parametrize(("name", "budget"), [("euler_pf", 8), ("look_ahead", 16), ("dual_loop", 32)])
def test_a_budget_picks_only_the_step_count(random_net, name: str, budget: int) -> None:
    """What the report's reading of NFE cells rests on: the sampler at an NFE budget is the sampler at its step
    count, and so are its images (same seed)."""
    import torch

    from pfbench.adapters.dit import DiTAdapter
    from pfbench.registry import SAMPLERS
    from pfbench.sample.generate import generate

    cls = SAMPLERS.get(name)
    at_budget = cls.from_budget({}, budget)
    at_steps = cls.from_steps({}, at_budget.steps)
    assert at_budget == at_steps
    assert at_budget.steps == budget if name == "euler_pf" else 1 < at_budget.steps < budget
    model = DiTAdapter(random_net("pf", seed=3))
    a = generate(model, at_budget, n=4, seed=7, batch_size=4).images
    b = generate(model, at_steps, n=4, seed=7, batch_size=4).images
    assert torch.equal(torch.as_tensor(a), torch.as_tensor(b))


def test_equal_steps_table_leaves_out_step_counts_with_one_side_only() -> None:
    """look_ahead at NFE 64 runs 33 steps: no other side has 33 (or 66), so the table has no row for it; a
    non-default variant's step count makes no row either."""
    rows = _steps_rows(ns=(4,))
    extra = [_row(f"pf@s{ts}", "look_ahead", 1.0, ts, steps=33, calls=64) for ts in range(3)]
    extra += [dict(_row(f"pf@s{ts}", "dual_loop", 1.0, ts, steps=9, calls=36), variant='{"p": 0.2}') for ts in range(3)]
    both = pd.concat([rows, pd.DataFrame(extra)], ignore_index=True)
    t = steps_table(evaluate_claims(both), both)
    assert [r[0] for r in t.rows] == ["4"]
