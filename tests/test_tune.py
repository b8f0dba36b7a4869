"""``pfbench tune``: the search finds a known optimum, held-out seeds never enter it, a killed or doubled tuner
resumes without repeating finished trials, and trials are ordinary cached suite cells."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import optuna
import pandas as pd
import pytest

from pfbench import PfbenchError
from pfbench.suite.runner import cell_variant
from pfbench.suite.spec import GridSpec, ModelSpec, RunSpec, SamplerSpec, SuiteSpec, SweepSpec, TuneSpec
from pfbench.suite.tune import FINISHED, Tuner

# The analytic objective's optimum (lower is better): look_ahead at p=0.3, r=2.0; dual_loop at p=0.6, n_inner=3.
OPTIMUM = {"look_ahead": {"p": 0.3, "r": 2.0}, "dual_loop": {"p": 0.6, "n_inner": 3}}


def analytic(sampler: object, seed: int) -> float:
    """A quality (like an FD: lower is better) whose best sampler parameters are known; the seed shifts it."""
    name = type(sampler).name  # type: ignore[attr-defined]
    opt = OPTIMUM[name] if name in OPTIMUM else {}
    value = 1.0 + 0.01 * seed
    for key, best in opt.items():
        scale = 0.05 if key == "n_inner" else 1.0
        value += scale * (float(getattr(sampler, key)) - best) ** 2
    return value


def analytic_rows(cells: Sequence[RunSpec]) -> list[pd.DataFrame]:
    """What the runner would return for ``cells``, with the analytic objective as fd_embedded."""
    out = []
    for c in cells:
        sampler = c.sampler.build(c.nfe)  # the real sampler: its defaults and its step count at this budget
        out.append(pd.DataFrame([{
            "suite": c.suite, "kind": "cell", "model": c.model, "sampler": c.sampler.name, "variant": cell_variant(c),
            "nfe_budget": c.nfe, "nfe_used": sampler.cost(sampler.steps), "gflops": 1.0, "wall_s": 1.0, "seed": c.seed,
            "num_samples": c.num_samples, "cfg_scale": c.cfg_scale, "metric": "fd_embedded",
            "value": analytic(sampler, c.seed), "higher_is_better": False}]))
    return out


def tiny_spec(trials: int, samplers: Sequence[str] = ("look_ahead", "dual_loop"), nfe: Sequence[int] = (16,),
              tuning: Sequence[int] = (100, 101), heldout: Sequence[int] = (0, 1, 2)) -> SuiteSpec:
    grid = [GridSpec(["pf"], [SamplerSpec(s) for s in (*samplers, "euler_pf")])]
    return SuiteSpec("tiny_tune", grid, {"pf": ModelSpec(checkpoint="asset:embedded_pf_r16.pt")},
                     sweep=SweepSpec(nfe=list(nfe), seeds=[0], num_samples=50), metrics=["fd_embedded"],
                     tune=TuneSpec(samplers=list(samplers), trials=trials, tuning_seeds=list(tuning),
                                   heldout_seeds=list(heldout)))


def test_tune_finds_the_known_optimum(tmp_path: Path) -> None:
    tuner = Tuner(tiny_spec(30), tmp_path, tmp_path / "reports", evaluate=analytic_rows, progress=False)
    outcomes, heldout, scores = tuner.run()
    tuned = {o.target.sampler.name: o.tuned.sampler.build(16) for o in outcomes}
    assert abs(tuned["look_ahead"].p - 0.3) <= 0.1 and abs(tuned["look_ahead"].r - 2.0) <= 0.3
    assert abs(tuned["dual_loop"].p - 0.6) <= 0.1 and tuned["dual_loop"].n_inner == 3
    for s in scores:  # tuned beats default on held-out seeds (the objective has no noise to overfit)
        assert sum(s["tuned_heldout"].values()) < sum(s["default_heldout"].values())
    assert heldout["tuned"].any() and heldout["before"].any() and set(heldout["seed"]) == {0, 1, 2}


def test_heldout_seeds_never_enter_the_search(tmp_path: Path) -> None:
    seen: list[set[int]] = []

    def evaluate(cells: Sequence[RunSpec]) -> list[pd.DataFrame]:
        seen.append({c.seed for c in cells})
        return analytic_rows(cells)

    tuner = Tuner(tiny_spec(6), tmp_path, tmp_path / "reports", evaluate=evaluate, progress=False)
    tuner.run()
    phases = [p for p, _ in tuner.evaluated]
    assert phases.count("search") >= 2 * 6 * 2  # two studies, six trials, two tuning seeds
    assert {c.seed for p, c in tuner.evaluated if p != "heldout"} == {100, 101}
    assert {c.seed for p, c in tuner.evaluated if p == "heldout"} == {0, 1, 2}
    first_heldout = phases.index("heldout")  # held-out scoring starts only after every search has ended
    assert "search" not in phases[first_heldout:]
    assert all(s <= {100, 101} for s in seen[:-1]) and seen[-1] == {0, 1, 2}
    storage = tuner.storage()
    for summary in optuna.get_all_study_summaries(storage):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        assert all(t.user_attrs["seeds"] == [100, 101] for t in study.get_trials(states=FINISHED))


def test_guided_suites_also_search_the_cfg_scale_and_interval(tmp_path: Path) -> None:
    spec = tiny_spec(4, samplers=["dual_loop"])
    spec = dataclasses.replace(spec, sweep=dataclasses.replace(spec.sweep, cfg_scale=[1.0, 2.0]))
    tuner = Tuner(spec, tmp_path, tmp_path / "reports", evaluate=analytic_rows, progress=False)
    (target,) = tuner.targets()
    assert target.cfg == 2.0 and {"cfg_scale", "cfg_lo", "cfg_hi"} <= set(tuner.space(target))
    assert tuner.space(target)["n_inner"].high == 8  # fits NFE 16
    config = tuner.config(target, {"p": 0.4, "n_inner": 4, "cfg_scale": 3.0, "cfg_lo": 0.1, "cfg_hi": 0.9})
    assert config.sampler.params == {} and config.cfg_scale == 3.0 and config.cfg_interval == (0.1, 0.9)
    assert tuner.config(target, {"p": 0.4, "n_inner": 4, "cfg_scale": 1.0, "cfg_lo": 0.1, "cfg_hi": 0.9}).cfg_interval \
        is None  # an interval means nothing without guidance
    outcomes, _, _ = tuner.run()
    cells = [c for phase, c in tuner.evaluated if phase == "search"]
    assert len({(c.cfg_scale, c.cfg_interval) for c in cells}) > 1  # the search moved the guidance


def test_overlapping_seeds_are_refused(tmp_path: Path) -> None:
    with pytest.raises(PfbenchError, match="held-out"):
        Tuner(tiny_spec(3, tuning=(0, 1)), tmp_path, evaluate=analytic_rows)


def _worker(tmp: Path, trials: int, sleep_s: float, log: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, str(Path(__file__).with_name("_tune_worker.py")), str(tmp), str(trials),
                             str(sleep_s), str(log)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)


def _finished(tmp: Path) -> int:
    tuner = Tuner(tiny_spec(1, samplers=["look_ahead"]), tmp, evaluate=analytic_rows, progress=False)
    storage = tuner.storage()
    names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    assert len(names) == 1
    return len(optuna.load_study(study_name=names[0], storage=storage).get_trials(states=FINISHED))


@pytest.mark.slow  # two subprocesses (torch imports)
def test_killed_tune_resumes_without_repeating_finished_trials(tmp_path: Path) -> None:
    trials, log = 10, tmp_path / "log.txt"
    proc = _worker(tmp_path, trials, 0.3, log)
    deadline = time.time() + 120
    while time.time() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 4):
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = _finished(tmp_path)
    assert 3 <= done < trials
    out, err = _worker(tmp_path, trials, 0.0, log).communicate(timeout=180)
    assert err == "" or "Traceback" not in err, err[-2000:]
    evaluated_now = int(out.strip().splitlines()[-1])
    assert _finished(tmp_path) == trials
    assert evaluated_now == trials - done  # only the trials not finished before the kill


@pytest.mark.slow  # two subprocesses
def test_two_tuners_share_one_study(tmp_path: Path) -> None:
    trials = 12
    procs = [_worker(tmp_path, trials, 0.3, tmp_path / f"log{i}.txt") for i in range(2)]
    outs = [p.communicate(timeout=180) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e[-2000:] for _, e in outs]
    counts = [int(o.strip().splitlines()[-1]) for o, _ in outs]
    finished = _finished(tmp_path)
    # each stops once the study holds `trials` finished trials; a trial in flight at that moment may add one more
    # (a tuner that starts late on a loaded machine may find the study done: it then evaluates nothing)
    assert trials <= finished <= trials + 1 and sum(counts) == finished, (counts, finished)


TINY = """
name: tiny_tune
data: {name: embedded, resolution: 16, seed: 0, test_size: 300}
models: {pf: {checkpoint: "asset:embedded_pf_r16.pt"}}
grid: [{models: [pf], samplers: [look_ahead, euler_pf]}]
sweep: {nfe: [4], seeds: [0], num_samples: 40}
metrics: [fd_embedded]
eval: {batch_size: 40, learning_curve: false}
tune: {samplers: [look_ahead], trials: 2, tuning_seeds: [5], heldout_seeds: [0, 1]}
"""


@pytest.mark.slow  # real cells: the shipped checkpoint samples and the embedded network scores
def test_tune_cli_computes_ordinary_cached_cells(tmp_path: Path) -> None:
    (tmp_path / "tiny.yaml").write_text(TINY)
    cmd = [sys.executable, "-m", "pfbench.cli", "tune", str(tmp_path / "tiny.yaml"), "--results",
           str(tmp_path / "results"), "--reports", str(tmp_path / "reports"), "--threads", "1", "--quiet"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PFBENCH_CACHE": str(tmp_path / "cache")}
    first = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    parts = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "results" / "tiny_tune").glob("cell-*.parquet")}
    rows = pd.concat([pd.read_parquet(tmp_path / "results" / "tiny_tune" / p) for p in parts])
    assert set(rows["kind"]) == {"cell"} and set(rows["seed"]) == {0, 1, 5}  # tuning seed 5, held-out 0 and 1
    assert (tmp_path / "reports" / "tiny_tune" / "tune.md").read_text().count("| pf | look_ahead | 4 |") == 1
    assert "look_ahead" in (tmp_path / "reports" / "tiny_tune" / "tuned.yaml").read_text()
    second = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)  # everything cached
    assert second.returncode == 0, second.stderr[-3000:]
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "results" / "tiny_tune").glob("cell-*.parquet")} == parts
