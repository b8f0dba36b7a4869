"""Cluster sweeps through submitit (``pfbench.suite.launch``, ``pfbench.suite.jobs``).

The local executor runs real jobs (subprocesses, 2 tasks per cell job over gloo); one is pre-empted mid-cell and
requeued by submitit, one is killed and resubmitted by the next ``pfbench run``; the results equal a plain local
run's bit for bit. The Slurm executor runs against stand-in ``sbatch``/``sacct``/``srun`` commands: the sbatch
scripts submitit generates are checked, and a second pass submits only the failed cell.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from pfbench import PfbenchError
from pfbench.results import read_results
from pfbench.suite.parse import load_suite

TinySuite = Callable[..., Path]  # conftest's tiny_suite: writes a tiny suite YAML, returns its path
# conftest's tiny suite: PF trained 12 steps, euler_pf and dual_loop (n_inner 2) at NFE 2 and 4, 40 samples
TINY4 = dict(name="tiny4", eval={"batch_size": 10, "learning_curve": False, "parallel_train": False})
# Cell jobs: 2 tasks (gloo), shards of 10 samples (2 per task); training: 1 task, as the local run trains.
JOBS = ["launcher.name=submitit", "launcher.executor=local", "launcher.gpus_per_node=0", "launcher.tasks_per_node=2",
        "launcher.train_tasks_per_node=1", "launcher.shard_size=10", "launcher.keep_shards=true",
        "launcher.timeout_min=30"]
TIMING = {"train_img_per_s", "train_wall_s"}  # measured seconds: the only values that may differ


def pfbench(tmp: Path, root: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """``pfbench`` in a subprocess; output to files (local-executor jobs inherit, and outlive, its stdout)."""
    log = tmp / f"{root}-{time.monotonic_ns()}.log"
    out = log.open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pfbench.cli", *args, "--results", str(tmp / root / "results"), "--reports",
         str(tmp / root / "reports"), "--runs", str(tmp / root / "runs"), "--quiet", "--threads", "1"],
        stdout=out, stderr=subprocess.STDOUT, text=True, cwd=tmp,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "PFBENCH_CACHE": str(tmp / "cache"), **(env or {})})
    proc.log = log  # type: ignore[attr-defined]
    return proc


def finish(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.wait(timeout=timeout) == 0, proc.log.read_text()[-3000:]  # type: ignore[attr-defined]
    return proc.log.read_text()  # type: ignore[attr-defined]


def tasks(controller: int) -> list[int]:
    """The task processes submitit's local controller ``controller`` started."""
    path = Path(f"/proc/{controller}/task/{controller}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def wait_until(what: str, check: object, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while not check():  # type: ignore[operator]
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def rows(folder: Path) -> list[dict[str, object]]:
    """Every result row but the timing columns and measured-seconds metrics, sorted."""
    df = read_results(folder)
    df = df[~df["metric"].isin(TIMING)].drop(columns=["wall_s", "train_wall_s"])
    recs = df.astype(object).where(df.notna(), None).to_dict("records")
    return sorted(recs, key=lambda r: (str(r["part"]), str(r["metric"])))


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds job processes through /proc")
def test_local_executor_jobs_survive_preemption_and_a_kill_and_match_a_local_run(tmp_path: Path,
                                                                                 tiny_suite: TinySuite) -> None:
    suite = tiny_suite("tiny4.yaml", **TINY4)
    finish(pfbench(tmp_path, "plain", "run", str(suite)), 300)
    # Jobs: each new shard takes >= 1.5 s, so they can be interrupted mid-cell.
    pause = {"PFBENCH_SHARD_PAUSE_S": "1.5"}
    out = finish(pfbench(tmp_path, "jobs", "run", str(suite), *JOBS, env=pause), 600)
    assert "5 submitted now" in out  # 1 training + 4 cells
    results = tmp_path / "jobs" / "results" / "tiny4"
    reg = json.loads((results / ".jobs.json").read_text())
    cells = {e["label"]: e for e in reg.values() if e["kind"] == "cell"}
    assert len(cells) == 4
    folder = Path(next(iter(cells.values()))["job"]["folder"])
    a = cells["pf euler_pf nfe=2 cfg=1 seed=0"]["job"]["job_id"]
    b = cells["pf dual_loop nfe=4 cfg=1 seed=0"]["job"]["job_id"]

    def log(job: str) -> str:
        path = folder / f"{job}_0_log.out"
        return path.read_text() if path.is_file() else ""

    # Pre-empt job A after its first shard: submitit checkpoints it (rank 0) and the controller requeues it.
    wait_until("job A's first shard", lambda: "shard 1/4 sampled" in log(a))
    shard_dir = Path(log(a).split("-> ")[1].split()[0])
    kept = {p.name: p.stat().st_mtime_ns for p in shard_dir.glob("shard_*.npz")}
    for pid in tasks(int(a)):
        os.kill(pid, signal.SIGUSR2)  # as Slurm signals every task of a pre-empted job
    # Kill job B's tasks mid-cell (a node failure): nothing requeues it; the next `pfbench run` resubmits it.
    wait_until("job B's first shard", lambda: "shard 1/4 sampled" in log(b))
    for pid in tasks(int(b)):
        os.kill(pid, signal.SIGKILL)
    wait_until("job B's end", lambda: not tasks(int(b)), 120)
    out = finish(pfbench(tmp_path, "jobs", "run", str(suite), *JOBS, "--wait", env=pause), 600)
    assert "INTERRUPTED" in out and "1 submitted now" in out, out
    reg2 = json.loads((results / ".jobs.json").read_text())
    again = {e["label"]: e for e in reg2.values() if e["kind"] == "cell"}
    assert again["pf euler_pf nfe=2 cfg=1 seed=0"]["job"]["job_id"] == a  # requeued in place, not resubmitted
    assert again["pf dual_loop nfe=4 cfg=1 seed=0"]["job"]["job_id"] != b
    assert again["pf dual_loop nfe=4 cfg=1 seed=0"]["attempts"] == 2
    assert sum(e["attempts"] for e in again.values()) == 5  # no other cell was submitted twice
    assert "Requeued job" in log(a) and "kept from an earlier attempt" in log(a)
    for name, mtime in kept.items():  # A's shards from before the pre-emption were kept, not redone
        assert (shard_dir / name).stat().st_mtime_ns == mtime
    resubmitted = again["pf dual_loop nfe=4 cfg=1 seed=0"]["job"]["job_id"]
    assert "kept from an earlier attempt" in log(resubmitted) + (folder / f"{resubmitted}_1_log.out").read_text()
    assert (tmp_path / "jobs" / "reports" / "tiny4" / "index.md").is_file()
    # Bit for bit the plain run's rows (metric values, model ids, NFE, FLOPs), timing aside.
    assert rows(results) == rows(tmp_path / "plain" / "results" / "tiny4")


FAKE_SBATCH = """#!/bin/sh
n=$(cat "$FAKE/count" 2>/dev/null || echo 1000); n=$((n+1)); echo $n > "$FAKE/count"
cp "$1" "$FAKE/sbatch_$n.sh"
echo "Submitted batch job $n"
"""
FAKE_SACCT = """#!/bin/sh
echo "JobID|State|NodeList"; cat "$FAKE/sacct.txt" 2>/dev/null; exit 0
"""
SLURM = {**TINY4, "models": ("pf", "ck"), "checkpoints": {"ck": "asset:embedded_pf_r16.pt"}, "grid": ("ck", "pf")}
SLURM_OVERRIDES = [
    "launcher.name=submitit", "launcher.executor=slurm", "launcher.partition=gpu", "launcher.account=acc",
    "launcher.nodes=2", "launcher.gpus_per_node=8", "launcher.timeout_min=720", "launcher.train_timeout_min=2880",
    "launcher.array_parallelism=16", "+launcher.slurm_additional_parameters={mail-type: END}",
    "launcher.setup=[module load cuda/12.4]",
]


def test_slurm_executor_writes_sbatch_scripts_and_never_submits_a_unit_twice(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch,
                                                                             tiny_suite: TinySuite) -> None:
    from pfbench.suite.launch import Launcher
    from pfbench.suite.runner import Runner

    fake = tmp_path / "fake"
    fake.mkdir()
    for name, text in (("sbatch", FAKE_SBATCH), ("sacct", FAKE_SACCT), ("srun", "#!/bin/sh\nexit 0\n")):
        (fake / name).write_text(text)
        (fake / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE", str(fake))
    suite = tiny_suite("slurm.yaml", **SLURM)
    spec = load_suite(suite, SLURM_OVERRIDES)
    runner = Runner(spec, tmp_path / "results", tmp_path / "reports", tmp_path / "runs", progress=False)
    launcher = Launcher(runner, threads=None)
    step = launcher.step()
    assert len(step.submitted) == 7  # training of pf, 2 cells of ck, 4 of pf (after its training)
    train, ck_cells, pf_cells = (fake / f"sbatch_{n}.sh" for n in (1001, 1002, 1003))
    assert not (fake / "sbatch_1004.sh").exists()
    script = train.read_text()
    for line in ("#SBATCH --job-name=pfbench-tiny4-train", "#SBATCH --time=2880", "#SBATCH --nodes=2",
                 "#SBATCH --ntasks-per-node=8", "#SBATCH --gpus-per-node=8", "#SBATCH --partition=gpu",
                 "#SBATCH --account=acc", "#SBATCH --mail-type=END", "#SBATCH --signal=USR2@90",
                 "module load cuda/12.4", "export SUBMITIT_EXECUTOR=slurm"):
        assert line in script.splitlines(), (line, script)
    assert "srun --unbuffered" in script and "-m submitit.core._submit" in script and "--array" not in script
    cells = pf_cells.read_text()
    assert "#SBATCH --array=0-3%4" in cells and "#SBATCH --dependency=afterok:1001" in cells
    assert "#SBATCH --time=720" in cells and "#SBATCH --job-name=pfbench-tiny4-cell" in cells
    assert "#SBATCH --array=0-1%2" in ck_cells.read_text() and "dependency" not in ck_cells.read_text()
    reg = launcher.load()
    assert sorted(e.job.job_id for e in reg.values()) == ["1001", "1002_0", "1002_1", "1003_0", "1003_1",
                                                          "1003_2", "1003_3"]
    # Jobs in flight are shown and left alone; only the failed one is submitted again (alone, not as an array).
    states = {"1001": "RUNNING", "1002_0": "RUNNING", "1002_1": "FAILED", "1003_0": "PENDING",
              "1003_1": "PENDING", "1003_2": "PENDING", "1003_3": "PENDING"}
    (fake / "sacct.txt").write_text("".join(f"{j}|{s}|node1\n" for j, s in states.items()))
    step = launcher.step()
    assert len(step.submitted) == 1 and (fake / "sbatch_1004.sh").exists() and not (fake / "sbatch_1005.sh").exists()
    again = (fake / "sbatch_1004.sh").read_text()
    assert "--array" not in again and "dependency" not in again
    assert {r[3] for r in step.rows} >= {"RUNNING", "PENDING", "FAILED", "submitted"}
    assert sorted(e.job.job_id for e in launcher.load().values())[-1] == "1004"
    (fake / "sacct.txt").write_text("".join(f"{j}|{s}|node1\n" for j, s in {**states, "1004": "RUNNING"}.items()))
    assert launcher.step().submitted == [] and not (fake / "sbatch_1005.sh").exists()


def test_launcher_from_the_command_line_and_bad_values(tiny_suite: TinySuite) -> None:
    suite = tiny_suite("s.yaml", **TINY4)
    spec = load_suite(suite, ["launcher.name=submitit", "launcher.partition=gpu", "launcher.gpus_per_node=4"])
    assert (spec.launcher.name, spec.launcher.partition, spec.launcher.gpus_per_node) == ("submitit", "gpu", 4)
    assert load_suite(suite).launcher.name == "local"
    from pfbench.suite.validate import validate

    for override, needle in (("launcher.executor=pbs", "launcher.executor = 'pbs': must be one of slurm, local"),
                             ("launcher.shard_size=0", "launcher.shard_size = 0: must be >= 1")):
        with pytest.raises(PfbenchError, match=needle):
            validate(load_suite(suite, [override]))
    with pytest.raises(PfbenchError, match="unknown key 'launcher.partiton'"):
        load_suite(suite, ["launcher.partiton=gpu"])


T2I = """
name: t2i_jobs
data: {name: embedded, resolution: 16, seed: 0, test_size: 12}
models:
  t: {checkpoint: CKPT}
grid:
  - {models: [t], samplers: [euler_pf]}
sweep: {nfe: [2], seeds: [3], num_samples: 10, cfg_scale: [2.0]}
metrics: [class_acc]
eval: {batch_size: 4, learning_curve: false}
launcher: {name: submitit, executor: local}
"""


def test_a_text_to_image_cell_through_the_sharded_path_matches_the_plain_path(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A cluster cell job's shards (``CellJob.sample`` -> ``write_shards_distributed``) of a text-to-image model carry
    the suite's prompts: the same images, labels and prompts as the local runner's ``generate``."""
    from _text_stub import install_stub, t2i_checkpoint  # pytest puts tests/ on sys.path

    from pfbench.sample.shards import read_manifest
    from pfbench.suite.jobs import SHARDS, CellJob, Roots
    from pfbench.suite.launch import Launcher
    from pfbench.suite.prompts import suite_prompts
    from pfbench.suite.runner import Runner
    from pfbench.suite.spec import plan

    install_stub(monkeypatch)
    path = tmp_path / "t2i.yaml"
    path.write_text(T2I.replace("CKPT", str(t2i_checkpoint(tmp_path / "t2i.pt"))))
    spec = load_suite(path)
    runner = Runner(spec, tmp_path / "results", tmp_path / "reports", tmp_path / "runs", progress=False)
    Launcher(runner)  # text-to-image models are no longer refused
    lm = runner.load_model("t", spec.models["t"])
    (cell,) = plan(spec)
    plain = runner.generate(lm, runner.make_sampler(cell), cell.num_samples, cell.seed, cell.cfg_scale)
    part = runner.cell_part(cell, lm.key_id)
    roots = Roots(str(tmp_path / "results"), str(tmp_path / "reports"), str(tmp_path / "runs"))
    sharded = CellJob(spec, roots, None, (), cell, shard_size=4, keep_shards=True).sample(runner, lm, part, 0)
    assert sharded is not None and plain.prompts is not None and len(set(plain.prompts)) > 1
    assert sharded.prompts == plain.prompts and torch.equal(sharded.labels, plain.labels)
    assert torch.equal(sharded.images, plain.images) and sharded.nfe == plain.nfe
    manifest = read_manifest(runner.results / SHARDS / part)
    assert manifest["config"]["prompts"] == suite_prompts(spec).id() and len(manifest["shards"]) == 3
