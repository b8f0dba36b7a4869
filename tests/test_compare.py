"""compare / write_baseline: matching, direction, abs/rel/sigma tolerances, missing rows, baseline files."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rich.console import Console

from pfbench import PfbenchError
from pfbench.report.compare import compare, write_baseline
from pfbench.report.tolerances import Tolerance, load_tolerances, tolerance_for
from pfbench.results import read_path, write_rows

CELLS = [("pf", "euler_pf", 8), ("pf", "euler_pf", 16), ("sit", "euler", 8), ("sit", "euler", 16)]
BASE = {"fd_embedded": 40.0, "class_acc": 0.6}
HIB = {"fd_embedded": False, "class_acc": True}


def _write(folder: Path, shift: dict[tuple[str, str, int, str], float] | None = None, seeds: int = 1,
           noise: float = 0.0, cells: list[tuple[str, str, int]] = CELLS, rng_seed: int = 0,
           model_id: str | None = None) -> Path:
    """One Parquet file per (cell, seed); ``shift[(model, sampler, nfe, metric)]`` is added to the value."""
    rng = np.random.default_rng(rng_seed)
    shift = shift or {}
    for model, sampler, nfe in cells:
        for seed in range(seeds):
            rows = [{"suite": "t", "kind": "cell", "model": model, "sampler": sampler, "nfe_budget": nfe,
                     "cfg_scale": 1.0, "seed": seed, "metric": m, "higher_is_better": HIB[m],
                     "value": v + shift.get((model, sampler, nfe, m), 0.0) + noise * rng.standard_normal(),
                     "nfe_used": nfe, "gflops": 0.5 * nfe, "model_id": model_id}
                    for m, v in BASE.items()]
            write_rows(folder / f"cell-{model}-{sampler}-{nfe}-{seed}{model_id or ''}.parquet", rows)
    return folder


def _status(res: object, model: str, nfe: int, metric: str) -> str:
    rows = res.rows  # type: ignore[attr-defined]
    hit = rows[(rows["model"] == model) & (rows["nfe_budget"] == nfe) & (rows["metric"] == metric)]
    assert len(hit) == 1
    return str(hit["status"].iloc[0])


def test_synthetic_regression_is_caught(tmp_path: Path) -> None:
    a = _write(tmp_path / "a")
    b = _write(tmp_path / "b", {("pf", "euler_pf", 16, "fd_embedded"): 8.0})  # FD up 20%: worse
    res = compare(a, b)
    assert res.regressed and res.exit_code() == 1
    assert _status(res, "pf", 16, "fd_embedded") == "regressed"
    assert (res.rows["status"] == "regressed").sum() == 1
    assert "REGRESSED" in res.markdown()
    out = io.StringIO()
    res.print(Console(file=out, width=200))
    assert "REGRESSED" in out.getvalue() and "fd_embedded" in out.getvalue()


def test_improvement_is_not_a_regression_in_either_direction(tmp_path: Path) -> None:
    a = _write(tmp_path / "a")
    b = _write(tmp_path / "b", {("pf", "euler_pf", 16, "fd_embedded"): -8.0,  # lower FD: better
                                ("sit", "euler", 8, "class_acc"): +0.1})  # higher accuracy: better
    res = compare(a, b)
    assert not res.regressed and res.exit_code() == 0
    assert _status(res, "pf", 16, "fd_embedded") == "improved"
    assert _status(res, "sit", 8, "class_acc") == "improved"
    # the same changes the other way round are regressions: direction comes from higher_is_better
    back = compare(b, a)
    assert back.regressed and set(back.regressions["metric"]) == {"fd_embedded", "class_acc"}


def test_noise_within_tolerance_passes(tmp_path: Path) -> None:
    a = _write(tmp_path / "a")
    b = _write(tmp_path / "b", {("pf", "euler_pf", 8, "fd_embedded"): 0.8,  # +2% < rel 3%
                                ("sit", "euler", 16, "class_acc"): -0.008})  # -0.008 < abs 0.01
    res = compare(a, b)
    assert not res.regressed
    assert set(res.rows["status"]) == {"ok"}
    tight = compare(a, b, load_tolerances({"fd_embedded": {"rel": 0.01}, "class_acc": {"abs": 0.005}}))
    assert set(tight.regressions["metric"]) == {"fd_embedded", "class_acc"}


def test_sigma_tolerance_uses_pooled_std(tmp_path: Path) -> None:
    a = _write(tmp_path / "a", seeds=5, noise=1.0, rng_seed=1)
    small = _write(tmp_path / "small", {("pf", "euler_pf", 8, "fd_embedded"): 1.0}, seeds=5, noise=1.0, rng_seed=2)
    large = _write(tmp_path / "large", {("pf", "euler_pf", 8, "fd_embedded"): 6.0}, seeds=5, noise=1.0, rng_seed=2)
    tols = load_tolerances({"fd_embedded": {"sigma": 2.0}, "class_acc": {"sigma": 2.0}})
    res_small, res_large = compare(a, small, tols), compare(a, large, tols)
    # pooled std agrees with numpy on the raw seeds
    va = read_path(a)
    vb = read_path(small)
    key = {"model": "pf", "nfe_budget": 8, "metric": "fd_embedded"}

    def vals(df: object) -> np.ndarray:
        sel = np.ones(len(df), bool)  # type: ignore[arg-type]
        for k, v in key.items():
            sel &= (df[k] == v).to_numpy()  # type: ignore[index]
        return df.loc[sel, "value"].to_numpy(float)  # type: ignore[attr-defined]

    sa, sb = vals(va).std(ddof=1), vals(vb).std(ddof=1)
    pooled = np.sqrt((4 * sa**2 + 4 * sb**2) / 8)
    row = res_small.rows[(res_small.rows["model"] == "pf") & (res_small.rows["nfe_budget"] == 8)
                         & (res_small.rows["metric"] == "fd_embedded")].iloc[0]
    assert row["pooled_std"] == pytest.approx(pooled, rel=1e-9)
    assert row["allowed"] == pytest.approx(2 * pooled, rel=1e-9)
    assert abs(row["delta"]) < 2 * pooled  # the shift of 1 is within 2 sigma of noise ~1 ...
    assert _status(res_small, "pf", 8, "fd_embedded") == "ok"
    assert _status(res_large, "pf", 8, "fd_embedded") == "regressed"  # ... a shift of 6 is not


def test_sigma_only_tolerance_without_seeds_allows_nothing() -> None:
    tol = Tolerance(sigma=2.0)
    assert tol.allowed(10.0, float("nan")) == 0.0
    assert tol.allowed(10.0, 0.5) == 1.0
    assert Tolerance(abs=0.1, rel=0.05, sigma=1.0).allowed(10.0, 0.2) == pytest.approx(0.5)  # the largest part
    assert Tolerance().allowed(10.0, 1.0) is None  # informational


def test_missing_rows_are_reported(tmp_path: Path) -> None:
    a = _write(tmp_path / "a")
    b = _write(tmp_path / "b", cells=[c for c in CELLS if c != ("sit", "euler", 16)] + [("pf", "dual_loop", 8)])
    res = compare(a, b)
    assert not res.regressed
    assert res.incomplete and res.exit_code() == 1 and res.exit_code(allow_missing=True) == 0
    gone = res.missing_in_b
    assert set(zip(gone["model"], gone["nfe_budget"], gone["metric"], strict=True)) == {
        ("sit", 16, "fd_embedded"), ("sit", 16, "class_acc")}
    assert set(res.missing_in_a["sampler"]) == {"dual_loop"}
    md = res.markdown()
    assert "missing rows: only in a" in md and "missing rows: only in b" in md and "dual_loop" in md
    assert res.summary_line().startswith("INCOMPLETE") and "2 only in a, 2 only in b" in res.summary_line()
    for table in res.tables():  # every row has one cell per header (a key column once went unlabelled)
        assert table.rows and all(len(r) == len(table.columns) for r in table.rows), table.title
        assert "NFE" in table.columns and "variant" not in table.columns  # a key column only when it varies


def test_diagnostic_rows_with_missing_keys_match(tmp_path: Path) -> None:
    for side, v in (("a", 0.5), ("b", 0.3)):
        write_rows(tmp_path / side / "diag.parquet", [
            {"kind": "diagnostic", "model": "pf", "metric": "difficulty_pearson", "value": v, "higher_is_better": True},
            {"kind": "diagnostic", "model": "pf", "metric": "train_img_per_s", "value": 10 * v,
             "higher_is_better": True}])
    res = compare(tmp_path / "a", tmp_path / "b")
    assert res.missing_in_a.empty and res.missing_in_b.empty and len(res.rows) == 2
    st = dict(zip(res.rows["metric"], res.rows["status"], strict=True))
    assert st == {"difficulty_pearson": "regressed", "train_img_per_s": "info"}  # throughput: machine-dependent


def test_baseline_roundtrip_and_compare(tmp_path: Path) -> None:
    a = _write(tmp_path / "a", seeds=3, noise=0.5, rng_seed=3)
    base = write_baseline(a, tmp_path / "baseline.parquet")
    df = read_path(base)
    assert len(df) == len(CELLS) * len(BASE) and set(df["n"]) == {3}
    assert {"value", "std", "n", "git_sha"} <= set(df.columns) and df["seed"].isna().all()
    raw = read_path(a)
    sel = (raw["model"] == "sit") & (raw["nfe_budget"] == 16) & (raw["metric"] == "fd_embedded")
    brow = df[(df["model"] == "sit") & (df["nfe_budget"] == 16) & (df["metric"] == "fd_embedded")].iloc[0]
    assert brow["std"] == pytest.approx(raw.loc[sel, "value"].to_numpy(float).std(ddof=1))
    assert brow["value"] == pytest.approx(raw.loc[sel, "value"].to_numpy(float).mean())
    same = compare(base, a)
    assert not same.regressed and not same.incomplete and (same.rows["delta"].abs() < 1e-9).all()
    worse = _write(tmp_path / "worse", {("sit", "euler", 16, "fd_embedded"): 10.0}, seeds=1)
    res = compare(base, worse)
    assert res.regressed and list(res.regressions["metric"]) == ["fd_embedded"]


def test_tolerance_overrides_and_patterns(tmp_path: Path) -> None:
    path = tmp_path / "tol.yaml"
    path.write_text("tolerances:\n  fd_embedded: {rel: 0.5}\n  'precision*': {abs: 0.2}\n")
    tols = load_tolerances(path)
    assert tolerance_for("fd_embedded", tols) == Tolerance(rel=0.5)
    assert tolerance_for("precision_embedded", tols) == Tolerance(abs=0.2)
    assert tolerance_for("is_embedded_std", tols) == Tolerance()  # spreads are informational
    assert tolerance_for("class_acc", tols) == load_tolerances()["class_acc"]  # untouched default
    path.write_text("fd_embedded: {rell: 0.5}\n")
    with pytest.raises(PfbenchError, match=r"fd_embedded\.rell"):
        load_tolerances(path)
    with pytest.raises(PfbenchError, match="not found"):
        load_tolerances(tmp_path / "nope.yaml")
    with pytest.raises(PfbenchError, match="no such"):
        compare(tmp_path / "nope", tmp_path / "nope2")


def test_non_tty_output_is_a_plain_untruncated_table(tmp_path: Path) -> None:
    """CI logs are not terminals: rich would squeeze the 15-column table to 80 columns and cut every cell."""
    long = [("pf-" + "x" * 40, "look_ahead", 8), ("sit-" + "y" * 40, "euler", 8)]
    a = _write(tmp_path / "a", cells=long)
    b = _write(tmp_path / "b", {(long[0][0], "look_ahead", 8, "fd_embedded"): 8.0}, cells=long)
    out = io.StringIO()
    compare(a, b).print(Console(file=out, width=80), all_rows=True)  # a StringIO console is not a terminal
    text = out.getvalue()
    assert "…" not in text and max(len(line) for line in text.splitlines()) > 80
    lines = text.splitlines()
    row = next(line for line in lines if long[0][0] in line and "fd_embedded" in line)
    assert "look_ahead" in row and "REGRESSED" in row and "+8" in row  # one row, one line, every cell whole
    assert sum(long[1][0] in line for line in lines) == 2  # both metrics of the other model, each on one line
    header = next(line for line in lines if line.startswith("kind"))
    assert "tolerance" in header and "status" in header
    tty = io.StringIO()
    compare(a, b).print(Console(file=tty, width=80, force_terminal=True), all_rows=True)
    assert "┃" in tty.getvalue()  # a terminal still gets the rich table


def test_damaged_parts_are_skipped_with_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = _write(tmp_path / "a"), _write(tmp_path / "b")
    damaged = b / "cell-sit-euler-16-0.parquet"
    damaged.write_bytes(b"")
    res = compare(a, b)
    assert res.incomplete and len(res.missing_in_b) == 2  # the two metrics of the damaged cell
    err = capsys.readouterr().err
    assert str(damaged) in err and "damaged" in err and len(err.strip().splitlines()) == 1
    assert damaged.is_file()  # compare reads; only `pfbench run` moves a damaged part aside


# ------------------------------------------------------------------ every cell key is matched on and shown
def test_compare_keeps_every_cell_apart(tmp_path: Path, cell_grid: Any) -> None:
    a = cell_grid.write(tmp_path / "a")
    b = cell_grid.write(tmp_path / "b", shift={5: 3.0})  # one cell (srm, p=0.6, [0, 0.5]) 3 FD worse
    res = compare(a, b)
    assert len(res.rows) == 16 and (res.rows["a_n"] == 2).all()  # 8 cells × 2 metrics; seeds of one cell only
    assert list(res.regressions["metric"]) == ["fd_embedded"]
    bad = res.regressions.iloc[0]
    assert (bad["train_timesteps"], bad["variant"], bad["cfg_interval"]) == ("srm", '{"cfg_interval": [0.0, 0.5], "p": 0.6}',
                                                                          "[0.0, 0.5]")
    table = res.tables()[0]
    cols = {c: i for i, c in enumerate(table.columns)}
    assert {"train t-sampler", "variant", "CFG interval"} <= set(cols)
    shown = {(r[cols["train t-sampler"]], r[cols["variant"]], r[cols["CFG interval"]]) for r in table.rows}
    assert shown == set(cell_grid.cells)
    assert cell_grid.cells[5] == ("srm", "p=0.6", "[0, 0.5]")


def test_old_baseline_without_a_key_column_still_matches(tmp_path: Path, cell_grid: Any) -> None:
    rows = read_path(cell_grid.write(tmp_path / "grid"))
    ltg = rows[rows["train_timesteps"] == "ltg"]
    old = tmp_path / "old"
    write_rows(old / "cells.parquet", ltg.drop(columns=["train_timesteps", "part"]).to_dict("records"))
    base = write_baseline(old, tmp_path / "baseline.parquet")  # written before train_timesteps existed
    assert read_path(base)["train_timesteps"].isna().all()
    new = tmp_path / "new"
    write_rows(new / "cells.parquet", ltg.drop(columns=["part"]).to_dict("records"))
    res = compare(base, new)
    assert len(res.rows) == 8 and not res.incomplete and res.missing_in_a.empty and not res.regressed
    with pytest.raises(PfbenchError, match="differ only in train_timesteps"):  # would pool ltg and srm: refuse
        compare(base, tmp_path / "grid")


def test_retrained_models_match_by_recipe_across_model_ids(tmp_path: Path) -> None:
    a = _write(tmp_path / "a", seeds=2, model_id="a" * 64)
    b = _write(tmp_path / "b", {("pf", "euler_pf", 8, "fd_embedded"): 4e-4}, seeds=2, model_id="b" * 64)
    res = compare(a, b)  # default: by recipe
    assert len(res.rows) == 8 and res.missing_in_a.empty and res.missing_in_b.empty and not res.regressed
    text = " ".join(res.notes)
    assert "matched by recipe" in text and "2 model(s) matched by recipe across model ids" in text
    assert "fd_embedded max(rel 3%, 2σ)" in text  # the tolerance applied is stated
    assert "largest relative difference +1e-05 (fd_embedded, pf · euler_pf · NFE 8)" in text
    strict = compare(a, b, match_by="id")  # the same weights only: nothing matches
    assert strict.rows.empty and len(strict.missing_in_b) == 8 and strict.exit_code() == 1
    with pytest.raises(PfbenchError, match="--match-by 'hash'"):
        compare(a, b, match_by="hash")


def test_rerun_into_the_committed_folder_compares_the_new_instance(tmp_path: Path) -> None:
    a = _write(tmp_path / "a", seeds=2, model_id="a" * 64)
    mixed = _write(tmp_path / "mixed", seeds=2, model_id="a" * 64)  # the committed instance ...
    _write(mixed, {("sit", "euler", 16, "class_acc"): -0.5}, seeds=2, model_id="b" * 64)  # ... and a rerun beside it
    res = compare(a, mixed)  # used to stop with "2 result rows for seed 0 of one cell"
    assert len(res.rows) == 8 and res.regressed and set(res.regressions["model"]) == {"sit"}
    assert any("holds 2 instances of pf: using bbbbbbbbbbbb" in n for n in res.notes)
    _write(mixed, seeds=2, model_id="c" * 64)  # two instances the baseline does not hold: ambiguous
    with pytest.raises(PfbenchError, match="3 instances of model pf .* --match-by id"):
        compare(a, mixed)
    assert len(compare(a, mixed, match_by="id").rows) == 8  # the committed instance against itself


def test_training_seconds_are_informational_and_out_of_the_largest_difference(tmp_path: Path) -> None:
    """A reproduction on a slower (or busier) machine trains in more seconds: that is not a regression, and the
    stated largest relative difference is over the gated metrics, not the timings."""
    import pandas as pd

    def rows(wall: float, fd: float) -> pd.DataFrame:
        return pd.DataFrame([
            {"kind": "diagnostic", "model": "pf", "model_id": "a", "train_timesteps": "ltg", "train_step": 1200,
             "metric": "train_wall_s", "value": wall, "higher_is_better": False, "seed": 0},
            {"kind": "diagnostic", "model": "pf", "model_id": "a", "train_timesteps": "ltg", "metric": "train_img_per_s",
             "value": 38400 / wall, "higher_is_better": True, "seed": 0},
            {"kind": "cell", "model": "pf", "model_id": "a", "sampler": "euler_pf", "nfe_budget": 8, "cfg_scale": 1.0,
             "num_samples": 500, "metric": "fd_embedded", "value": fd, "higher_is_better": False, "seed": 0},
        ])

    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    rows(300.0, 7.0).to_parquet(a)
    rows(900.0, 7.007).to_parquet(b)  # three times slower, FD +0.1 %
    res = compare(a, b)
    status = dict(zip(res.rows["metric"], res.rows["status"], strict=True))
    assert status == {"train_wall_s": "info", "train_img_per_s": "info", "fd_embedded": "ok"}
    assert any(n.startswith("largest relative difference +0.001 (fd_embedded") and "info-only ones aside" in n
               for n in res.notes), res.notes
