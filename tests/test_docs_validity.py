"""docs/validity.md cannot drift from the committed results: its claim blocks are what `pfbench report` writes
from results/<suite>, and every number in its result bullets is in one of those blocks."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pfbench.report.claim_tables import claims_block, doc_block, update_docs
from pfbench.report.claims import evaluate_claims
from pfbench.results import read_results
from pfbench.suite.parse import load_suite

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "validity.md"
SUITES = ("validity", "validity_r32", "validity_shipped")
# Sections whose bullets state results: each decimal number there must be in a generated block.
CHECKED = ("## Short answer", "## 32x32", "## Shipped checkpoints", "## Where a claim does not hold")


def _block(suite: str) -> str:
    rows = read_results(ROOT / "results" / suite)
    trends = tuple(load_suite(ROOT / "suites" / f"{suite}.yaml").claims.trends)
    return claims_block(evaluate_claims(rows, trends=trends), suite, rows)


@pytest.mark.parametrize("suite", SUITES)
def test_committed_claim_block_is_what_the_results_give(suite: str) -> None:
    committed = doc_block(DOC.read_text(), suite)
    assert committed is not None, f"docs/validity.md has no claims block for {suite}"
    assert committed == _block(suite), f"regenerate it: pfbench report {suite}"


def _sections(text: str) -> list[str]:
    parts = re.split(r"(?m)^(?=## )", text)
    return [p for p in parts if p.startswith(CHECKED)]


def _bullet_numbers(section: str) -> list[str]:
    """Decimal numbers in the bullets of a section (outside generated blocks), parameters (``r = 2.0``) aside."""
    section = re.sub(r"<!-- pfbench:claims (\S+) -->.*?<!-- /pfbench:claims \1 -->", "", section, flags=re.S)
    bullets = re.findall(r"(?ms)^- .*?(?=^- |^\s*$|\Z)", section)
    return [m[1] for b in bullets for m in re.finditer(r"(?<![=\d.])(?<!= )(\d+\.\d+)", b)]


def test_every_number_in_the_result_bullets_is_in_a_generated_block() -> None:
    text = DOC.read_text()
    blocks = "".join(doc_block(text, s) or "" for s in SUITES)
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
