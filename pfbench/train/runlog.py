"""What a training run reports: ``log.jsonl`` (kept by rank 0), divergence warnings and the progress bar.

``log.jsonl`` has one JSON line per log interval: ``step``, the mean losses, ``img_per_s``, ``time``, the cumulative
training seconds ``wall_s`` (checkpoint writes excluded, carried over resumes) and analytic ``gflops``, and
``"diverged": true`` where a loss blew up (``Divergence``).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from pfbench.io import atomic_write_text
from pfbench.train.spec import TrainSpec

LOG = "log.jsonl"
DIVERGE_FACTOR = 100.0  # a watched loss this many times above max(1, its lowest logged value) has diverged
_WATCHED = ("fm", "nll")  # flow matching and difficulty NLL; not REPA's bounded -cos, nor their weighted sum


class Divergence:
    """Flags training that blows up without (yet) producing NaN, e.g. lr too high: the NLL climbing to 1e10
    while every loss stays finite. A watched loss over ``DIVERGE_FACTOR`` × max(1, its lowest value logged in
    this run folder) counts as diverged. The floor of 1 makes the first interval checkable too and ignores
    small values: at initialisation fm ≈ 1 + Var(data) and nll ≈ 1.6, and a healthy run only goes down.
    """

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.lowest = {k: min((float(r[k]) for r in rows if k in r), default=math.inf) for k in _WATCHED}
        self.seen = any(r.get("diverged") for r in rows)  # sticky over resumes: the weights came through it

    def check(self, step: int, losses: dict[str, float]) -> str | None:
        """Updates the lowest values; returns what diverged at ``step`` (None if nothing did)."""
        found = None
        for k in _WATCHED:
            if k not in losses or not math.isfinite(losses[k]):
                continue
            v, low = losses[k], self.lowest[k]
            if found is None and v > DIVERGE_FACTOR * (1.0 if math.isinf(low) else max(1.0, low)):
                found = f"{k} {v:.3g} at step {step} (lowest so far {'none' if math.isinf(low) else f'{low:.3g}'})"
            self.lowest[k] = min(low, v)
        self.seen = self.seen or found is not None
        return found


class RunLog:
    """``log.jsonl`` of one run folder, read and written by rank 0 only (``active``; other ranks keep no log).

    Opening it drops lines past ``start`` (written after the checkpoint a resumed run restarts from) and recovers
    what the run had logged: the last losses, the training seconds so far and the divergence watch.
    """

    def __init__(self, path: Path, start: int, active: bool) -> None:
        self.path = path
        rows: list[dict[str, Any]] = []
        if active and path.exists():
            kept = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= start]
            atomic_write_text(path, "".join(ln + "\n" for ln in kept))  # a kill mid-trim keeps the whole log
            rows = [json.loads(ln) for ln in kept]
        self.losses: dict[str, float] = {k: float(rows[-1][k]) for k in ("loss", "fm", "nll", "repa") if k in rows[-1]} if rows else {}
        self.wall_s = float(rows[-1].get("wall_s", 0.0)) if start and rows else 0.0  # seconds before this call
        self.watch = Divergence(rows)  # sticky over resumes

    def append(self, step: int, losses: dict[str, float], ips: float, diverged: bool = False) -> None:
        """One line for the log interval ending at ``step`` (``losses`` may carry ``wall_s`` and ``gflops``)."""
        row = {"step": step, **losses, "img_per_s": round(ips, 2), "time": time.time()}
        with open(self.path, "a") as f:
            f.write(json.dumps(row | ({"diverged": True} if diverged else {})) + "\n")


def warn(message: str) -> None:
    """One line on stderr (rich), also from spawned training processes of a suite."""
    Console(stderr=True, highlight=False, soft_wrap=True).print(f"[yellow]warning:[/] {message}")


class ProgressBar:
    """Rich progress bar (loss, img/s, steps/s, ETA), or a no-op when disabled."""

    def __init__(self, enabled: bool, spec: TrainSpec, start: int, end: int) -> None:
        self.enabled, self.spec, self.start, self.end = enabled, spec, start, end
        self.bar: Any = None

    def __enter__(self) -> tuple[Any, Any]:
        if not self.enabled:
            return None, None
        self.bar = Progress(
            TextColumn("[bold]train {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[sps]}"),
            TextColumn("[cyan]{task.fields[speed]}"),
            TimeRemainingColumn(),
        )
        self.bar.__enter__()
        desc = f"{self.spec.kind} {self.spec.model}"
        task = self.bar.add_task(desc, total=self.end, completed=self.start, loss="…", speed="", sps="")
        return self.bar, task

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)
