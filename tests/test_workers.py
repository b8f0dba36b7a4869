"""Training workers of `pfbench run` die with it (kill -9), stop within seconds on Ctrl-C, and a rerun resumes and
writes the same result units as an uninterrupted run (training speed included)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

TRAIN2 = """
name: two
data: {name: embedded, resolution: 16, seed: 0, test_size: 100}
models:
  pf:
    train: &train
      kind: pf
      model: cpu-xs
      model_overrides: {depth: 1, width: 32, heads: 2}
      data: {name: embedded, resolution: 16, size: 2000, seed: 0}
      steps: 200
      batch_size: 16
      lr: 3.0e-3
      warmup: 2
      ckpt_every: 10
      log_every: 5
  sit:
    train:
      <<: *train
      kind: sit
      timesteps: {name: global_uniform}
grid:
  - {models: [sit], samplers: [euler]}
  - {models: [pf], samplers: [euler_pf]}
sweep: {nfe: [2], seeds: [0], num_samples: 40}
metrics: [class_acc]
eval: {batch_size: 40, learning_curve: false}
"""


def sigint_default() -> None:
    """Child start-up: SIGINT's default handling, even under a test run started with SIGINT ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _run(tmp: Path, folder: str) -> subprocess.Popen[str]:
    """``pfbench run`` of the two-model suite into ``tmp/folder``; 2 threads: one training process per model."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PFBENCH_CACHE": str(tmp / "cache"), "PYTHONUNBUFFERED": "1"}
    root = tmp / folder
    return subprocess.Popen(
        [sys.executable, "-m", "pfbench.cli", "run", str(tmp / "two.yaml"), "--results", str(root / "results"),
         "--reports", str(root / "reports"), "--runs", str(root / "runs"), "--quiet", "--threads", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp, preexec_fn=sigint_default)


def _parent(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent to reap it is not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (by a /proc scan): the training workers and multiprocessing's helper."""
    kids: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (ppid := _parent(int(entry.name))) is not None:
            kids.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for kid in kids.get(todo.pop(), []):
            out.append(kid)
            todo.append(kid)
    return out


def _wait_training(tmp: Path, folder: str, proc: subprocess.Popen[str], name: str) -> list[Path]:
    """Waits until both models' run folders have ``name`` (log.jsonl: training began; last.pt: a checkpoint)."""
    deadline = time.time() + 600
    while time.time() < deadline:
        found = sorted((tmp / folder / "runs" / "two").glob(f"*/{name}"))
        if len(found) == 2:
            return found
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.1)
    raise AssertionError(f"training never wrote {name}")


def _left(kids: list[int], within: float) -> list[int]:
    deadline = time.time() + within
    while time.time() < deadline and any(_alive(k) for k in kids):
        time.sleep(0.2)
    return [k for k in kids if _alive(k)]


def _parts(tmp: Path, folder: str) -> set[str]:
    return {p.name for p in (tmp / folder / "results" / "two").glob("*.parquet")}


def _finish(proc: subprocess.Popen[str]) -> str:
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-3000:]
    return err


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the workers through /proc")
def test_kill_9_during_training_leaves_no_worker_and_the_rerun_writes_every_unit(tmp_path: Path) -> None:
    (tmp_path / "two.yaml").write_text(TRAIN2)
    _finish(_run(tmp_path, "whole"))  # the uninterrupted run: what the units should be
    whole = _parts(tmp_path, "whole")
    assert {p.split("-")[0] for p in whole} >= {"cell", "train", "reference"} and len(whole) == 8, whole

    proc = _run(tmp_path, "killed")
    _wait_training(tmp_path, "killed", proc, "log.jsonl")
    kids = _descendants(proc.pid)
    assert len(kids) >= 2, kids  # a training process per model
    proc.kill()
    proc.wait()
    left = _left(kids, 10.0)
    for pid in left:  # do not leave them to the rest of the test session
        os.kill(pid, signal.SIGKILL)
    assert not left, f"{len(left)} of {len(kids)} worker processes still running 10 s after kill -9 of the runner"
    err = _finish(_run(tmp_path, "killed"))
    assert "waiting for another runner" not in err, err[-3000:]
    assert _parts(tmp_path, "killed") == whole  # training speed rows included, same model ids (resumed exactly)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the workers through /proc")
