"""Child processes that live and die with the runner: training a suite's models concurrently.

Each worker is a ``spawn``-ed process that stops when its parent goes away, however it goes: on Linux the kernel
sends it SIGTERM when the parent dies (``prctl(PR_SET_PDEATHSIG)``, set first thing in the child), and a watchdog
thread checks every second that the parent is still its parent (``os.getppid``; for the case the parent died
before the ``prctl``, and off Linux). SIGINT and SIGTERM raise ``KeyboardInterrupt`` in the child, so its
work stops where it is: files are written atomically, so nothing partial is left, only the last whole checkpoint.
The parent (``run_workers``) stops every worker within ``STOP_S`` seconds when it is interrupted (Ctrl-C) or one
worker fails: SIGINT, then SIGKILL for one that has not exited by then.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

STOP_S = 5.0  # a stopped worker that has not exited after this long is killed
_PR_SET_PDEATHSIG = 1


@dataclass
class Worker:
    """One child process and the pipe its outcome comes back on (``(True, value)`` or ``(False, exception)``)."""

    name: str
    process: BaseProcess
    conn: Connection
    outcome: tuple[bool, Any] | None = field(default=None)


def parent_alive(parent: int) -> bool:
    """Whether ``parent`` is still this process's parent (an orphan is re-parented, to PID 1 or a subreaper)."""
    return os.getppid() == parent


def die_with_parent(parent: int) -> None:
    """In a child: SIGINT/SIGTERM raise ``KeyboardInterrupt``; the parent's death sends SIGTERM (Linux) or is
    noticed by a watchdog thread within a second; exits at once if ``parent`` is gone already."""
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also where the runner was started with SIGINT ignored
    signal.signal(signal.SIGTERM, _interrupt)
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if not parent_alive(parent):
        os._exit(1)
    threading.Thread(target=_watchdog, args=(parent,), name="watch parent", daemon=True).start()


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"stopped by signal {signal.Signals(signum).name}")


def _watchdog(parent: int) -> None:
    while parent_alive(parent):
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)  # the main thread stops where it is ...
    time.sleep(STOP_S)
    os._exit(1)  # ... or, stuck in native code, is ended


def _child(parent: int, fn: Callable[..., Any], args: tuple[Any, ...], conn: Connection) -> None:
    die_with_parent(parent)
    try:
        outcome: tuple[bool, Any] = (True, fn(*args))
    except KeyboardInterrupt as err:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the report short
        outcome = (False, KeyboardInterrupt(str(err)))
    except BaseException as err:  # noqa: BLE001 - reported to the parent, which re-raises it
        outcome = (False, err)
    try:
        conn.send(outcome)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the parent is gone
    except Exception:  # noqa: BLE001 - an exception that does not pickle: its text
        with contextlib.suppress(OSError):
            conn.send((False, RuntimeError(f"{type(outcome[1]).__name__}: {outcome[1]}")))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # the outcome is sent and every file is written: no interpreter teardown (seconds with torch loaded)


def run_workers(calls: dict[str, tuple[Callable[..., Any], tuple[Any, ...]]],
                tick: Callable[[dict[str, Worker]], None] | None = None, max_parallel: int | None = None) -> dict[str, Any]:
    """Runs ``fn(*args)`` of every call in its own child process, at most ``max_parallel`` at a time (all at once
    when ``None``; the next call starts when one finishes, in ``calls``' order); returns name -> value.

    ``tick`` is called about once a second with the workers started so far (``outcome`` set once one is done),
    e.g. to show progress. On Ctrl-C or the first failure every other worker is stopped (``stop``) before the
    exception propagates; Ctrl-C raises ``WorkersInterrupted``, whose ``stopped`` has each stopped worker's
    ``KeyboardInterrupt`` text (what it kept).
    """
    ctx = mp.get_context("spawn")
    limit = len(calls) if max_parallel is None else max(1, int(max_parallel))
    queue = list(calls.items())
    workers: dict[str, Worker] = {}
    try:
        while queue or any(w.outcome is None for w in workers.values()):
            while queue and sum(w.outcome is None for w in workers.values()) < limit:
                name, (fn, args) = queue.pop(0)
                here, there = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_child, args=(os.getpid(), fn, args, there), name=f"pfbench {name}")
                proc.start()
                there.close()
                workers[name] = Worker(name, proc, here)
            pending = [w for w in workers.values() if w.outcome is None]
            wait([w.conn for w in pending] + [w.process.sentinel for w in pending], timeout=1.0)
            for w in pending:
                _collect(w)
                if w.outcome is not None and not w.outcome[0]:
                    raise w.outcome[1]
            if tick is not None:
                tick(workers)
        return {name: w.outcome[1] for name, w in workers.items() if w.outcome is not None}
    except BaseException as err:
        stop(workers)
        if isinstance(err, KeyboardInterrupt):  # a terminal's Ctrl-C reaches the workers too: all say what they kept
            raise WorkersInterrupted({n: str(w.outcome[1]) for n, w in workers.items() if w.outcome is not None
                                      and isinstance(w.outcome[1], KeyboardInterrupt) and str(w.outcome[1])}) from None
        raise


class WorkersInterrupted(KeyboardInterrupt):
    """Ctrl-C while workers ran: ``stopped`` maps each stopped worker to what it said it kept."""

    def __init__(self, stopped: dict[str, str]) -> None:
        super().__init__("; ".join(f"{n}: {what}" for n, what in stopped.items()))
        self.stopped = stopped


def _collect(w: Worker) -> None:
    """Reads a finished worker's outcome (a worker that died without one: a ``RuntimeError``)."""
    if w.outcome is not None:
        return
    with contextlib.suppress(EOFError, OSError):
        if w.conn.poll():
            w.outcome = w.conn.recv()
            return
    if not w.process.is_alive():
        w.process.join()
        w.outcome = (False, RuntimeError(f"{w.name}: worker process died (exit code {w.process.exitcode})"))


def stop(workers: dict[str, Worker]) -> None:
    """Stops every running worker: SIGINT (its ``KeyboardInterrupt`` becomes its ``outcome``), SIGKILL for one
    still running after ``STOP_S``."""
    for w in workers.values():
        if w.outcome is None and w.process.is_alive() and w.process.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(w.process.pid, signal.SIGINT)
    deadline = time.monotonic() + STOP_S
    for w in workers.values():
        if w.outcome is None:
            with contextlib.suppress(EOFError, OSError):
                if w.conn.poll(max(0.0, deadline - time.monotonic())):
                    w.outcome = w.conn.recv()
        w.process.join(max(0.0, deadline - time.monotonic()))
        if w.process.is_alive():
            w.process.kill()
            w.process.join()
        w.conn.close()
