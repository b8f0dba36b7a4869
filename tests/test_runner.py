"""End-to-end runner: a tiny suite runs, writes Parquet + figures, resumes after SIGKILL without recomputing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pfbench.results import read_results

TinySuite = Callable[..., Path]  # conftest's tiny_suite: writes a tiny suite YAML, returns its path
# conftest's tiny suite with a SiT baseline: SiT (euler) and PF (euler_pf, dual_loop n_inner 2) at NFE 2 and 4
TINY = dict(models=("pf", "sit"), grid=("sit", "pf"),
            eval={"batch_size": 40, "curve_nfe": 2, "curve_samples": 20, "parallel_train": False})


def pfbench(tmp: Path, *args: str, **kw: object) -> subprocess.Popen[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PFBENCH_CACHE": str(tmp / "cache")}
    return subprocess.Popen(
        [sys.executable, "-m", "pfbench.cli", *args, "--results", str(tmp / "results"), "--reports",
         str(tmp / "reports"), "--runs", str(tmp / "runs"), "--quiet", "--threads", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp, **kw,  # type: ignore[call-overload]
    )


@pytest.mark.slow
def test_tiny_suite_runs_and_resumes_after_sigkill(tmp_path: Path, tiny_suite: TinySuite) -> None:
    suite = tiny_suite(**TINY)
    out = tmp_path / "results" / "tiny"
    # First run: kill it with SIGKILL as soon as the first cell file lands.
    proc = pfbench(tmp_path, "run", str(suite))
    deadline = time.time() + 240
    while time.time() < deadline and not list(out.glob("cell-*.parquet")) and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()[1][-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = {p.name: p.stat().st_mtime_ns for p in out.glob("cell-*.parquet")}
    assert first, "no cell finished before the kill"
    # SIGKILL can land mid-write: only a hidden temp file (pfbench.io.atomic_path) may remain, never a partial result.
    assert all(p.name.startswith(".") and ".tmp-" in p.name for p in out.iterdir()
               if not (p.name.endswith(".parquet") and not p.name.startswith(".")) and p.name != ".locks")
    read_results(out)  # every visible file is a complete Parquet file
    (out / ".cell-planted.tmp-99999.parquet").write_bytes(b"half a file")  # as a kill mid-write leaves one
    # Resume: finishes the rest, keeps finished cells untouched.
    proc = pfbench(tmp_path, "run", str(suite))
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    cells = sorted(out.glob("cell-*.parquet"))
    assert not list(out.glob(".*.tmp-*")), "the resumed run did not clear stale temp files"
    assert len(cells) == 6  # sit: euler x 2 NFE; pf: (euler_pf, dual_loop) x 2 NFE
    for name, mtime in first.items():
        assert (out / name).stat().st_mtime_ns == mtime, f"{name} was recomputed"
    df = read_results(out)
    c = df[df["kind"] == "cell"]
    assert not c.duplicated(["part", "metric"]).any()
    assert set(c["metric"]) == {"fd_embedded", "class_acc"}
    assert (c["nfe_used"] <= c["nfe_budget"]).all()
    dl = c[c["sampler"] == "dual_loop"]
    assert set(dl["nfe_used"]) == {2, 4}  # n_inner=2: N=1 and N=2 outer steps
    assert (c["gflops"] > 0).all() and (c["wall_s"] > 0).all()
    assert set(df[df["kind"] == "curve"]["train_step"]) == {6, 12}
    diag = df[(df["kind"] == "diagnostic") & (df["metric"] == "difficulty_hard_easy_ratio")]
    assert len(diag) == 1 and diag["value"].iloc[0] > 0
    assert (tmp_path / "reports" / "tiny" / "samples.png").is_file()
    assert (tmp_path / "reports" / "tiny" / "difficulty_pf.png").is_file()
    # A third run computes nothing new.
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.parquet")}
    proc = pfbench(tmp_path, "run", str(suite))
    proc.communicate(timeout=300)
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.parquet")} == before


@pytest.mark.parametrize(
    "text,needle",
    [
        ("name: x\nmodels: {}\ngrid: []\nsweep: {nfe: [1]}\nmetrix: [a]\n", "unknown key 'metrix'"),
        ("name: [\n", "malformed YAML"),
        ({**TINY, "grid": ({"models": ["sit"], "samplers": ["eulerr"]}, "pf")}, "did you mean 'euler'"),
    ],
)
def test_bad_suite_exits_nonzero_with_one_line(tmp_path: Path, text: str | dict[str, Any], needle: str,
                                               tiny_suite: TinySuite) -> None:
    if isinstance(text, str):
        suite = tmp_path / "bad.yaml"
        suite.write_text(text)
    else:
        suite = tiny_suite("bad.yaml", **text)
    proc = pfbench(tmp_path, "run", str(suite))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "results").exists()


def test_missing_checkpoint_is_one_line_error(tmp_path: Path) -> None:
    suite = tmp_path / "ck.yaml"
    suite.write_text(
        "name: ck\nmodels: {m: {checkpoint: nowhere/last.pt}}\ngrid: [{models: [m], samplers: [euler]}]\n"
    )
    proc = pfbench(tmp_path, "run", str(suite))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "nowhere/last.pt" in err and "not found" in err


@pytest.mark.parametrize(
    "text,runs_is_a_file,needle",
    [
        ({**TINY, "grid": ("sit", {"models": ["pf"], "samplers": ["euler_pf", {"name": "dual_loop", "params": {
            "n_inner": 2, "p": 1.5}}]})}, False, "error: grid[1].samplers[1].params.p = 1.5: must be in [0, 1]"),
        ({**TINY, "models": ("ck", "pf", "sit"), "checkpoints": {"ck": "nowhere/last.pt"},
          "grid": ({"models": ["sit", "ck"], "samplers": ["euler"]}, "pf")}, False,
         "error: 1 input missing or wrong: models.ck.checkpoint: nowhere/last.pt not found"),
        (TINY, True, "error: cannot write to {runs}/tiny: Not a directory"),
    ],
)
def test_a_suite_that_trains_fails_before_training(tmp_path: Path, text: dict[str, Any], runs_is_a_file: bool,
                                                   needle: str, tiny_suite: TinySuite) -> None:
    """A bad value, a missing checkpoint or an unwritable runs folder stops `run` before its models train."""
    suite = tiny_suite(**text)
    if runs_is_a_file:
        (tmp_path / "runs").write_text("")
    proc = pfbench(tmp_path, "run", str(suite))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err[-2000:]
    assert runs_is_a_file or not (tmp_path / "runs").exists(), err  # nothing trained, not even a run folder begun
    assert not list(tmp_path.rglob("*.parquet")) and not list(tmp_path.rglob("*.pt"))
    assert needle.replace("{runs}", str(tmp_path / "runs")) in err and len(err.strip().splitlines()) == 1, err


SHIPPED = """
name: shipped
data: {name: embedded, resolution: 16, seed: 0, test_size: 300}
models:
  pf: {checkpoint: "asset:embedded_pf_r16.pt"}
