"""Every cell reaches every table: keys that tell cells apart (variant, CFG interval, training sampler, ...) are
grouped by and shown; intervals stay inside a metric's valid range. Synthetic Parquet, no torch."""

from __future__ import annotations

import io
import math
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from rich.console import Console

from pfbench import PfbenchError
from pfbench.report.html import report
from pfbench.report.keys import shown_keys
from pfbench.report.stats import metric_range, shown_interval, summarize
from pfbench.report.tables import print_run_summary
from pfbench.results import read_results, write_rows


def _md_table(md: str, section: str) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the first Markdown table after ``## section``."""
    lines = md.split(f"## {section}\n", 1)[1].splitlines()
    rows = [[c.strip() for c in ln.strip("|").split(" | ")] for ln in lines if ln.startswith("| ")]
    body = [r for r in rows[1:] if r[0] != "---"]
    return rows[0], body


def test_every_cell_reaches_markdown_and_html(tmp_path: Path, cell_grid: Any) -> None:
    cell_grid.write(tmp_path / "results" / "grid")
    md = report("grid", tmp_path / "results", tmp_path / "reports").read_text()
    head, rows = _md_table(md, "Results")
    assert len(rows) == 8, "\n".join(" | ".join(r) for r in rows)  # the old table showed one row for all eight
    col = {name: head.index(name) for name in ("train t-sampler", "variant", "CFG interval", "seeds")}
    fd = next(i for i, h in enumerate(head) if h.startswith("fd_embedded"))
    got = {(r[col["train t-sampler"]], r[col["variant"]], r[col["CFG interval"]]): r for r in rows}
    assert set(got) == set(cell_grid.cells)
    for i, key in enumerate(cell_grid.cells):
        assert got[key][fd].startswith(f"{cell_grid.fd_mean(i):.4g} ± "), (key, got[key][fd])  # seeds of one cell only
        assert got[key][col["seeds"]] == "2"
    html = (tmp_path / "reports" / "grid" / "index.html").read_text()
    results = html.split("<h2>Results</h2>", 1)[1].split("</table>", 1)[0]
    trs = [tr for tr in results.split("<tr>")[1:] if "dual_loop" in tr]
    assert len(trs) == 8
    for i, (tr, var, iv) in enumerate(cell_grid.cells):
        hit = [t for t in trs if f"<td>{tr}</td>" in t and f"<td>{var}</td>" in t and f"<td>{iv}</td>" in t]
        assert len(hit) == 1 and f"{cell_grid.fd_mean(i):.4g} ± " in hit[0]


def test_run_summary_shows_every_cell(tmp_path: Path, cell_grid: Any) -> None:
    out = io.StringIO()
    print_run_summary(read_results(cell_grid.write(tmp_path / "r")), "grid", Console(file=out, width=250))
    lines = [ln for ln in out.getvalue().splitlines() if "dual_loop" in ln]
    assert len(lines) == 8, out.getvalue()
    for i, (tr, var, iv) in enumerate(cell_grid.cells):
        hit = [ln for ln in lines if tr in ln and var in ln and iv in ln]
        assert len(hit) == 1 and f"{cell_grid.fd_mean(i):.4g} ±" in hit[0], (tr, var, iv)
    assert re.search(r"variant.*CFG interval", out.getvalue()) and "train t-sampler" in out.getvalue()


def test_shown_keys_only_the_varying_ones(tmp_path: Path, cell_grid: Any) -> None:
    rows = read_results(cell_grid.write(tmp_path / "r"))
    s = summarize(rows, n_boot=10)
    assert shown_keys(s) == ["model", "train_timesteps", "sampler", "variant", "cfg_scale", "cfg_interval",
                             "nfe_budget"]  # model_id follows from train_timesteps: not shown
    one = summarize(rows[rows["train_timesteps"] == "ltg"], n_boot=10)
    assert "train_timesteps" not in shown_keys(one)
    # two checkpoints of one model at otherwise equal settings: the checkpoint id becomes a column
    two = pd.concat([one.assign(model_id="sha-a"), one.assign(model_id="sha-b")], ignore_index=True)
    assert "model_id" in shown_keys(two)


def test_variant_derived_from_sampler_args_when_missing(tmp_path: Path, cell_grid: Any) -> None:
    rows = read_results(cell_grid.write(tmp_path / "r"))
    s = summarize(rows.assign(variant=pd.NA), n_boot=10)  # rows written before the variant column
    assert sorted(s["variant"].dropna().unique()) == ['{"p": 0.2}', '{"p": 0.6}']
    assert len(s) == 16 and (s["n"] == 2).all()  # interval still from cfg_interval: 8 cells × 2 metrics


def test_two_rows_of_one_seed_are_an_error_not_a_pool(tmp_path: Path, cell_grid: Any) -> None:
    rows = read_results(cell_grid.write(tmp_path / "r"))
    one = rows[rows["part"] == "cell-0-0"]
    clash = one.assign(part="cell-0-0-again", sampler_args='{"n_inner": 2, "p": 0.2, "steps": 8}')
    with pytest.raises(PfbenchError, match=r"seed 0 .* differ only in sampler_args .*cell-0-0-again"):
        summarize(pd.concat([rows, clash], ignore_index=True))
    out = io.StringIO()  # the run summary says so in one line instead of failing a finished run
    print_run_summary(pd.concat([rows, clash], ignore_index=True), "grid", Console(file=out, width=250))
    assert "no summary table" in out.getvalue()


def test_metric_ranges() -> None:
    assert metric_range("class_acc") == (0.0, 1.0) and metric_range("precision_embedded") == (0.0, 1.0)
    assert metric_range("fd_embedded") == (0.0, math.inf) and metric_range("kid") == (0.0, math.inf)
    assert metric_range("is_embedded") == (1.0, math.inf) and metric_range("is_embedded_std") == (0.0, math.inf)
    assert metric_range("difficulty_pearson") == (-1.0, 1.0) and metric_range("clip_score") == (0.0, 100.0)
    assert metric_range("something_new") == (-math.inf, math.inf)


def test_intervals_clipped_to_the_metric_range(tmp_path: Path) -> None:
    rows = [{"kind": "cell", "model": "pf", "sampler": "euler_pf", "nfe_budget": 8, "cfg_scale": 1.0, "seed": s,
             "metric": m, "value": v, "higher_is_better": m == "class_acc", "suite": "clip"}
            for m, vals in (("class_acc", (0.99, 0.95)), ("fd_embedded", (0.1, 0.9))) for s, v in enumerate(vals)]
    write_rows(tmp_path / "results" / "clip" / "c.parquet", rows)
    s = summarize(read_results(tmp_path / "results" / "clip"))
    acc, fd = (s[s["metric"] == m].iloc[0] for m in ("class_acc", "fd_embedded"))
    assert float(acc["t_hi"]) > 1 and float(fd["t_lo"]) < 0  # the raw Student-t interval leaves the range
    lo, hi, kind = shown_interval(acc)
    assert kind == "t" and hi == 1.0 and lo == pytest.approx(float(acc["t_lo"]))  # asymmetric about the mean
    lo, hi, _ = shown_interval(fd)
    assert lo == 0.0 and hi == pytest.approx(float(fd["t_hi"]))
    md = report("clip", tmp_path / "results", tmp_path / "reports").read_text()
    _, table = _md_table(md, "Results")
    assert ", 1]" in table[0][-2] and "t[0, " in table[0][-1]