def test_ctrl_c_during_training_stops_within_seconds_keeping_checkpoints_and_the_rerun_resumes(tmp_path: Path) -> None:
    (tmp_path / "two.yaml").write_text(TRAIN2)
    proc = _run(tmp_path, "run")
    logs = [p.parent / "log.jsonl" for p in _wait_training(tmp_path, "run", proc, "last.pt")]
    kids = _descendants(proc.pid)
    began = time.monotonic()
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("pfbench run still running 10 s after Ctrl-C during training") from None
    assert proc.returncode == 130, err[-3000:]
    assert time.monotonic() - began < 10
    assert not _left(kids, 2.0), "a training process outlived the runner"
    last = err.strip().splitlines()[-1]
    kept = dict(re.findall(r"(pf|sit): the checkpoint of step (\d+) is kept in ", last))
    assert set(kept) == {"pf", "sit"} and last.startswith("interrupted: no cell was computed yet; training stopped"), err
    before = {log: [json.loads(x) for x in log.read_text().splitlines()] for log in logs}
    err = _finish(_run(tmp_path, "run"))
    for log, rows in before.items():  # resumed from the kept checkpoint: the log up to it is the first run's
        step = int(kept[log.parent.name.split("-")[0]])
        after = [json.loads(x) for x in log.read_text().splitlines()]
        assert step >= 10 and [r for r in after if r["step"] <= step] == [r for r in rows if r["step"] <= step]
        assert after[-1]["step"] == 200 and [r["step"] for r in after] == list(range(5, 201, 5))
    assert len([p for p in _parts(tmp_path, "run") if p.startswith("train-")]) == 2, _parts(tmp_path, "run")


def test_a_model_trained_to_the_end_by_an_earlier_run_still_gets_its_training_speed_row(tmp_path: Path) -> None:
    """A rerun that finds training finished (by a run killed before it wrote its rows) writes the train-* part,
    with the speed from the run's log."""
    from pfbench.results import read_results
    from pfbench.suite.parse import load_suite
    from pfbench.suite.runner import Runner

    suite = tmp_path / "one.yaml"
    suite.write_text(TRAIN2.replace("steps: 200", "steps: 10").replace("name: two", "name: one")
                     .replace("learning_curve: false}", "learning_curve: false, parallel_train: false}"))
    spec = load_suite(suite)
    roots = {"results_root": tmp_path / "results", "runs_root": tmp_path / "runs", "progress": False}
    Runner(spec, **roots).train_all()  # the earlier run: trained, then killed before any result part
    rerun = Runner(spec, **roots)
    speeds = rerun.train_all()
    for name in ("pf", "sit"):
        log = next((tmp_path / "runs" / "one").glob(f"{name}-*/log.jsonl")).read_text().splitlines()
        last = json.loads(log[-1])
        assert speeds[name] == pytest.approx(10 * 16 / last["wall_s"])
        rerun.units.model(rerun.load_model(name, spec.models[name]))
    rows = read_results(tmp_path / "results" / "one").query("metric == 'train_img_per_s'")
    assert sorted(rows["model"]) == ["pf", "sit"] and (rows["value"] > 0).all()


def test_run_workers_runs_at_most_max_parallel_at_once(tmp_path: Path) -> None:
    """Twenty models on two cores must not start twenty processes (memory): the next starts when one ends.

    Each call marks that it started and then waits until the test releases it, so the check does not depend on
    how fast processes start: the test releases one call only once two run, and a third must never start.
    """
    from pfbench.suite.workers import run_workers

    wait_for_release = "touch start-$0; while [ ! -e go-$0 ]; do sleep 0.05; done"
    running_seen: list[int] = []

    def tick(workers: dict) -> None:
        started = {p.name.removeprefix("start-") for p in tmp_path.glob("start-*")}
        released = {p.name.removeprefix("go-") for p in tmp_path.glob("go-*")}
        running = sorted(started - released)
        running_seen.append(len(running))
        assert len(running) <= 2, running
        if running and (len(running) == 2 or len(started) == 5):
            (tmp_path / f"go-{running[0]}").touch()

    calls = {f"w{i}": (subprocess.run, (["sh", "-c", wait_for_release, str(i)],)) for i in range(5)}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        out = run_workers(calls, tick, max_parallel=2)
    assert sorted(out) == sorted(calls) and all(v.returncode == 0 for v in out.values())
    assert max(running_seen) == 2, running_seen  # two ran together, never three
