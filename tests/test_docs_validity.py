"""docs/validity.md cannot drift from the committed results: its claim blocks are what `pfbench report` writes
from results/<suite>, and every number in its result bullets is in one of those blocks."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import pandas as pd
import pytest

from pfbench.report.claim_tables import claims_block, doc_block, missing_block, update_docs
from pfbench.report.claims import evaluate_claims
from pfbench.report.steps import steps_block
from pfbench.results import read_results
from pfbench.suite.parse import load_suite

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "validity.md"
SUITES = ("validity", "validity_r32", "validity_shipped", "validity_quick")
STEPS_SUITES = SUITES  # each has an equal-steps block (its NFE cells read at their step count, steps-mode cells)
BLOCKS = [("claims", s) for s in SUITES] + [("steps", s) for s in STEPS_SUITES]
# Sections whose bullets state results: each decimal number there must be in a generated block.
CHECKED = ("## Short answer", "## 32x32", "## Shipped checkpoints", "## Equal steps", "## Quick study",
           "## Where a claim does not hold", "## Varying the premise")


@functools.cache
def _evaluated(suite: str) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """The suite's committed rows and claim table (with its YAML's declared trends); None without rows."""
    folder = ROOT / "results" / suite
    rows = read_results(folder) if folder.is_dir() else pd.DataFrame()
    if rows.empty:
        return None
    yaml = ROOT / "suites" / f"{suite}.yaml"
    trends = tuple(load_suite(yaml).claims.trends) if yaml.is_file() else ()
    return rows, evaluate_claims(rows, trends=trends)


def _block(suite: str, kind: str = "claims") -> str:
    got = _evaluated(suite)
    if got is None:
        return missing_block(suite)
    rows, table = got
    return claims_block(table, suite, rows) if kind == "claims" else steps_block(table, rows, suite)


@pytest.mark.parametrize(("kind", "suite"), BLOCKS)
def test_committed_block_is_what_the_results_give(kind: str, suite: str) -> None:
    committed = doc_block(DOC.read_text(), suite, kind)
    assert committed is not None, f"docs/validity.md has no {kind} block for {suite}"
    assert committed == _block(suite, kind), f"regenerate it: pfbench report {suite}"


def _hetero_block() -> str:
    from pfbench.report.hetero import HETERO_SUITES, hetero_block

    folders = [ROOT / "results" / s for s in HETERO_SUITES]
    if not all(f.is_dir() for f in folders):
        return "_Not generated yet: " + ", ".join(f"`results/{s}`" for s in HETERO_SUITES) + " are not all committed._\n"
    return hetero_block([(s, read_results(f, suite=s)) for s, f in zip(HETERO_SUITES, folders, strict=True)])


def test_committed_hetero_block_is_what_the_results_give() -> None:
    from pfbench.report.hetero import HETERO_BLOCK

    committed = doc_block(DOC.read_text(), HETERO_BLOCK, "hetero")
    assert committed is not None, "docs/validity.md has no hetero block"
    assert committed == _hetero_block(), "regenerate it: pfbench hetero"


def test_a_missing_results_folder_keeps_a_placeholder_that_says_so(tmp_path: Path) -> None:
    text = missing_block("validity_quick")
    assert "`results/validity_quick` has no result rows" in text and "pfbench report validity_quick" in text
    from pfbench import PfbenchError
    from pfbench.report.html import report

    with pytest.raises(PfbenchError, match=r"no result rows in .*validity_quick: run `pfbench run "
                                           r"suites/validity_quick.yaml` first"):
        report("validity_quick", results_root=tmp_path, reports_root=tmp_path / "reports", docs=tmp_path)


def _sections(text: str) -> list[str]:
    parts = re.split(r"(?m)^(?=## )", text)
    return [p for p in parts if p.startswith(CHECKED)]


def _bullet_numbers(section: str) -> list[str]:
    """Decimal numbers in the bullets of a section (outside generated blocks), parameters (``r = 2.0``) aside."""
    section = re.sub(r"<!-- pfbench:(\w+) (\S+) -->.*?<!-- /pfbench:\1 \2 -->", "", section, flags=re.S)
    bullets = re.findall(r"(?ms)^- .*?(?=^- |^\s*$|\Z)", section)
    return [m[1] for b in bullets for m in re.finditer(r"(?<![=\d.])(?<!= )(\d+\.\d+)", b)]


def test_every_number_in_the_result_bullets_is_in_a_generated_block() -> None:
    text = DOC.read_text()
    blocks = "".join(doc_block(text, s, kind) or "" for kind, s in BLOCKS) + _hetero_block()
    numbers = [n for sec in _sections(text) for n in _bullet_numbers(sec)]
    assert len(numbers) > 50  # the bullets do state numbers: the check is not vacuous
    missing = sorted({n for n in numbers if n not in blocks})
    assert not missing, f"numbers in docs/validity.md bullets that no generated block contains: {missing}"


def test_a_drifted_number_is_caught(tmp_path: Path) -> None:
    text = DOC.read_text().replace("+0.814/doubling", "+0.914/doubling", 1)
    assert doc_block(text, "validity") != doc_block(DOC.read_text(), "validity")
    (tmp_path / "validity.md").write_text(text)
    assert update_docs(tmp_path, "validity", doc_block(DOC.read_text(), "validity") or "") == [tmp_path / "validity.md"]
    assert (tmp_path / "validity.md").read_text() == DOC.read_text()  # the generator writes the block back
    prose = "## Short answer\n\n- look_ahead is behind by 31.9 % and 99.123 %.\n"
    assert "99.123" in _bullet_numbers(prose) and "31.9" in _bullet_numbers(prose)


def test_the_stated_detectable_effects_are_what_statsmodels_gives() -> None:
    from pfbench.report.power import detectable_dz

    text = DOC.read_text()
    assert f"d_z(n) is {detectable_dz(3):.3g} at n = 3" in text and f"and {detectable_dz(5):.3g} at n = 5" in text
