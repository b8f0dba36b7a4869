"""Training stage: ``TrainSpec`` → checkpoint (docs/protocol.md §5). The spec itself and its parsing live in
``pfbench.train.spec`` (re-exported here).

One loop serves Patch Forcing (per-token t + difficulty head) and the global-t SiT baseline, with the optional
REPA alignment loss.

Determinism (``pfbench.train.draws``): every random draw of step k comes from generators seeded by
``(spec.seed, k)`` for the *global* batch and a DDP rank takes its slice, so a resumed run needs only the step
count, and 1 and N processes compute the same global batch. The run's log, divergence watch and progress bar
live in ``pfbench.train.runlog``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from pfbench import PfbenchError
from pfbench.nets.flops import train_flops
from pfbench.train.draws import setup_distributed
from pfbench.train.runlog import LOG, ProgressBar, RunLog, warn
from pfbench.train.spec import DataSpec, RepaSpec, TimestepSpec, TrainSpec, spec_from_dict
from pfbench.train.trainer import LAST, NonFinite, Trainer


@dataclass(frozen=True)
class TrainResult:
    """What ``train`` returns.

    Attributes:
        checkpoint: path of ``last.pt``. steps: optimiser steps done in total.
        img_per_s: global images per second over this call's steps (checkpoint writes excluded); of a run
            finished before this call, over its whole training (``wall_s`` of ``log.jsonl``).
        losses: mean losses over the last log interval (``loss``, ``fm``, for pf ``nll``, with REPA ``repa``).
        diverged: some log interval of this run folder had a loss far above its lowest value (see
            ``runlog.Divergence``; marked ``"diverged": true`` in ``log.jsonl``): the checkpoint is likely useless.
    """

    checkpoint: Path
    steps: int
    img_per_s: float
    losses: dict[str, float]
    diverged: bool = False


def run_steps(tr: Trainer, resume: bool, progress: bool, stop_after: int | None,
              abort: Callable[[], str | None] | None = None) -> TrainResult:
    """Runs the trainer's steps from its last checkpoint (or 0) to ``spec.steps`` (or ``stop_after``), logging
    and checkpointing on schedule; ``abort`` (see ``train``) is asked before every step."""
    spec, ctx, dev = tr.spec, tr.ctx, tr.ctx.device
    last, log = tr.out / LAST, tr.out / LOG
    resumed = resume and last.exists()  # decided before any rank writes, so all ranks agree
    start = tr.load(last) if resumed else 0
    tr.saved = start if resumed else None
    if ctx.rank == 0:
        tr.out.mkdir(parents=True, exist_ok=True)
    runlog = RunLog(log, start, active=ctx.rank == 0)  # rank 0 alone keeps the log (and warns)
    if ctx.world > 1:
        ids = [dev.index] if dev.type == "cuda" else None
        tr.model = nn.parallel.DistributedDataParallel(tr.model, device_ids=ids)
    if spec.compile:  # after DDP, so its gradient hooks see the compiled graph's buckets (DDPOptimizer)
        tr.model = torch.compile(tr.model)  # type: ignore[assignment]
    end = spec.steps if stop_after is None else max(start, min(spec.steps, stop_after))
    losses: dict[str, float] = runlog.losses
    warned = False
    acc, n_acc = torch.zeros(4, device=dev), 0  # loss, fm, nll, repa
    t_begin = t_mark = time.perf_counter()
    ckpt_s, mark_step = 0.0, start
    # Cost accounting for equal-compute comparisons: training seconds so far (checkpoint writes excluded,
    # carried over resumes through the log) and analytic training GFLOPs (``nets.flops.train_flops``).
    gflops_step = train_flops(tr.cfg) * spec.batch_size / 1e9
    with ProgressBar(progress and ctx.rank == 0, spec, start, end) as (bar, task):
        for k in range(start, end):
            why = None if abort is None else abort()
            if why is not None:
                kept = f"the checkpoint of step {tr.saved} is kept in {last}" if tr.saved is not None else "no checkpoint"
                raise PfbenchError(f"training in {tr.out} stopped at step {k}: {why}; {kept}")
            try:
                acc += tr.step(k)
            except NonFinite:
                good = str(last) if resumed or k >= spec.ckpt_every else "none"  # not a stale one
                why = f" after the loss diverged (lr={spec.lr:g} too high?)" if runlog.watch.seen else ""
                raise PfbenchError(
                    f"non-finite loss at step {k + 1}{why}; last good checkpoint: {good}"
                ) from None
            n_acc += 1
            step = k + 1
            if step % spec.log_every == 0 or step == end:
                losses = tr.reduce(acc, n_acc)
                acc.zero_()
                n_acc = 0
                now = time.perf_counter()
                ips = (step - mark_step) * spec.batch_size / max(now - t_mark, 1e-9)
                t_mark, mark_step = now, step
                if ctx.rank == 0:
                    diverged = runlog.watch.check(step, losses)
                    if diverged and not warned:
                        warned = True
                        warn(f"training diverges: {diverged}; healthy values are O(1). Lower lr "
                              f"({spec.lr:g}) or lengthen warmup ({spec.warmup}); training goes on, "
                              f"{log} marks the intervals")
                    cost = {"wall_s": round(runlog.wall_s + now - t_begin - ckpt_s, 3),
                            "gflops": step * gflops_step}
                    runlog.append(step, losses | cost, ips, diverged=diverged is not None)
                if bar is not None:
                    sps = f"{ips / spec.batch_size:.2f} steps/s"
                    bar.update(task, loss=f"{losses['loss']:.4f}", speed=f"{ips:,.0f} img/s", sps=sps)
            if step % spec.ckpt_every == 0 or step == end:
                t0 = time.perf_counter()
                tr.save(step)
                ckpt_s += time.perf_counter() - t0
                t_mark += time.perf_counter() - t0
            if bar is not None:
                bar.update(task, completed=step)
    if not resumed and end == start:
        tr.save(start)  # e.g. stop_after=0 on a fresh run: an untrained checkpoint
    elapsed = time.perf_counter() - t_begin - ckpt_s
    if end > start:
        ips = (end - start) * spec.batch_size / elapsed
    else:  # finished before this call (e.g. by a run that was killed before it recorded its speed): from the log
        ips = end * spec.batch_size / runlog.wall_s if runlog.wall_s > 0 else 0.0
    return TrainResult(checkpoint=last, steps=end, img_per_s=ips, losses=losses, diverged=runlog.watch.seen)



def train(
    spec: TrainSpec,
    out_dir: Path | str,
    *,
    resume: bool = True,
    progress: bool = True,
    stop_after: int | None = None,
    abort: Callable[[], str | None] | None = None,
) -> TrainResult:
    """Trains a PF or SiT network and writes checkpoints to ``out_dir`` (``last.pt``, ``log.jsonl``).

    Under ``torchrun`` (WORLD_SIZE > 1) it runs data-parallel (gloo on CPU, nccl on CUDA); rank 0 alone
    writes files and shows progress. The result is the same as one process with the same global batch.

    Args:
        spec: the run (validate user input with ``spec_from_dict`` first).
        out_dir: run folder.
        resume: continue from ``out_dir/last.pt`` if it exists (bit-identical to an uninterrupted run on CPU).
        progress: show a rich progress bar on rank 0.
        stop_after: stop (and checkpoint) once this many steps are done in total; None = ``spec.steps``.
        abort: asked before every step; a reason (e.g. the run folder's lock was taken over, the runner that
            started this process died) stops training at once with a ``PfbenchError`` naming it, keeping the
            last checkpoint written.

    Raises:
        PfbenchError: bad config, unreadable/incompatible checkpoint, or a non-finite loss (the optimiser
            is not stepped and the last good checkpoint is left intact).
    """
    if spec.threads is not None:
        torch.set_num_threads(spec.threads)
    ctx = setup_distributed(spec)
    ok, trainer = False, None
    try:
        trainer = Trainer(spec, Path(out_dir), ctx)
        result = run_steps(trainer, resume, progress, stop_after, abort)
        ok = True
        return result
    except KeyboardInterrupt:  # Ctrl-C: say what is kept (the CLI prints it); checkpoint writes are atomic
        last = Path(out_dir) / LAST
        saved = None if trainer is None else trainer.saved
        raise KeyboardInterrupt(f"the checkpoint of step {saved} is kept in {last}" if saved is not None
                                else f"no checkpoint was written yet (the first comes at step {spec.ckpt_every})"
                                ) from None
    finally:
        if ctx.owns_group and dist.is_initialized():
            if ok:  # every rank has released its DDP state before any rank tears the group down
                dist.barrier()
            dist.destroy_process_group()


__all__ = [
    "DataSpec", "RepaSpec", "TimestepSpec", "TrainResult", "TrainSpec", "run_steps", "spec_from_dict", "train",
]
