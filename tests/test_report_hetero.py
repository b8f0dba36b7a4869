"""The heterogeneity study's report view (pfbench.report.hetero) on synthetic result rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pfbench import PfbenchError
from pfbench.data.heterogeneity import DEFAULT_HETEROGENEITY
from pfbench.report.hetero import (
    DEFAULT_LEVEL,
    gain_table,
    gains,
    hetero_report,
    level_of,
    replicates,
    trend_table,
)

LEVELS = {"low": 0.0, "mid": 0.5, "high": 1.0}


CALLS = {"euler_pf": 1, "look_ahead": 2, "dual_loop": 4}  # about this many calls per outer step


def _rows(suite: str, h: float, growth: float, noise: float = 0.02, seed: int = 0) -> pd.DataFrame:
    """FD cells of one level: euler_pf at 10 - budget effect; dual_loop better by ``growth * h`` (relative), look_ahead
    equal to euler_pf up to noise; 3 replicates; data and model spread rows."""
    rng = np.random.default_rng(seed)
    ref = "embedded:test:seed0:n2000:r16" + ("" if h == DEFAULT_LEVEL else f":h{h:g}")
    out = []
    for axis, budgets in (("nfe", (8, 16)), ("steps", (4,))):
        for b in budgets:
            for s in range(3):
                base = 10.0 - b / 8 + rng.normal(0, noise)
                for sampler, v in (("euler_pf", base), ("dual_loop", base * (1 - growth * h) + rng.normal(0, noise)),
                                   ("look_ahead", base + rng.normal(0, noise))):
                    out.append({"kind": "cell", "model": f"pf@s{s}", "sampler": sampler, "variant": "",
                                "nfe_budget": b if axis == "nfe" else pd.NA, "steps": b if axis == "steps" else b // CALLS[sampler],
                                "seed": s, "metric": "fd_embedded", "value": v, "higher_is_better": False,
                                "ref_id": ref})
    out.append({"kind": "cell", "model": "pf@s0", "sampler": "dual_loop", "variant": '{"p": 0.2}', "nfe_budget": 8,
                "steps": 2, "seed": 0, "metric": "fd_embedded", "value": 99.0, "higher_is_better": False,
                "ref_id": ref})  # a non-default variant: left out
    for m, v in (("hard_share_mean", 1 - h), ("hard_share_spread", h / 2), ("hard_share_easy", h)):
        out.append({"kind": "reference", "model": "data_hard", "metric": m, "value": v, "higher_is_better": False})
    for s in range(3):
        out.append({"kind": "diagnostic", "model": f"pf@s{s}", "metric": "patch_err_cv_t0.6", "value": 1 + h + s / 10,
                    "higher_is_better": False})
    df = pd.DataFrame(out)
    return df.assign(suite=suite, nfe_budget=df["nfe_budget"].astype("Int64"), steps=df["steps"].astype("Int64"))


def _levels(growth: float) -> list[tuple[str, pd.DataFrame]]:
    return [(name, _rows(name, h, growth, seed=i)) for i, (name, h) in enumerate(LEVELS.items())]


def test_default_level_is_the_generators() -> None:
    assert DEFAULT_LEVEL == DEFAULT_HETEROGENEITY


def test_level_of_reads_the_reference_id() -> None:
    assert [level_of(r) for _, r in _levels(0.1)] == [0.0, 0.5, 1.0]
    mixed = pd.concat([_rows("a", 0.0, 0.1), _rows("a", 1.0, 0.1)])
    with pytest.raises(PfbenchError, match="several heterogeneity levels"):
        level_of(mixed)


def test_gains_are_oriented_and_paired() -> None:
    gt = gain_table(gains(_levels(0.2)))
    dl = gt[(gt["sampler"] == "dual_loop") & (gt["axis"] == "nfe")]
    assert (dl.groupby("level")["rel"].mean().diff().dropna() > 0).all()  # planted: 0, 10 %, 20 % better
    hi = dl[dl["level"] == 1.0]
    assert hi["rel"].to_numpy() == pytest.approx([0.2, 0.2], abs=0.02)
    assert (hi["lo"] > 0).all() and (hi["n"] == 3).all()
    assert (dl["value"] < 50).all()  # the p=0.2 variant row (99) is not a replicate


def test_trend_detects_planted_growth_and_not_its_absence() -> None:
    tt = trend_table(gains(_levels(0.2)))
    grow = tt[(tt["sampler"] == "dual_loop") & (tt["budget"] == "all") & (tt["axis"] == "nfe")].iloc[0]
    assert grow["diff"] == pytest.approx(0.2, abs=0.03) and grow["p"] < 0.01 and grow["levels"] == 3
    flat = tt[(tt["sampler"] == "look_ahead") & (tt["budget"] == "all") & (tt["axis"] == "nfe")].iloc[0]
    assert abs(flat["diff"]) < 0.02 and flat["lo"] < 0 < flat["hi"]
    assert set(tt["budget"]) == {"all", "4", "8", "16"}


def test_duplicate_replicates_refused() -> None:
    name, rows = _levels(0.1)[0]
    with pytest.raises(PfbenchError, match="2 result rows for seed"):
        gains([(name, pd.concat([rows, rows[rows["kind"] == "cell"].iloc[:1]]))])


def test_report_writes_tables_and_figure(tmp_path: Path) -> None:
    md = hetero_report(_levels(0.2), tmp_path / "hetero")
    text = md.read_text()
    assert (tmp_path / "hetero" / "gain_vs_level.png").stat().st_size > 1000
    assert "Per-patch difficulty spread" in text and "Trend" in text
    assert text.count("| 0 |") >= 1 and "| 1 | equal NFE | 8 | dual_loop |" in text
    assert "1.1 ± 0.1" in text  # model spread: mean ± sd over the 3 seeds at level 0
    with pytest.raises(PfbenchError, match="2 or more heterogeneity levels"):
        hetero_report(_levels(0.2)[:1], tmp_path / "one")


def test_an_nfe_cell_stands_for_the_cell_of_its_step_count() -> None:
    rows = _rows("high", 1.0, 0.2)
    cells = rows[rows["kind"] == "cell"]
    base_steps = (cells["sampler"] == "euler_pf") & cells["nfe_budget"].isna()
    moved = rows.drop(index=cells.index[base_steps])  # the suite ran euler_pf's 4 steps only as NFE 4
    nfe4 = cells[base_steps].assign(nfe_budget=pd.array([4] * int(base_steps.sum()), dtype="Int64"))
    rep = replicates(pd.concat([moved, nfe4]), "fd_embedded")
    got = rep[(rep["sampler"] == "euler_pf") & (rep["axis"] == "steps") & (rep["budget"] == 4)]
    got = got.sort_values("seed")["value"].to_numpy()
    assert got == pytest.approx(cells[base_steps].sort_values("seed")["value"].to_numpy())
    assert len(rep[(rep["sampler"] == "euler_pf") & (rep["axis"] == "nfe") & (rep["budget"] == 4)]) == 3
    other = replicates(moved, "fd_embedded")  # NFE 8 and 16 are euler_pf(8) and (16); nothing stands for (4)
    assert sorted(other[(other["sampler"] == "euler_pf") & (other["axis"] == "steps")]["budget"].unique()) == [8, 16]
    la = rep[(rep["sampler"] == "look_ahead") & (rep["axis"] == "steps")]  # ran at 4 steps; NFE 8 is 4 steps too
    assert sorted(la["budget"].unique()) == [4, 8] and len(la[la["budget"] == 4]) == 3  # the run steps cell, once
    assert la[la["budget"] == 8].sort_values("seed")["value"].to_numpy() == pytest.approx(
        cells[(cells["sampler"] == "look_ahead") & (cells["nfe_budget"] == 16)].sort_values("seed")["value"].to_numpy())
