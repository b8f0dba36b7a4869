"""Fixed outer step counts (``steps``) beside NFE budgets (``nfe``): planning, keys, rows, reports."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from pfbench import PfbenchError
from pfbench.report.figures import make_figures
from pfbench.report.keys import normalize, shown_keys
from pfbench.report.stats import summarize
from pfbench.results import read_results, write_rows
from pfbench.suite.parse import load_suite
from pfbench.suite.runner import Runner
from pfbench.suite.spec import RunSpec, SamplerSpec, SuiteSpec, plan
from pfbench.suite.validate import MAX_STEPS, validate

ROOT = Path(__file__).resolve().parents[1]

# Model pf (the shipped checkpoint): euler_pf, then dual_loop (n_inner 4) and look_ahead; NFE 8 and 16, 6 samples.
GRID = [{"models": ["pf"], "samplers": ["euler_pf"]},
        {"models": ["pf"], "samplers": [{"name": "dual_loop", "params": {"p": 0.4, "n_inner": 4}}, "look_ahead"]}]
SWEEP = {"nfe": [8, 16], "seeds": [0], "num_samples": 6}
TinySuite = Callable[..., Path]  # conftest's shipped_suite: writes a suite YAML, returns its path


def suite(shipped_suite: TinySuite, overrides: list[str] | None = None, **sweep: object) -> SuiteSpec:
    """The suite above with its sweep changed by ``sweep`` (a value of None removes the key) and hydra overrides."""
    changed = {k: v for k, v in {**SWEEP, **sweep}.items() if v is not None}
    path = shipped_suite("s.yaml", name="t", grid=GRID, sweep=changed, batch_size=6, test_size=40)
    return load_suite(path, overrides)


def test_sweep_steps_alone_has_no_nfe_cells_and_costs_n_times_inner(shipped_suite: TinySuite) -> None:
    spec = suite(shipped_suite, nfe=None, steps=[8, 16])
    validate(spec)
    cells = plan(spec)
    assert len(cells) == 6 and all(c.nfe is None for c in cells) and {c.steps for c in cells} == {8, 16}
    for cell in cells:
        sampler = cell.build_sampler()
        assert sampler.steps == cell.steps  # the step count is the cell's, not fitted to a budget
        calls = sampler.cost(sampler.steps)
        if cell.sampler.name == "dual_loop":
            assert calls == 4 * cell.steps  # N outer steps x n_inner
        elif cell.sampler.name == "look_ahead":
            assert cell.steps < calls < 2 * cell.steps  # two calls per step but the warm ones
        else:
            assert calls == cell.steps
    # neither given: the NFE default
    default = plan(suite(shipped_suite, nfe=None))
    assert {(c.nfe, c.steps) for c in default} == {(16, None)}


def test_a_block_runs_steps_while_the_sweep_runs_budgets(shipped_suite: TinySuite) -> None:
    spec = suite(shipped_suite, ["+grid.1.steps=[100]"])
    validate(spec)
    cells = plan(spec)
    assert {(c.sampler.name, c.nfe, c.steps) for c in cells} == {
        ("euler_pf", 8, None), ("euler_pf", 16, None), ("dual_loop", None, 100), ("look_ahead", None, 100)}


def test_a_block_with_both_nfe_and_steps_is_one_line_error(shipped_suite: TinySuite) -> None:
    spec = suite(shipped_suite, ["+grid.1.steps=[100]", "+grid.1.nfe=[16]"])
    with pytest.raises(PfbenchError, match=r"^grid\[1\]: give nfe \(NFE budgets\) or steps") as err:
        validate(spec)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("overrides,message", [
    (["sweep.steps=[0]"], f"sweep.steps[0] = 0: must be in [1, {MAX_STEPS}] (outer sampling steps)"),
    (["sweep.steps=[8,5000]"], f"sweep.steps[1] = 5000: must be in [1, {MAX_STEPS}]"),
    (["+grid.1.steps=[]"], "grid[1].steps: empty list; give at least one step count"),
    (["+grid.1.steps=[8,-1]"], "grid[1].steps[1] = -1: must be in"),
    (["sweep.nfe=[]"], "sweep.nfe: empty list"),
    (["sweep.steps=[1.5]"], "sweep.steps[0]"),
])
def test_bad_step_counts_name_their_key(shipped_suite: TinySuite, overrides: list[str], message: str) -> None:
    with pytest.raises(PfbenchError) as err:
        validate(suite(shipped_suite, overrides))
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_override_and_exclude_name_steps(shipped_suite: TinySuite) -> None:
    # sweep.steps is not in the file: a plain override adds it (no hydra `+` needed); the sweep then runs both
    spec = suite(shipped_suite, ["sweep.steps=[4,100]", "+sweep.exclude=[{sampler: dual_loop, steps: 100}]"])
    validate(spec)
    cells = plan(spec)
    assert {(c.sampler.name, c.steps) for c in cells if c.steps} == {
        ("euler_pf", 4), ("euler_pf", 100), ("dual_loop", 4), ("look_ahead", 4), ("look_ahead", 100)}
    assert len([c for c in cells if c.nfe]) == 6  # the NFE cells stay
    only = plan(suite(shipped_suite, ["sweep.steps=[100]", "sweep.nfe=[]"]))
    assert {(c.nfe, c.steps) for c in only} == {(None, 100)}
    with pytest.raises(PfbenchError, match=r"unknown key 'sweep.exclude\[0\].step'; did you mean 'steps'"):
        plan(suite(shipped_suite, ["+sweep.exclude=[{step: 4}]"]))


def test_steps_cells_have_their_own_keys_and_nfe_keys_are_unchanged() -> None:
    euler = SamplerSpec("euler")
    a, b = RunSpec("s", "m", euler, 16, 0, 10, 1.0), RunSpec("s", "m", euler, None, 0, 10, 1.0, None, 16)
    assert a.key("w") != b.key("w") and b.key("w") != RunSpec("s", "m", euler, None, 0, 10, 1.0, None, 8).key("w")
    with pytest.raises(ValueError):
        RunSpec("s", "m", euler, 16, 0, 10, 1.0, None, 16)
    # golden: a committed cell of results/embedded_quick is found under the key pfbench computes today
    path = next((ROOT / "results" / "embedded_quick").glob("cell-*.parquet"))
    row = read_results(path.parent).query("part == @path.stem").iloc[0]
    cell = RunSpec("embedded_quick", str(row["model"]), SamplerSpec(str(row["sampler"])), int(row["nfe_budget"]),
                   int(row["seed"]), int(row["num_samples"]), float(row["cfg_scale"]))
    assert path.stem.startswith(f"cell-{cell.key(str(row['model_id']))}-")
    assert int(row["steps"]) == json.loads(row["sampler_args"])["steps"]  # old rows: steps read from sampler_args


def test_rows_record_steps_in_both_modes(tmp_path: Path, shipped_suite: TinySuite) -> None:
    spec = suite(shipped_suite, ["+grid.0.steps=[3]", "sweep.nfe=[8]"])
    runner = Runner(spec, tmp_path / "results", tmp_path / "reports", tmp_path / "runs", progress=False)
    lm = runner.load_model("pf", spec.models["pf"])
    by: dict[tuple[str, int | None], pd.Series] = {}
    for cell in plan(spec):
        rows = runner.run_cell(cell, lm, runner.cell_part(cell, lm.key_id))
        write_rows(tmp_path / "results" / "t" / f"{cell.sampler.name}-{cell.axis()}.parquet", rows)
        by[(cell.sampler.name, cell.steps)] = pd.Series(rows[0].to_dict())
        forwards, _ = runner.estimate(cell)
        assert forwards == rows[0].forwards  # plan's estimate is what the cell spends (no CFG)
    steps_cell = by[("euler_pf", 3)]
    assert steps_cell["steps"] == 3 and steps_cell["nfe_used"] == 3 and "nfe_budget" not in steps_cell
    dual = by[("dual_loop", None)]  # budget 8 with n_inner 4: 2 outer steps
    assert dual["nfe_budget"] == 8 and dual["steps"] == 2 and dual["nfe_used"] == 8 and dual["gflops"] > 0
    df = read_results(tmp_path / "results" / "t")
    assert df["steps"].notna().all()


def _rows(sampler: str, nfe: int | None, steps: int, seed: int, value: float) -> list[dict[str, object]]:
    calls = 4 * steps if sampler == "dual_loop" else steps
    base = {"suite": "syn", "kind": "cell", "model": "pf", "sampler": sampler, "steps": steps,
            "sampler_args": json.dumps({"steps": steps, "p": 0.4}), "nfe_used": calls, "forwards": calls,
            "gflops": 0.5 * calls, "seed": seed, "cfg_scale": 1.0, "higher_is_better": False}
    return [base | ({} if nfe is None else {"nfe_budget": nfe}) | {"metric": "fd_embedded", "value": value}]


def test_reports_keep_steps_and_nfe_cells_apart_and_plot_steps(tmp_path: Path) -> None:
    folder = tmp_path / "syn"
    for seed in (0, 1):
        for n in (4, 8):  # dual_loop at equal NFE (n/4 steps) and at n fixed steps (4n calls)
            write_rows(folder / f"nfe-{n}-{seed}.parquet", _rows("dual_loop", 4 * n, n, seed, 30.0 / n + seed))
            write_rows(folder / f"steps-{n}-{seed}.parquet", _rows("dual_loop", None, n, seed, 20.0 / n + seed))
    rows = read_results(folder)
    summary = summarize(normalize(rows), n_boot=50)
    assert len(summary) == 4 and summary["fixed_steps"].notna().sum() == 2  # two NFE cells, two step cells
    assert "fixed_steps" in shown_keys(summary)
    figs = {f.name: f for f in make_figures(rows, tmp_path / "out")}
    assert {"fig_nfe", "fig_steps", "fig_gflops"} <= set(figs)
    assert "fixed steps" in figs["fig_steps"].caption.lower() or "fixed outer step" in figs["fig_steps"].caption
    assert figs["fig_steps"].png.is_file()
    nfe_only = rows[rows["nfe_budget"].notna()]
    assert "fig_steps" not in {f.name for f in make_figures(nfe_only, tmp_path / "out2")}
