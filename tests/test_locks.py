"""Per-unit locks record their holder and heartbeat; a holder that stops heart-beating (SIGSTOP, a hung node) is
taken over, and it discards its result when it resumes; `pfbench plan` shows who holds what."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import pytest

from pfbench import locks
from pfbench.locks import StalePolicy, held_locks, holder_of, lock_path, try_lock
from pfbench.results import read_results

TinySuite = Callable[..., Path]  # conftest's shipped_suite: writes a suite YAML, returns its path


def test_a_lock_records_its_holder_and_heart_beats_while_held(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(locks, "HEARTBEAT_S", 0.05)
    path = lock_path(tmp_path, "cell-x")
    with try_lock(path) as lock:
        assert lock is not None
        first = holder_of(path)
        assert first is not None and (first.host, first.pid) == (socket.gethostname(), os.getpid())
        time.sleep(0.5)
        later = holder_of(path)
        assert later is not None and later.heartbeat > first.heartbeat and later.started == first.started
        assert held_locks(tmp_path) == [("cell-x", later)]
        with try_lock(path) as other:
            assert other is None  # a live holder is never taken over
    assert holder_of(path) is None and held_locks(tmp_path) == [] and not path.exists()


def test_a_stale_holder_is_taken_over_and_knows_it_lost(tmp_path: Path) -> None:
    path = lock_path(tmp_path, "cell-x")
    told: list[str] = []
    with ExitStack() as old_scope:
        old = old_scope.enter_context(try_lock(path))
        assert old is not None and not old.lost()
        # Any heartbeat is stale after 0 s: the recorded one, trusted at once (--steal-stale).
        with try_lock(path, StalePolicy(after_s=0.0, steal=True), on_take_over=told.append) as new:
            assert new is not None and old.lost() and not new.lost()
            assert told and f"{socket.gethostname()}:{os.getpid()} since" in told[0] and "[stale]" in told[0]
            old_scope.close()  # the old holder lets go: it must not remove the new holder's lock file
            assert path.exists() and not new.lost()
            with try_lock(path) as third:
                assert third is None  # the new holder's lock holds
    assert not path.exists()


HOLDER = """
import sys, time
from pathlib import Path
from pfbench.locks import hold_lock
with hold_lock(Path(sys.argv[1])):
    print('held', flush=True)
    time.sleep(900)
"""


def _holder(path: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_stopped_holder_is_taken_over_once_seen_silent_for_the_timeout(tmp_path: Path) -> None:
    path = lock_path(tmp_path, "cell-x")
    holder = _holder(path)
    try:
        with try_lock(path, StalePolicy(after_s=60.0)) as lock:
            assert lock is None  # a live process that heart-beats
        holder.send_signal(signal.SIGSTOP)
        watch = StalePolicy(after_s=1.0)  # this runner's own clock: the record must stay unchanged for 1 s
        with try_lock(path, watch) as lock:
            assert lock is None  # first seen now
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with try_lock(path, watch) as lock:
                if lock is not None:
                    assert (holder_of(path) or lock.holder).pid == os.getpid()
                    break
            time.sleep(0.2)
        else:
            raise AssertionError("the stopped holder was never taken over")
    finally:
        holder.kill()
        holder.wait()


def _cli(tmp: Path, log: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PFBENCH_CACHE": str(tmp / "cache"), "PYTHONUNBUFFERED": "1",
           "COLUMNS": "200"}
    with open(tmp / log, "w") as fh:
        return subprocess.Popen([sys.executable, "-m", "pfbench.cli", *args, "--results", str(tmp / "results")],
                                stdout=fh, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp)


def _run(tmp: Path, log: str, *args: str) -> subprocess.Popen[str]:
    return _cli(tmp, log, "run", str(tmp / "shipped.yaml"), "--reports", str(tmp / "reports"), "--threads", "1",
                *args)


def _done(proc: subprocess.Popen[str], log: Path) -> str:
    proc.wait(timeout=900)
    assert proc.returncode == 0, log.read_text()[-3000:]
    return log.read_text()


@pytest.mark.slow
def test_a_stopped_runner_is_shown_by_plan_and_taken_over_by_steal_stale(tmp_path: Path,
                                                                         shipped_suite: TinySuite) -> None:
    shipped_suite(sweep={"nfe": [2, 4], "seeds": [0], "num_samples": 600})  # tmp_path/shipped.yaml
    results = tmp_path / "results" / "shipped"
    old = _run(tmp_path, "old.out")
    try:
        # Stop the old runner while it holds a cell's lock (it prints "cell i/N" as it starts computing one).
        deadline, held = time.time() + 600, []
        while not held:
            assert time.time() < deadline and old.poll() is None, (tmp_path / "old.out").read_text()[-3000:]
            if "cell " in (tmp_path / "old.out").read_text():
                old.send_signal(signal.SIGSTOP)
                held = [u for u, h in held_locks(results) if h.pid == old.pid and not (results / f"{u}.parquet").exists()]
                if not held:  # caught between two cells: let it go on to the next one
                    old.send_signal(signal.SIGCONT)
            time.sleep(0.05)
        unit = held[0]
        time.sleep(3.0)  # its last heartbeat is now more than 2 s old
        plan = _cli(tmp_path, "plan.out", "plan", str(tmp_path / "shipped.yaml"), "--stale-after", "2")
        shown = _done(plan, tmp_path / "plan.out")
        line = next((ln for ln in shown.splitlines() if unit in ln and "held by" in ln), "")
        assert f"held by {socket.gethostname()}:{old.pid} since" in line and line.endswith("[stale]"), shown[-3000:]
        new = _run(tmp_path, "new.out", "--steal-stale", "--stale-after", "2")
        out = _done(new, tmp_path / "new.out")
        assert f"taking over {unit} from {socket.gethostname()}:{old.pid}" in out, out[-3000:]
        written = (results / f"{unit}.parquet").stat().st_mtime_ns
        before = read_results(results)
        old.send_signal(signal.SIGCONT)  # it resumes, finishes its cell, finds the lock lost and drops its result
        out = _done(old, tmp_path / "old.out")
        assert f"lost the lock of {unit} (taken over while this process was stopped" in " ".join(out.split()), out[-3000:]
        assert (results / f"{unit}.parquet").stat().st_mtime_ns == written
        after = read_results(results)
        assert len(after) == len(before) and not after.query("kind == 'cell'").duplicated(["part", "metric"]).any()
        assert len(list(results.glob("cell-*.parquet"))) == 4
    finally:
        if old.poll() is None:
            old.send_signal(signal.SIGCONT)
            old.kill()
            old.wait()
