"""A readable part whose content does not match its name, its suite or the schema is never trusted: ``run``
moves it aside and recomputes it, ``plan`` / ``report`` / ``compare`` warn in one line and leave it out."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from pfbench import results
from pfbench.report.compare import BAD_STATUSES, compare
from pfbench.report.html import report
from pfbench.results import has_part, read_results, write_rows
from pfbench.suite.parse import load_suite
from pfbench.suite.runner import Runner

ROW = {"kind": "cell", "model": "pf", "metric": "fd", "value": 1.0, "higher_is_better": False}


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(results, "_warned", set())  # each test sees every warning once


def test_new_parts_carry_their_identity(tmp_path: Path) -> None:
    write_rows(tmp_path / "s" / "cell-a.parquet", [{"suite": "s", **ROW}])
    meta = pq.read_schema(tmp_path / "s" / "cell-a.parquet").metadata
    got = {k.decode(): v.decode() for k, v in meta.items() if k.startswith(b"pfbench.")}
    assert got == {"pfbench.suite": "s", "pfbench.kind": "cell", "pfbench.part": "cell-a",
                   "pfbench.schema_version": str(results.SCHEMA_VERSION)}
    assert read_results(tmp_path / "s", "s")["part"].tolist() == ["cell-a"]  # rows without a part get the file's


@pytest.mark.parametrize("legacy", [False, True])
def test_foreign_renamed_and_wrong_column_parts(tmp_path: Path, legacy: bool, capsys: pytest.CaptureFixture[str]) -> None:
    mine, other = tmp_path / "mine", tmp_path / "other"

    def part(folder: Path, name: str, suite: str, part: str | None = None) -> None:
        rows = [{"suite": suite, "part": part or name, **ROW}]
        if legacy:  # written before the metadata existed: checked on its rows alone
            folder.mkdir(exist_ok=True)
            results.to_frame(rows).to_parquet(folder / f"{name}.parquet", index=False)
        else:
            write_rows(folder / f"{name}.parquet", rows)

    part(mine, "cell-a", "mine")
    part(other, "cell-b", "other")
    shutil.copy(other / "cell-b.parquet", mine / "cell-b.parquet")  # copied in from another suite
    shutil.copy(mine / "cell-a.parquet", mine / "cell-c.parquet")  # renamed: rows (and metadata) say cell-a
    pd.DataFrame({"a": [1], "b": ["x"]}).to_parquet(mine / "cell-d.parquet")  # valid Parquet, other columns
    assert has_part(mine, "cell-a", suite="mine")
    for name in ("cell-b", "cell-c", "cell-d"):
        assert not has_part(mine, name, suite="mine", damaged="quiet")
    for suite in ("mine", None):  # the suite given, or inferred from the folder
        assert read_results(mine, suite)["part"].tolist() == ["cell-a"]
    err = capsys.readouterr().err.strip().splitlines()
    assert any("cell-b.parquet belongs to another suite (other, not mine)" in ln for ln in err), err
    assert any("cell-d.parquet does not match the result schema (missing column(s) suite" in ln for ln in err), err
    assert any("cell-c.parquet" in ln for ln in err), err
    assert not has_part(mine, "cell-b", suite="mine", damaged="move")  # run: set aside, kept for inspection
    assert not has_part(mine, "cell-d", suite="mine", damaged="move")
    assert (mine / "cell-b.parquet.foreign").is_file() and (mine / "cell-d.parquet.corrupt").is_file()


SUITE = """
name: {name}
data: {{name: embedded, resolution: 16, seed: 0, test_size: 200}}
models:
  m: {{checkpoint: "asset:{ckpt}"}}
grid:
  - {{models: [m], samplers: [euler]}}
