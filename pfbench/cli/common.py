"""What every ``pfbench`` command shares: the consoles, the Ctrl-C message, the torch thread option."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import typer
from rich.console import Console

from pfbench import PfbenchError

console = Console()
err_console = Console(stderr=True)


@contextmanager
def kept_on_ctrl_c(kept: Callable[[], str] | None = None, at_once: bool = False) -> Iterator[None]:
    """Ctrl-C inside the block: one line saying what is saved (``kept()``, else the interrupt's own message),
    then exit status 130. Caught here because typer turns a KeyboardInterrupt into a silent exit.

    ``at_once``: exit without the interpreter's teardown (seconds with torch loaded on a busy machine). For a
    command whose files are all written atomically and whose child processes are stopped by then.
    """
    try:
        yield
    except KeyboardInterrupt as err:
        if int(os.environ.get("RANK", "0")) == 0:  # under torchrun every rank gets the signal; one line is enough
            what = kept() if kept is not None else (str(err) or "finished work is saved")
            err_console.print(f"[yellow]interrupted[/]: {what}; rerun the same command to resume", highlight=False,
                              soft_wrap=True)
        if at_once:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(130)
        raise typer.Exit(130) from None


def set_threads(threads: int | None) -> None:
    """``torch.set_num_threads(threads)`` when given (torch is imported only then: ``--help`` stays fast)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def set_lock_policy(stale_after: float | None, steal_stale: bool = False) -> None:
    """Sets the stale-lock policy (``pfbench.locks.StalePolicy``) through its environment variables, so the
    training processes a run starts follow it too."""
    from pfbench.locks import STALE_ENV, STEAL_ENV

    if stale_after is not None:
        if not stale_after > 0:
            raise PfbenchError(f"--stale-after must be a positive number of seconds, got {stale_after:g}")
        os.environ[STALE_ENV] = str(stale_after)
    if steal_stale:
        os.environ[STEAL_ENV] = "1"
