"""One identity per unit (``pfbench.suite.identity``): the keys of committed results are reproduced, every path
that names a cell (run, plan, launch, cluster jobs, units, scoring) reads the same identity, and a change
invalidates exactly the units it affects."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch

from pfbench.results import read_results
from pfbench.suite.identity import ModelIdentity, SuiteIdentity
from pfbench.suite.parse import load_suite
from pfbench.suite.spec import plan

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("suite", ["embedded_quick", "thresholds", "validity", "validity_r32", "validity_shipped",
                                   "validity_quick", "validity_hetero_low", "validity_hetero_mid",
                                   "validity_hetero_high", "repa_embedded"])
def test_committed_cells_and_units_are_found_under_the_identity_of_today(suite: str) -> None:
    """Golden: every committed cell part (and model-unit part named as today) is the part ``SuiteIdentity``
    computes from the suite's YAML and the model ids the rows record. The sample count and seeds come from the
    rows (thresholds was run with ``sweep.num_samples=1000 sweep.seeds=[0,1]``)."""
    df = read_results(ROOT / "results" / suite, suite)
    cells = df[df["kind"] == "cell"]
    seeds = ",".join(str(int(s)) for s in sorted(cells["seed"].unique()))
    spec = load_suite(ROOT / "suites" / f"{suite}.yaml",
                      [f"sweep.num_samples={int(cells['num_samples'].iloc[0])}", f"sweep.seeds=[{seeds}]"])
    ids = {m: ModelIdentity(m, str(g["model_id"].iloc[0])) for m, g in cells.groupby("model")}
    identity = SuiteIdentity(spec)
    found = {identity.cell(c, ids[c.model]).part() for c in plan(spec) if c.model in ids}
    committed = set(cells["part"].unique())
    assert committed and committed <= found, sorted(committed - found)[:3]
    curves = df[df["kind"] == "curve"][["part", "model_id", "train_step"]].drop_duplicates()
    for row in curves.itertuples():
        assert identity.curve_part(str(row.model_id), int(row.train_step)) == row.part
    units = set(df["part"].unique())
    if suite == "embedded_quick":  # reference rows and difficulty unit in today's naming
        assert identity.reference_part(captions=False) in units
        assert identity.difficulty_part(next(iter(ids.values())).weights or "") in units


def test_run_plan_launch_jobs_units_and_scoring_read_one_identity(tiny_suite: Any, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The seven former assembly paths give one id: the parts ``Runner.run`` writes are the parts ``pfbench
    plan`` reports cached, the launcher counts done (submitting nothing), a cluster job finds computed, and
    the model's identity known without loading is the loaded one's."""
    from typer.testing import CliRunner

    from pfbench.cli import app
    from pfbench.suite.jobs import CellJob, JobRef, Roots
    from pfbench.suite.launch import Entry, Launcher
    from pfbench.suite.runner import Runner

    path = tiny_suite(models=("ck",), checkpoints={"ck": "asset:embedded_pf_r16.pt"}, grid=("ck",),
                      sweep={"nfe": [2], "seeds": [0, 1], "num_samples": 20}, test_size=100)
    spec = load_suite(path)
    roots = (tmp_path / "results", tmp_path / "reports", tmp_path / "runs")
    runner = Runner(spec, *roots, progress=False)
    runner.run()
    lm = runner.load_model("ck", spec.models["ck"])
    assert runner.suite_models.identity("ck") == lm.identity and lm.identity.weights == lm.model_id
    cells = plan(spec)
    parts = {runner.identity.cell(c, lm.identity).part() for c in cells}
    written = {p.stem for p in runner.results.glob("*.parquet")}
    assert len(parts) == len(cells) == 2 and parts <= written  # run
    assert all(p.endswith("-" + runner.scorer.key()) for p in parts)  # scoring
    assert runner.identity.reference_part(captions=False) in written  # units
    assert runner.identity.difficulty_part(lm.model_id) in written
    res = CliRunner().invoke(app, ["plan", str(path), "--results", str(roots[0]), "--runs", str(roots[2])])
    assert res.exit_code == 0 and res.output.count(" yes ") + res.output.count("│ yes") >= len(cells), res.output
    submitted: list[str] = []

    def submit(self: Launcher, kind: str, jobs: list[tuple[str, str, Any]], reg: dict[str, Entry],
               dependency: Any = ()) -> list[JobRef]:
        refs = [JobRef("local", str(tmp_path), str(i)) for i, _ in enumerate(jobs)]
        for (key, label, _), ref in zip(jobs, refs, strict=True):
            submitted.append(key)
            reg[key] = Entry(kind, label, ref, "now")
        return refs

    monkeypatch.setattr(Launcher, "submit", submit)
    step = Launcher(runner).step()
    assert step.cells_done == step.cells == len(cells)  # launch
    assert submitted and all(k.startswith("finish-") for k in submitted)  # no cell job: only the report's
    job = CellJob(spec, Roots(*(str(p) for p in roots)), None, (), cells[0], shard_size=10, keep_shards=False)
    monkeypatch.setattr(CellJob, "start", lambda self: (0, 1, runner))
    assert job().endswith("computed by another runner")  # jobs: the part it names is the one on disk


