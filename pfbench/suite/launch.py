"""``pfbench run`` with ``launcher.name=submitit``: a suite's work as cluster jobs, through submitit.

One pass (``Launcher.step``) looks at every unit of the suite and submits what is neither computed nor in flight:
one training job per model still to train, one job per pending cell (a job array per dependency: Slurm runs the
cells of a trained model ``afterok`` its training job; the local executor's cell jobs wait for it), and, once
every cell is computed, one ``FinishJob`` for figures and the report. What it submitted is kept in a registry
(``<results>/<suite>/.jobs.json``: unit -> job id, executor, folder), written under a lock, so a second
``pfbench run`` shows the jobs' states and never submits a unit whose job may still compute (``jobs.ACTIVE``);
a failed, cancelled or killed job's unit is submitted again and resumes from what it left (shards, ``last.pt``).
Pre-empted and timed-out jobs are requeued by submitit itself (``Checkpointable``, up to ``max_requeues``
timeouts).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from pfbench import PfbenchError
from pfbench.io import atomic_write_text, content_hash
from pfbench.locks import hold_lock, lock_path
from pfbench.results import has_part
from pfbench.suite.identity import ModelIdentity
from pfbench.suite.jobs import ACTIVE, CellJob, FinishJob, JobRef, Roots, TrainJob, job_state
from pfbench.suite.runner import Runner
from pfbench.suite.spec import RunSpec, plan

REGISTRY = ".jobs.json"


@dataclass
class Entry:
    """A registry entry: the unit (``key``), what it is in words, and its latest job."""

    kind: str  # train | cell | finish
    label: str
    job: JobRef
    submitted: str
    attempts: int = 1


@dataclass
class Step:
    """What one ``Launcher.step`` found and did: table rows, active jobs, units submitted, cells done."""

    rows: list[tuple[str, str, str, str]] = field(default_factory=list)  # kind, what, job id, state
    active: list[JobRef] = field(default_factory=list)
    submitted: list[str] = field(default_factory=list)  # registry keys
    cells: int = 0
    cells_done: int = 0
    finished: bool = False  # every cell computed and the report written by a FinishJob of this cell set


class Launcher:
    """Submits and tracks the jobs of one suite (``Runner``'s suite, folders and models).

    Args:
        runner: The suite's runner (its spec has ``launcher.name == "submitit"``).
        threads: Torch CPU threads in each job (None: torch's default).
    """

    def __init__(self, runner: Runner, threads: int | None = None) -> None:
        self.runner, self.spec, self.ls = runner, runner.spec, runner.spec.launcher
        self.folder = Path(self.ls.folder) if self.ls.folder else runner.results / ".submitit"
        self.roots = Roots(*(str(Path(p).resolve().parent) for p in (runner.results, runner.reports, runner.runs)))
        self.threads = threads

    # ------------------------------------------------------------------ registry
    def load(self) -> dict[str, Entry]:
        path = self.runner.results / REGISTRY
        raw = json.loads(path.read_text()) if path.is_file() else {}
        return {k: Entry(**{**v, "job": JobRef(**v["job"])}) for k, v in raw.items()}

    def save(self, reg: dict[str, Entry]) -> None:
        atomic_write_text(self.runner.results / REGISTRY, json.dumps({k: asdict(e) for k, e in reg.items()}, indent=1))

    # ------------------------------------------------------------------ executors
    def executor(self, kind: str, dependency: Sequence[JobRef] = ()) -> Any:
        """A submitit executor for jobs of ``kind`` (train, cell, finish) with the suite's parameters."""
        import submitit

        ls, train = self.ls, kind == "train"
        nodes = 1 if kind == "finish" else (ls.train_nodes if train and ls.train_nodes else ls.nodes)
        gpus = ls.train_gpus_per_node if train and ls.train_gpus_per_node is not None else ls.gpus_per_node
        gpus = min(gpus, 1) if kind == "finish" else gpus
        tasks = ls.train_tasks_per_node if train and ls.train_tasks_per_node else ls.tasks_per_node
        tasks = 1 if kind == "finish" else (tasks or max(gpus, 1))
        timeout = ls.train_timeout_min if train and ls.train_timeout_min else ls.timeout_min
        self.folder.mkdir(parents=True, exist_ok=True)
        if ls.executor == "local":
            local = submitit.LocalExecutor(self.folder, max_num_timeout=ls.max_requeues)
            local.update_parameters(timeout_min=timeout, tasks_per_node=tasks, gpus_per_node=gpus,
                                    **({"setup": list(ls.setup)} if ls.setup else {}))
            return local
        try:
            ex = submitit.SlurmExecutor(self.folder, max_num_timeout=ls.max_requeues)
        except RuntimeError:
            raise PfbenchError("launcher.executor = 'slurm': no `srun` on this machine; run `pfbench run` on a "
                               "Slurm login node, or use launcher.executor=local") from None
        params = {"job_name": f"pfbench-{self.spec.name}-{kind}", "time": timeout, "nodes": nodes,
                  "ntasks_per_node": tasks, "gpus_per_node": gpus or None, "cpus_per_task": ls.cpus_per_task,
                  "mem": None if ls.mem_gb is None else f"{ls.mem_gb:g}GB", "partition": ls.partition,
                  "account": ls.account, "qos": ls.qos, "constraint": ls.constraint,
                  "array_parallelism": ls.array_parallelism, "setup": list(ls.setup) or None,
                  "additional_parameters": dict(ls.slurm_additional_parameters) or None,
                  "dependency": "afterok:" + ":".join(d.job_id for d in dependency) if dependency else None}
        ex.update_parameters(**{k: v for k, v in params.items() if v is not None})
        return ex

    def submit(self, kind: str, jobs: list[tuple[str, str, Any]], reg: dict[str, Entry],
               dependency: Sequence[JobRef] = ()) -> list[JobRef]:
        """Submits ``(key, label, job)`` triples as one job array and records them in ``reg``."""
        if not jobs:
            return []
        ex = self.executor(kind, dependency)
        try:
            with ex.batch():
                handles = [ex.submit(job) for _, _, job in jobs]
        except Exception as err:  # sbatch refused (bad partition, account, ...): its own message, one line
            what = (str(err).strip().splitlines() or [type(err).__name__])[-1]
            raise PfbenchError(f"submitting {len(jobs)} {kind} job(s) failed: {what}") from None
        refs = []
        now = time.strftime("%Y-%m-%d %H:%M:%S")
        for (key, label, _), handle in zip(jobs, handles, strict=True):
            ref = JobRef(self.ls.executor, str(self.folder.resolve()), str(handle.job_id))
            attempts = reg[key].attempts + 1 if key in reg else 1
            reg[key] = Entry(kind, label, ref, now, attempts)
            refs.append(ref)
        return refs

    # ------------------------------------------------------------------ one pass
    def step(self) -> Step:
        """Reads the jobs' states and submits every unit that is neither computed nor in flight."""
        out = Step()
        self.runner.results.mkdir(parents=True, exist_ok=True)
        with hold_lock(lock_path(self.runner.results, "jobs")):
            reg = self.load()
            states = {k: job_state(e.job) for k, e in reg.items()}

            def seen(key: str) -> str | None:
                """The state of ``key``'s latest job (and a table row), None if it was never submitted."""
                if key not in reg:
                    return None
                e, st = reg[key], states[key]
                out.rows.append((e.kind, e.label, e.job.job_id, st))
                if st in ACTIVE:
                    out.active.append(e.job)
                return st

            known = {n: self.runner.suite_models.identity(n) for n in self.spec.models}
            training: dict[str, JobRef] = {}
            todo: list[tuple[str, str, Any]] = []
            for name, ident in known.items():
                if ident.recipe is None or ident.key_id is not None:
                    continue
                key = f"train-{ident.recipe}"
                if seen(key) in ACTIVE:
                    training[name] = reg[key].job
                else:
                    todo.append((key, f"train {name}", TrainJob(self.spec, self.roots, self.threads, name)))
            for (key, _, job), ref in zip(todo, self.submit("train", todo, reg), strict=True):
                training[job.name] = ref
                out.submitted.append(key)
            out.rows += [("train", label, reg[key].job.job_id, "submitted") for key, label, _ in todo]
            self._cells(reg, known, training, out, seen)
            self.save(reg)
        return out

    def _cells(self, reg: dict[str, Entry], known: dict[str, ModelIdentity], training: dict[str, JobRef], out: Step,
               seen: Callable[[str], str | None]) -> None:
        """The cell jobs of ``step`` (one array per training job they wait for), then the finish job."""
        cells = plan(self.spec)
        out.cells = len(cells)
        parts: list[str] = []
        groups: dict[str | None, list[tuple[str, str, RunSpec]]] = {}
        for cell in cells:
            ident = self.runner.identity.cell(cell, known[cell.model])
            if ident.model.key_id is not None:
                parts.append(ident.part())
                if has_part(self.runner.results, parts[-1], suite=self.runner.spec.name, damaged="quiet"):
                    out.cells_done += 1
                    continue
            key = ident.job_key()
            if seen(key) in ACTIVE:
                continue
            label = f"{cell.model} {cell.sampler.name} {cell.axis()} cfg={cell.cfg_scale:g} seed={cell.seed}"
            dep = training.get(cell.model)
            groups.setdefault(None if dep is None else dep.job_id, []).append((key, label, cell))
        ls = self.ls
        for dep_id, group in groups.items():
            deps = [r for r in training.values() if r.job_id == dep_id]
            after = tuple(deps) if ls.executor == "local" else ()  # Slurm waits through --dependency
            jobs = [(k, lb, CellJob(self.spec, self.roots, self.threads, after, c, ls.shard_size, ls.keep_shards))
                    for k, lb, c in group]
            self.submit("cell", jobs, reg, deps if ls.executor == "slurm" else ())
            out.submitted += [k for k, _, _ in jobs]
            out.rows += [("cell", lb, reg[k].job.job_id, "submitted") for k, lb, _ in jobs]
        if out.cells_done < out.cells or out.active or out.submitted:
            return
        key = f"finish-{content_hash(sorted(parts))}"
        state = seen(key)
        if state in ACTIVE or state == "COMPLETED":
            out.finished = state == "COMPLETED"
            return
        self.submit("finish", [(key, "figures + report", FinishJob(self.spec, self.roots, self.threads))], reg)
        out.submitted.append(key)
        out.rows.append(("finish", "figures + report", reg[key].job.job_id, "submitted"))

    # ------------------------------------------------------------------ showing and waiting
    def show(self, step: Step, console: Console) -> None:
        table = Table(title=f"suite {self.spec.name}: jobs ({self.ls.executor} executor, {self.folder})")
        for col in ("kind", "what", "job", "state"):
            table.add_column(col)
        for row in step.rows:
            table.add_row(*row)
        if step.rows:
            console.print(table)
        console.print(f"{step.cells_done} of {step.cells} cells computed; {len(step.active)} job(s) in flight; "
                      f"{len(step.submitted)} submitted now"
                      + (f"; report: {self.runner.reports / 'index.md'}" if step.finished else ""))

    def run(self, console: Console, wait: bool, poll_s: float = 60.0) -> Step:
        """One ``step`` (shown); with ``wait``, steps until the report is written or a unit failed twice here."""
        tries: dict[str, int] = {}
        while True:
            step = self.step()
            self.show(step, console)
            for key in step.submitted:
                tries[key] = tries.get(key, 0) + 1
                if tries[key] > 2:
                    raise PfbenchError(f"{key} failed twice in this run; see its job's logs in {self.folder}")
            if not wait or step.finished or not (step.active or step.submitted):
                return step
            while any(job_state(r) in ACTIVE for r in self.step_refs()):
                time.sleep(poll_s)

    def step_refs(self) -> list[JobRef]:
        return [e.job for e in self.load().values()]
