"""A quick study's verdicts beside its full study's (pfbench.report.agreement), and the report sections of
issue 20 (equal steps, power, agreement) rendered from result folders written as the runner writes them."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pfbench import PfbenchError
from pfbench.report.agreement import FullStudy, agreement, agreement_table
from pfbench.report.claim_tables import doc_block
from pfbench.report.claims import evaluate_claims
from pfbench.suite.parse import full_study, load_suite

# FD of pf's samplers per training seed: quick and full agree that dual_loop beats euler_pf, and disagree on
# look_ahead vs dual_loop (quick: clearly better, full: clearly worse).
SEED_NOISE = (0.0, 0.04, -0.03, 0.02, -0.01)


def _rows(suite: str, la: float, nfes: tuple[int, ...], seeds: int, steps: tuple[int, ...] = ()) -> list[dict]:
    rows = []
    for ts in range(seeds):
        for k, (sampler, v) in enumerate((("look_ahead", la), ("dual_loop", 2.0), ("euler_pf", 2.5))):
            noise = SEED_NOISE[ts] * (k + 1)
            for nfe in nfes:
                rows.append({"suite": suite, "kind": "cell", "model": f"pf@s{ts}", "model_id": f"id{ts}",
                             "sampler": sampler, "nfe_budget": nfe, "steps": None,  # not on the steps axis
                             "nfe_used": nfe, "gflops": 0.01 * nfe, "seed": ts, "cfg_scale": 1.0,
                             "metric": "fd_embedded", "value": v + noise, "higher_is_better": False})
            for n in steps if k else ():  # euler_pf and dual_loop at N outer steps
                calls = 4 * n if sampler == "dual_loop" else n
                rows.append({"suite": suite, "kind": "cell", "model": f"pf@s{ts}", "model_id": f"id{ts}",
                             "sampler": sampler, "steps": n, "nfe_used": calls, "gflops": 0.01 * calls, "seed": ts,
                             "cfg_scale": 1.0, "metric": "fd_embedded", "value": v + noise - 0.1 * n,
                             "higher_is_better": False})
    return rows


def test_verdicts_side_by_side_over_the_bases_both_ran() -> None:
    quick = evaluate_claims(pd.DataFrame(_rows("q", 1.5, (8, 16), 5)))
    full = evaluate_claims(pd.DataFrame(_rows("f", 3.0, (8, 16, 64), 3)))
    a = agreement(quick, full).set_index("claim")
    assert set(a.index) == {"look_ahead < dual_loop", "dual_loop < euler_pf"}
    assert set(a["bases"]) == {"NFE 8, NFE 16"}  # NFE 64 is the full study's only
    assert a.loc["dual_loop < euler_pf", "quick"] == a.loc["dual_loop < euler_pf", "full"] == "holds"
    assert bool(a.loc["dual_loop < euler_pf", "agree"])
    assert (a.loc["look_ahead < dual_loop", "quick"], a.loc["look_ahead < dual_loop", "full"]) == ("holds",
                                                                                                    "does not hold")
    assert not bool(a.loc["look_ahead < dual_loop", "agree"]) and bool(a.loc["look_ahead < dual_loop", "opposed"])
    assert not bool(a.loc["dual_loop < euler_pf", "opposed"])
    t = agreement_table(quick, full, "validity", "validity_quick")
    assert t.title == "validity_quick vs validity: 1 of 2 verdicts agree, 1 opposed"
    assert {r[-1] for r in t.rows} == {"yes", "OPPOSED"}
    assert "in validity_quick only: none; in validity only: none." in t.note
    # more evidence on one side only (holds vs inconclusive) is a difference, not a contradiction
    weak = evaluate_claims(pd.DataFrame(_rows("f", 3.0, (8, 16), 2)))
    b = agreement(quick, weak).set_index("claim")
    assert set(b["full"]) == {"inconclusive"} and not b["agree"].any() and not b["opposed"].any()
    missing = agreement_table(quick, None, "validity", "validity_quick")
    assert "results/validity has no result rows" in missing.rows[0][0]


def test_quick_report_renders_steps_power_and_agreement(tmp_path: Path) -> None:
    from pfbench.report.html import report
    from pfbench.results import write_rows

    results, docs = tmp_path / "results", tmp_path / "docs"
    for suite, la, nfes, seeds, steps in (("validity_quick", 1.5, (8, 16), 5, (4, 8)),
                                          ("validity", 3.0, (8, 16, 64), 3, ())):
        for i, row in enumerate(_rows(suite, la, nfes, seeds, steps)):
            write_rows(results / suite / f"cell-{i}.parquet", [row])
    docs.mkdir()
    (docs / "v.md").write_text("x\n<!-- pfbench:steps validity_quick -->\nold\n<!-- /pfbench:steps validity_quick -->\n")
    md = report("validity_quick", results_root=results, reports_root=tmp_path / "reports", docs=docs,
                agree_with=FullStudy("validity"))
    text = md.read_text()
    for head in ("## Claims", "## Equal steps", "## Agreement with the full study",
                 "### Power of the headline comparisons", "validity_quick vs validity: 1 of 2 verdicts agree, 1 opposed"):
        assert head in text
    assert text.index("## Agreement with the full study") < text.index("## Results")  # with the claims, up front
    block = doc_block((docs / "v.md").read_text(), "validity_quick", "steps")
    assert block is not None and "### Equal steps (fd_embedded)" in block and "\n| 4 | " in block
    from pfbench.report.html import _agreement

    # the full study's folder missing beside the quick one's: the section says so, the report still renders
    gone = _agreement(evaluate_claims(pd.DataFrame(_rows("q", 1.5, (8,), 3))), tmp_path / "none",
                      FullStudy("validity"), "validity_quick")
    assert "results/validity has no result rows next to validity_quick's" in gone.rows[0][0]


def test_agree_with_is_read_from_the_suite(tmp_path: Path) -> None:
    spec = load_suite(Path(__file__).resolve().parents[1] / "suites" / "validity.yaml",
                      ["+claims.agree_with=validity_r32"])
    full = full_study(spec, Path(__file__).resolve().parents[1] / "suites")
    assert full == FullStudy("validity_r32", tuple(load_suite(
        Path(__file__).resolve().parents[1] / "suites" / "validity_r32.yaml").claims.trends))
    assert full_study(spec, tmp_path) == FullStudy("validity_r32", ())  # no YAML there: no trends, still compared
    assert full_study(load_suite(Path(__file__).resolve().parents[1] / "suites" / "validity.yaml"), tmp_path) is None
    with pytest.raises(PfbenchError, match="claims.agree_with: 'validity' must name another suite"):
        load_suite(Path(__file__).resolve().parents[1] / "suites" / "validity.yaml", ["+claims.agree_with=validity"])


def test_trend_lines_over_different_budget_ranges_are_set_side_by_side() -> None:
    """The quick study's trend runs over NFE 8-16, the full study's over 8-64: the same question, shown with both
    ranges and slopes (not listed as 'in one study only')."""
    quick = evaluate_claims(pd.DataFrame(_rows("q", 1.5, (8, 16), 5)), trends=("look_ahead < dual_loop",))
    full = evaluate_claims(pd.DataFrame(_rows("f", 3.0, (8, 16, 64), 3)), trends=("look_ahead < dual_loop",))
    a = agreement(quick, full).set_index("claim")
    row = a.loc["look_ahead < dual_loop: trend with NFE"]
    assert row["bases"] == "slope per NFE doubling (NFE 8–16) vs slope per NFE doubling (NFE 8–64)"
    assert row["effect_unit"] == "/doubling"
    q = quick[quick["claim"] == "look_ahead < dual_loop: trend with NFE"]["diff"].iloc[0]
    assert row["quick_effect"] == pytest.approx(q)
    t = agreement_table(quick, full, "validity", "validity_quick")
    assert "/doubling" in "".join(str(c) for r in t.rows for c in r)
    assert "trend with NFE" not in t.note.split("only:", 1)[1]  # matched, so in neither "only" list