grid:
  - {models: [pf], samplers: [euler_pf, look_ahead]}
sweep: {nfe: [2, 4], seeds: [0, 1], num_samples: 100}
metrics: [class_acc]
eval: {batch_size: 100, learning_curve: false}
"""


def test_an_optional_model_without_files_is_skipped_and_the_report_says_so(tmp_path: Path) -> None:
    suite = tmp_path / "opt.yaml"
    suite.write_text(SHIPPED.replace("models:\n", "models:\n  sit: {checkpoint: nowhere/sit.pt, optional: true}\n", 1)
                     .replace("{models: [pf], samplers: [euler_pf, look_ahead]}",
                              "{models: [pf, sit], samplers: [euler_pf]}")
                     .replace("nfe: [2, 4], seeds: [0, 1], num_samples: 100", "nfe: [2], seeds: [0], num_samples: 20")
                     .replace("batch_size: 100", "batch_size: 20"))
    proc = pfbench(tmp_path, "run", str(suite))
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-2000:]
    cells = read_results(tmp_path / "results" / "shipped")
    assert set(cells[cells["kind"] == "cell"]["model"]) == {"pf"}
    report = (tmp_path / "reports" / "shipped" / "index.md").read_text()
    assert "## Skipped cells" in report and "| sit | 1 | skipped: missing nowhere/sit.pt (no download: train it" in report


def test_a_wrong_inception_file_stops_run_before_any_cell(tmp_path: Path) -> None:
    bad = tmp_path / "inception.pth"
    bad.write_bytes(b"a random network, not torch-fidelity's")
    suite = tmp_path / "fid.yaml"
    suite.write_text(SHIPPED.replace("metrics: [class_acc]", "metrics: [class_acc, fid]")
                     .replace("learning_curve: false", f"learning_curve: false, weights: {bad}"))
    proc = pfbench(tmp_path, "run", str(suite))
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1 and "has the wrong sha256" in err and "eval.verify_weights: false" in err, err[-2000:]
    assert not list(tmp_path.rglob("*.parquet")) and not list(tmp_path.rglob("shard*"))
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").rglob("*"))


def sigint_default() -> None:
    """Child start-up: Ctrl-C tests need SIGINT's default handling even when the test run itself was started in
    the background by a non-interactive shell (which starts it with SIGINT ignored, inherited by children)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(tmp: Path, suite: Path, log: str, command: str = "run") -> subprocess.Popen[str]:
    """``pfbench <command> suite`` with progress lines on (``cell i/N`` is printed for each cell it computes);
    stdout goes to ``tmp/<log>`` so a test can poll it while the process runs."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PFBENCH_CACHE": str(tmp / "cache"), "PYTHONUNBUFFERED": "1",
           "COLUMNS": "200"}
    extra = ["--reports", str(tmp / "reports"), "--threads", "1"] if command == "run" else []
    with open(tmp / log, "w") as fh:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "pfbench.cli", command, str(suite), "--results", str(tmp / "results"),
             "--runs", str(tmp / "runs"), *extra],
            stdout=fh, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp, preexec_fn=sigint_default,
        )


def _computed(text: str) -> set[int]:
    """Indices i of the ``cell i/N`` lines: the cells this process computed."""
    return {int(line.split()[1].split("/")[0]) for line in text.splitlines() if line.startswith("cell ")}


def _wait_for(path: Path, needle: str, proc: subprocess.Popen[str], timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if needle in path.read_text():
            return
        time.sleep(0.2)
    raise AssertionError(f"{needle!r} never appeared (rc {proc.poll()}): {path.read_text()[-2000:]}")


def _values(folder: Path) -> dict[str, list[float]]:
    df = read_results(folder)
    c = df[df["kind"] == "cell"].sort_values(["part", "metric"])
    return {str(p): list(g["value"]) for p, g in c.groupby("part")}


@pytest.mark.slow
def test_two_runners_on_one_folder_split_the_cells_and_damage_is_recomputed(tmp_path: Path) -> None:
    suite = tmp_path / "shipped.yaml"
    suite.write_text(SHIPPED)
    out = tmp_path / "results" / "shipped"
    procs = [_start(tmp_path, suite, f"run{k}.out") for k in (1, 2)]  # two terminals / two cluster jobs
    errs = [p.communicate(timeout=900)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e[-2000:] for e in errs]
    done = [_computed((tmp_path / f"run{k}.out").read_text()) for k in (1, 2)]
    assert not done[0] & done[1], done  # no cell computed twice ...
    assert done[0] | done[1] == set(range(1, 9)), done  # ... and none left out
    parts = sorted(out.glob("cell-*.parquet"))
    assert len(parts) == 8 and not list(out.glob("*.lock"))  # lock files live in the hidden .locks folder
    c = read_results(out).query("kind == 'cell'")
    assert not c.duplicated(["part", "metric"]).any()
    before = _values(out)
    # Damage: 0 bytes, junk, and a plain deletion. plan and report warn; run moves aside and recomputes.
    parts[0].write_bytes(b"")
    parts[1].write_bytes(b"not parquet")
    parts[2].unlink()
    plan = _start(tmp_path, suite, "plan.out", "plan")
    _, err = plan.communicate(timeout=300)
    assert plan.returncode == 0, err
    assert err.count("is damaged") == 2 and parts[0].name in err and parts[1].name in err, err
    assert sum("│ yes " in line for line in (tmp_path / "plan.out").read_text().splitlines()) == 5  # "cached"
    assert parts[0].is_file() and parts[1].is_file()  # plan writes nothing
    rerun = _start(tmp_path, suite, "run3.out")
    _, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err[-2000:]
    assert err.count("moved to") == 2 and "Traceback" not in err, err
    assert len(_computed((tmp_path / "run3.out").read_text())) == 3
    assert (out / f"{parts[0].name}.corrupt").read_bytes() == b""
    assert (out / f"{parts[1].name}.corrupt").read_bytes() == b"not parquet"
    assert _values(out) == before  # recomputed by one runner: the same numbers as the two runners wrote


@pytest.mark.slow
def test_a_locked_cell_waits_for_its_holder_and_is_taken_over_when_it_dies(tmp_path: Path) -> None:
    from pfbench.locks import lock_path
    from pfbench.suite.parse import load_suite
    from pfbench.suite.runner import Runner
    from pfbench.suite.spec import plan

    suite = tmp_path / "shipped.yaml"
    suite.write_text(SHIPPED.replace("seeds: [0, 1]", "seeds: [0]"))
    spec = load_suite(suite)
    runner = Runner(spec, results_root=tmp_path / "results")
    cells = plan(spec)
    held = runner.cell_part(cells[0], runner.known_model_id(cells[0].model) or "")
    # Another "runner" holds cell 1: a process that takes the lock and sleeps.
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom pathlib import Path\nfrom pfbench.locks import hold_lock\n"
         "with hold_lock(Path(sys.argv[1])):\n    print('held', flush=True)\n    time.sleep(900)\n",
         str(lock_path(runner.results, held))], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        first = _start(tmp_path, suite, "run1.out")
        _wait_for(tmp_path / "run1.out", "being computed by another runner", first)
        assert _computed((tmp_path / "run1.out").read_text()) == {2, 3, 4}
        assert not (runner.results / f"{held}.parquet").exists()
        first.send_signal(signal.SIGINT)  # Ctrl-C while it waits: one line saying what is kept
        _, err = first.communicate(timeout=120)
        assert first.returncode == 130, err[-2000:]
        assert err.strip().splitlines()[-1] == (f"interrupted: 3 of 4 cells are saved in {runner.results}; rerun "
                                                "the same command to resume"), err[-2000:]
        second = _start(tmp_path, suite, "run2.out")
        _wait_for(tmp_path / "run2.out", "being computed by another runner", second)
        holder.kill()  # the holder dies: the kernel drops its lock and the waiting runner takes the cell over
        holder.wait()
        _, err = second.communicate(timeout=600)
        assert second.returncode == 0, err[-2000:]
        assert _computed((tmp_path / "run2.out").read_text()) == {1}
        assert (runner.results / f"{held}.parquet").is_file()
    finally:
        if holder.poll() is None:
            holder.kill()