sweep: {{nfe: [2], seeds: [0], num_samples: 20}}
metrics: [fd_embedded, class_acc]
eval: {{batch_size: 20, learning_curve: false}}
"""


def _run(tmp: Path, name: str, ckpt: str, overrides: list[str] | None = None) -> Runner:
    path = tmp / f"{name}.yaml"
    path.write_text(textwrap.dedent(SUITE.format(name=name, ckpt=ckpt)))
    runner = Runner(load_suite(path, overrides), tmp / "results", tmp / "reports", tmp / "runs", progress=False)
    runner.run()
    return runner


def _cells(folder: Path, suite: str) -> dict[str, float]:
    c = read_results(folder, suite).query("kind == 'cell'")
    return {f"{p}/{m}": float(v) for p, m, v in zip(c["part"], c["metric"], c["value"], strict=True)}


@pytest.mark.slow
def test_wrong_column_and_foreign_parts_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from pfbench.cli import app

    mine = _run(tmp_path, "mine", "embedded_pf_r16.pt")
    folder = mine.results
    cell = next(folder.glob("cell-*.parquet"))
    before = _cells(folder, "mine")
    base = tmp_path / "base" / "mine"
    shutil.copytree(folder, base)
    capsys.readouterr()

    def warned_by_plan_report_compare(needle: str) -> None:
        monkeypatch.setattr(results, "_warned", set())
        res = CliRunner().invoke(app, ["plan", str(tmp_path / "mine.yaml"), "--results", str(tmp_path / "results")])
        assert res.exit_code == 0, res.output
        assert sum(cell.name in ln and needle in ln for ln in res.output.splitlines()) == 1, res.output
        assert not any("│ yes" in ln for ln in res.output.splitlines()), res.output  # not shown as cached
        monkeypatch.setattr(results, "_warned", set())
        report("mine", tmp_path / "results", tmp_path / "reports")
        monkeypatch.setattr(results, "_warned", set())
        cmp = compare(base, folder)
        err = capsys.readouterr().err
        assert err.count(f"{cell.name} {needle}") == 2, err  # report, compare: one line each
        assert not (cmp.rows["status"].isin(BAD_STATUSES)).any(), cmp.rows  # no false regression
        assert cmp.missing_in_a.empty  # nothing of another suite shows up in b

    # 1. Valid Parquet with other columns under the cell's name: warned, left out, then recomputed by run.
    pd.DataFrame({"a": [1.0], "b": ["x"]}).to_parquet(cell)
    warned_by_plan_report_compare("does not match the result schema")
    mine.run()
    assert (folder / f"{cell.name}.corrupt").is_file() and _cells(folder, "mine") == before

    # 2. A part of another suite (other weights under the same model name) copied in, under the cell's name and
    #    under its own: never read as this suite's (no regression in compare), set aside by run and recomputed.
    other = _run(tmp_path, "other", "embedded_sit_r16.pt")
    theirs = next(other.results.glob("cell-*.parquet"))
    assert theirs.name != cell.name and _cells(other.results, "other") != {}
    shutil.copy(theirs, folder / theirs.name)
    shutil.copy(theirs, cell)
    warned_by_plan_report_compare("belongs to another suite (other, not mine)")
    mine.run()
    assert (folder / f"{cell.name}.foreign").is_file() and _cells(folder, "mine") == before


@pytest.mark.slow
def test_reference_rows_follow_the_eval_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``eval.resize`` changed and rerun into the same folder: new reference rows, scored as the new cells are."""
    first = _run(tmp_path, "mine", "embedded_pf_r16.pt")
    again = Runner(load_suite(tmp_path / "mine.yaml", ["++eval.resize=clean"]), tmp_path / "results",
                   tmp_path / "reports", tmp_path / "runs", progress=False)
    again.run()
    assert first.scorer.key() != again.scorer.key()
    assert len(list(first.results.glob("reference-*.parquet"))) == 2  # recomputed under a new key, old one kept
    rows = read_results(first.results, "mine")
    cells, refs = rows[rows["kind"] == "cell"], rows[rows["kind"] == "reference"]
    assert set(cells["metric_args"]) == {'{"resize": "tf1x"}', '{"resize": "clean"}'}
    for args in set(cells["metric_args"]):  # every cell has the real / trivial baselines scored its way
        assert set(refs.loc[refs["metric_args"] == args, "model"]) == {"real_train", "trivial_class_mean"}, args