def _units(identity: SuiteIdentity, model: ModelIdentity) -> dict[str, str]:
    """Every unit key of a suite with one model: cells, reference rows, a curve point and the diagnostics."""
    out = {f"cell{i}": identity.cell(c, model).part() for i, c in enumerate(plan(identity.spec))}
    weights = model.weights or ""
    return out | {"reference": identity.reference_part(False), "curve": identity.curve_part(weights, 6),
                  "difficulty": identity.difficulty_part(weights), "validity": identity.validity_part(weights)}


@pytest.mark.parametrize(("override", "changed"), [
    ("eval.batch_size=7", set()),  # no effect on any number
    ("eval.precision=bf16", {"cells", "curve"}),  # sampling numerics
    ("eval.difficulty_t=0.3", {"difficulty"}),
    ("eval.difficulty_ts=[0.3]", {"validity"}),
    ("eval.resize=clean", {"cells", "curve", "reference"}),  # how images are scored
    ("data.test_size=120", {"cells", "curve", "reference", "difficulty", "validity"}),  # the reference set
    ("sweep.num_samples=30", {"cells", "reference"}),
])
def test_an_option_invalidates_exactly_the_units_it_affects(tiny_suite: Any, override: str, changed: set[str]) -> None:
    path = tiny_suite(test_size=100)
    model = ModelIdentity("pf", "w" * 64, "pf-recipe")
    before = _units(SuiteIdentity(load_suite(path)), model)
    after = _units(SuiteIdentity(load_suite(path, [override])), model)
    moved = {"cells" if k.startswith("cell") else k for k in before if before[k] != after[k]}
    assert moved == changed
    if "cells" in changed:
        assert all(before[k] != after[k] for k in before if k.startswith("cell"))


def test_a_replaced_weights_file_invalidates_its_model_units_only(tiny_suite: Any, tmp_path: Path) -> None:
    """A checkpoint replaced under the same path: a new content id, so new cell, curve and diagnostic parts; the
    reference rows (which see no model) keep theirs."""
    from pfbench.suite.models import SuiteModels
    from pfbench.suite.sources import resolve_checkpoint
    from pfbench.train.checkpoints import load_checkpoint, save_checkpoint

    src = load_checkpoint(resolve_checkpoint("asset:embedded_pf_r16.pt")[0])
    ck = tmp_path / "ck.pt"

    def write(scale: float) -> None:
        model = {k: v * scale if v.is_floating_point() else v for k, v in src.model.items()}
        save_checkpoint(ck, step=src.step, config=src.config, net_config=src.net_config, model=model, ema=model,
                        optimizer=None)

    write(1.0)
    spec = load_suite(tiny_suite(models=("ck",), checkpoints={"ck": str(ck)}, grid=("ck",)))
    identity = SuiteIdentity(spec)
    first = SuiteModels(spec, tmp_path / "runs", False, None).identity("ck")  # type: ignore[arg-type]
    write(1.5)
    second = SuiteModels(spec, tmp_path / "runs", False, None).identity("ck")  # type: ignore[arg-type]
    assert first.weights is not None and second.weights is not None and first != second
    before, after = _units(identity, first), _units(identity, second)
    assert {k for k in before if before[k] == after[k]} == {"reference"}
    assert dataclasses.replace(second, weights=first.weights) == first  # nothing else moved
    assert torch.equal(load_checkpoint(ck).model[next(iter(src.model))], 1.5 * src.model[next(iter(src.model))])


def test_a_rerun_that_would_train_a_second_instance_into_committed_results_stops_first(
        tiny_suite: Any, tmp_path: Path) -> None:
    """Issue #20 item 7: results of ``pf`` are in the folder, its checkpoint is not (another machine's runs/):
    ``pfbench run`` stops before training with one line naming the model, the id there and the way out;
    ``--new-instance`` trains it and the report says the folder holds two instances."""
    from typer.testing import CliRunner

    from pfbench import PfbenchError
    from pfbench.cli import app
    from pfbench.suite.runner import Runner

    sweep = {"nfe": [2], "seeds": [0], "num_samples": 20}
    first = load_suite(tiny_suite(sweep=sweep, test_size=100))
    results, reports = tmp_path / "results", tmp_path / "reports"
    Runner(first, results, reports, tmp_path / "runs1", progress=False).run()
    (old_id,) = read_results(results / "tiny", "tiny").query("kind == 'cell'")["model_id"].unique()
    other = tiny_suite("other.yaml", sweep=sweep, test_size=100, train={"seed": 1})  # other weights
    fresh = Runner(load_suite(other), results, reports, tmp_path / "runs2", progress=False)
    with pytest.raises(PfbenchError) as err:
        fresh.run()
    msg = str(err.value)
    assert "\n" not in msg and "models.pf:" in msg and old_id[:12] in msg and "--new-instance" in msg
    assert "pfbench compare" in msg and not any((tmp_path / "runs2").rglob("*.pt"))  # stopped before training
    # a rerun that finds its finished checkpoint trains nothing and is not stopped
    Runner(first, results, reports, tmp_path / "runs1", progress=False).preflight()
    args = ["run", str(other), "--results", str(results), "--reports", str(reports), "--runs", str(tmp_path / "runs2"),
            "--quiet", "--new-instance"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    ids = read_results(results / "tiny", "tiny").query("kind == 'cell'")["model_id"].unique()
    assert len(ids) == 2 and "several instances" in (reports / "tiny" / "index.md").read_text()
