"""End-to-end runner: a tiny suite runs, writes Parquet + figures, resumes after SIGKILL without recomputing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pfbench.results import read_results

TINY = """
name: tiny
data: {name: embedded, resolution: 16, seed: 0, test_size: 300}
models:
  pf:
    train: &train
      kind: pf
      model: cpu-xs
      model_overrides: {depth: 1, width: 32, heads: 2}
      data: {name: embedded, resolution: 16, size: 2000, seed: 0}
      steps: 12
      batch_size: 16
      lr: 3.0e-3
      warmup: 2
      ema_decay: 0.99
      ema_warmup: true
      ckpt_every: 6
      keep_every: 6
      log_every: 6
  sit:
    train:
      <<: *train
      kind: sit
      timesteps: {name: global_uniform}
grid:
  - {models: [sit], samplers: [euler]}
  - {models: [pf], samplers: [euler_pf, {name: dual_loop, params: {n_inner: 2}}]}
sweep: {nfe: [2, 4], seeds: [0], num_samples: 40}
metrics: [fd_embedded, class_acc]
eval: {batch_size: 40, curve_nfe: 2, curve_samples: 20, parallel_train: false}
"""


def pfbench(tmp: Path, *args: str, **kw: object) -> subprocess.Popen[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PFBENCH_CACHE": str(tmp / "cache")}
    return subprocess.Popen(
        [sys.executable, "-m", "pfbench.cli", *args, "--results", str(tmp / "results"), "--reports",
         str(tmp / "reports"), "--runs", str(tmp / "runs"), "--quiet", "--threads", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp, **kw,  # type: ignore[call-overload]
    )


@pytest.mark.slow
def test_tiny_suite_runs_and_resumes_after_sigkill(tmp_path: Path) -> None:
    suite = tmp_path / "tiny.yaml"
    suite.write_text(TINY)
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
    # SIGKILL can land mid-write: only a hidden temp file may remain, never a partial result file.
    assert all(p.name.startswith(".") and p.name.endswith(".tmp") for p in out.iterdir()
               if not (p.name.endswith(".parquet") and not p.name.startswith(".")))
    read_results(out)  # every visible file is a complete Parquet file
    # Resume: finishes the rest, keeps finished cells untouched.
    proc = pfbench(tmp_path, "run", str(suite))
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    cells = sorted(out.glob("cell-*.parquet"))
    assert not list(out.glob(".*.tmp")), "the resumed run did not clear stale temp files"
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
        (TINY.replace("samplers: [euler]", "samplers: [eulerr]"), "did you mean 'euler'"),
    ],
)
def test_bad_suite_exits_nonzero_with_one_line(tmp_path: Path, text: str, needle: str) -> None:
    suite = tmp_path / "bad.yaml"
    suite.write_text(text)
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
