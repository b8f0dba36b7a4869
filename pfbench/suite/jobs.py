"""What a suite's cluster jobs run (``pfbench.suite.launch`` submits them through submitit).

Three kinds of job, each a ``submitit.helpers.Checkpointable``: on pre-emption or timeout submitit pickles the job
as it is and requeues it, and the job resumes from what it has on disk, because all of its work is resumable:

- ``TrainJob`` trains one suite model (``pfbench.train.loop.train`` resumes from ``last.pt``; DDP over the job's
  tasks), then computes the model's own units (training speed and cost, learning curve, diagnostics);
- ``CellJob`` samples one cell into uint8 shards with all the job's tasks (``write_shards_distributed``, the
  ``torchrun`` path: per-sample seeds, so the images do not depend on the task count; a requeued job keeps
  every finished shard), then rank 0 scores them and writes the cell's result part atomically;
- ``FinishJob`` runs the suite as ``pfbench run`` does once every cell is computed (figures and the report).

Every unit is computed under its lock (``pfbench.locks``), as by local runners, so jobs and runners sharing a
results folder never compute one twice.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from submitit.helpers import Checkpointable

from pfbench import PfbenchError
from pfbench.locks import Lock, hold_lock, lock_path, try_lock
from pfbench.results import has_part, write_rows
from pfbench.sample.distributed import write_shards_distributed
from pfbench.sample.generate import Generated
from pfbench.sample.shards import load_shards
from pfbench.suite.runner import Runner
from pfbench.suite.spec import RunSpec, SuiteSpec
from pfbench.train.loop import train
from pfbench.train.spec import spec_from_dict

SHARDS = ".shards"  # <results>/<suite>/.shards/<part>/: a cell job's shards (hidden: result readers skip it)
PAUSE_ENV = "PFBENCH_SHARD_PAUSE_S"  # seconds a cell job sleeps after each new shard (tests interrupt it mid-cell)
# submitit / Slurm job states in which a job may still compute (a cell in such a job is never submitted again).
ACTIVE = frozenset({"PENDING", "RUNNING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "CONFIGURING", "COMPLETING",
                    "RESIZING", "SUSPENDED", "SIGNALING", "STAGE_OUT", "UNKNOWN"})


@dataclass(frozen=True)
class Roots:
    """Absolute results, reports and training-runs roots (``Runner``'s arguments): jobs may start elsewhere."""

    results: str
    reports: str
    runs: str

    def runner(self, spec: SuiteSpec) -> Runner:
        return Runner(spec, Path(self.results), Path(self.reports), Path(self.runs), progress=False)


@dataclass(frozen=True)
class JobRef:
    """A submitted job: its submitit executor (``slurm`` or ``local``), job folder and id."""

    executor: str
    folder: str
    job_id: str


def job_state(ref: JobRef) -> str:
    """The job's state in Slurm's words (PENDING, RUNNING, COMPLETED, FAILED, TIMEOUT, ...; UNKNOWN: not known yet).

    Slurm jobs: ``sacct`` through submitit's job class. Local-executor jobs (the id is the pid of submitit's
    controller process) are read from their files: a result file says COMPLETED or FAILED; without one the job is
    RUNNING while its controller lives, else INTERRUPTED (killed).
    """
    from submitit.core.utils import JobPaths

    if ref.executor == "slurm":
        from submitit import SlurmJob

        state = SlurmJob(ref.folder, ref.job_id).get_info(mode="force").get("State") or "UNKNOWN"
        return state.split()[0]  # "CANCELLED by 1234" -> CANCELLED
    result = JobPaths(ref.folder, ref.job_id).result_pickle
    if result.is_file():
        import pickle

        with result.open("rb") as f:
            outcome = pickle.load(f)[0]
        return "COMPLETED" if outcome == "success" else "FAILED"
    try:  # a zombie (exited, not reaped) has an empty command line
        alive = b"submitit" in Path(f"/proc/{int(ref.job_id)}/cmdline").read_bytes()
    except (OSError, ValueError):
        alive = False
    return "RUNNING" if alive else "INTERRUPTED"


def wait_for(refs: tuple[JobRef, ...], poll_s: float = 2.0) -> None:
    """Waits while any of ``refs`` is active (the local executor's job dependencies; Slurm has ``--dependency``)."""
    while any(job_state(r) in ACTIVE for r in refs):
        time.sleep(poll_s)


def job_ranks() -> tuple[int, int, int]:
    """(rank, world size, local rank) of this task; with several tasks, exports torch.distributed's variables
    (MASTER_ADDR, RANK, WORLD_SIZE, LOCAL_RANK, ...) from submitit's job environment, as torchrun would."""
    if "SUBMITIT_EXECUTOR" not in os.environ:
        return 0, 1, 0  # called directly (not in a job)
    from submitit import JobEnvironment
    from submitit.helpers import TorchDistributedEnvironment

    env = JobEnvironment()
    if env.num_tasks > 1:  # devices are chosen by LOCAL_RANK (cuda:N), so CUDA_VISIBLE_DEVICES is kept
        TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    return env.global_rank, env.num_tasks, env.local_rank


def on_device(spec: SuiteSpec, local_rank: int) -> SuiteSpec:
    """The suite with ``eval.device`` ``cuda`` made this task's GPU (``cuda:LOCAL_RANK``)."""
    dev = torch.device(spec.eval.device)
    if dev.type != "cuda" or dev.index is not None:
        return spec
    torch.cuda.set_device(local_rank)
    return replace(spec, eval=replace(spec.eval, device=f"cuda:{local_rank}"))


class _Job(Checkpointable):
    """Shared state of a job: the suite, the roots, torch threads and the jobs to wait for (local executor)."""

    def __init__(self, spec: SuiteSpec, roots: Roots, threads: int | None, after: tuple[JobRef, ...] = ()) -> None:
        self.spec, self.roots, self.threads, self.after = spec, roots, threads, after

    def start(self) -> tuple[int, int, Runner]:
        """Threads, ranks, dependencies: (rank, world, runner on this task's device)."""
        if self.threads:
            torch.set_num_threads(self.threads)
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # submitit's local executor cancels with SIGINT
        rank, world, local = job_ranks()
        wait_for(self.after)
        return rank, world, self.roots.runner(on_device(self.spec, local))


class TrainJob(_Job):
    """Trains suite model ``name`` (resuming its run folder), then computes its units on rank 0."""

    def __init__(self, spec: SuiteSpec, roots: Roots, threads: int | None, name: str) -> None:
        super().__init__(spec, roots, threads)
        self.name = name

    def __call__(self) -> str:
        rank, _, runner = self.start()
        mspec = runner.spec.models[self.name]
        out = runner.suite_models.train_dir(self.name, mspec)
        # Rank 0 holds the run folder's lock, as a local runner's training does (the other ranks follow it in DDP).
        held: AbstractContextManager[Any] = hold_lock(lock_path(out.parent, out.name)) if rank == 0 else nullcontext()
        with held:
            result = train(spec_from_dict(mspec.train or {}), out, resume=True, progress=False)
        if rank == 0:
            runner.suite_models.speeds[self.name] = float(result.img_per_s)
            runner.units.model(runner.load_model(self.name, mspec))
        return f"trained {self.name}: {out}"


class CellJob(_Job):
    """Samples one cell into resumable shards with every task of the job; rank 0 scores it and writes its part."""

    def __init__(self, spec: SuiteSpec, roots: Roots, threads: int | None, after: tuple[JobRef, ...], cell: RunSpec,
                 shard_size: int, keep_shards: bool) -> None:
        super().__init__(spec, roots, threads, after)
        self.cell, self.shard_size, self.keep_shards = cell, shard_size, keep_shards

    def __call__(self) -> str:
        rank, world, runner = self.start()
        name = self.cell.model
        if runner.spec.models[name].train is not None and runner.known_model_id(name) is None:
            raise PfbenchError(f"model {name} is not trained (did its training job fail? `pfbench run` resubmits it)")
        lm = runner.load_model(name, runner.spec.models[name])
        part = runner.identity.cell(self.cell, lm.identity).part()
        if world > 1 and not dist.is_initialized():
            dist.init_process_group("gloo")  # barriers and one broadcast; sampling itself needs no collectives
        try:
            lock = try_lock(lock_path(runner.results, part)) if rank == 0 else nullcontext(True)
            with lock as mine:
                todo = [bool(mine) and (rank != 0 or not has_part(runner.results, part, suite=runner.spec.name,
                                                                    damaged="move"))]
                if world > 1:
                    dist.broadcast_object_list(todo, src=0)  # rank 0 decides for the job
                if not todo[0]:
                    return f"{part}: computed by another runner"
                gen = self.sample(runner, lm, part, rank)
                if rank == 0:
                    rows = runner.run_cell(self.cell, lm, part, gen)
                    if not (isinstance(mine, Lock) and mine.lost()):  # else taken over meanwhile: the new holder's
                        write_rows(runner.results / f"{part}.parquet", rows)
                    if not self.keep_shards:
                        shutil.rmtree(runner.results / SHARDS / part, ignore_errors=True)
                if world > 1:
                    dist.barrier()  # the part is written before any rank reports success
        finally:
            if world > 1 and dist.is_initialized():
                dist.destroy_process_group()
        return f"{part}: computed"

    def sample(self, runner: Runner, lm: Any, part: str, rank: int) -> Generated | None:
        """Writes the cell's shards (this rank's share), then on rank 0 reads them all back."""
        cell, ev = self.cell, runner.spec.eval
        pause = float(os.environ.get(PAUSE_ENV, "0") or 0)
        resumed: list[int] = []

        def on_shard(j: int, count: int, done_before: bool) -> None:
            if done_before:
                resumed.append(j)
            print(f"rank {rank}: shard {j + 1}/{count} {'kept from an earlier attempt' if done_before else 'sampled'}",
                  flush=True)
            if pause and not done_before:
                time.sleep(pause)

        out = runner.results / SHARDS / part
        prompts = runner.prompts(lm)  # text-to-image: the suite's prompts, as a local run samples them
        print(f"cell {cell.model} {cell.sampler.name} {cell.axis()} seed={cell.seed} -> {out}", flush=True)
        with runner.numerics():  # bf16 autocast / compiled blocks as a local run samples (``Runner.generate``)
            manifest = write_shards_distributed(
                out, runner.guided(runner.prepared(lm).adapter(), cell.cfg_scale, cell.cfg_interval),
                runner.make_sampler(cell), n=cell.num_samples, seed=cell.seed,
                batch_size=ev.batch_size, shard_size=self.shard_size, config={"part": part}, decode=lm.decode,
                device=ev.device, on_shard=on_shard, prompts=prompts)
        if resumed:
            print(f"rank {rank}: resumed from {len(resumed)} shard(s) of an earlier attempt", flush=True)
        sys.stdout.flush()
        if rank != 0:
            return None
        images, labels = load_shards(out)
        t = manifest["totals"]
        indices = torch.arange(cell.num_samples)
        texts = None if prompts is None else prompts.take(indices)[0]  # sample i's prompt depends on i only
        return Generated(torch.from_numpy(images), torch.from_numpy(labels), indices,
                         int(t["nfe"]), float(t["forwards"]), float(t["gflops"]), float(t["seconds"]), texts)


class FinishJob(_Job):
    """``Runner.run``: with every cell computed, the model units, figures and the report of the suite."""

    def __call__(self) -> str:
        _, _, runner = self.start()
        runner.run()
        return f"report: {runner.reports / 'index.md'}"
