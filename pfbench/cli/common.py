"""What every ``pfbench`` command shares: the consoles, the Ctrl-C message, the torch thread option."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import typer
from rich.console import Console

console = Console()
err_console = Console(stderr=True)


@contextmanager
def kept_on_ctrl_c(kept: Callable[[], str] | None = None) -> Iterator[None]:
    """Ctrl-C inside the block: one line saying what is saved (``kept()``, else the interrupt's own message),
    then exit status 130. Caught here because typer turns a KeyboardInterrupt into a silent exit."""
    try:
        yield
    except KeyboardInterrupt as err:
        if int(os.environ.get("RANK", "0")) == 0:  # under torchrun every rank gets the signal; one line is enough
            what = kept() if kept is not None else (str(err) or "finished work is saved")
            err_console.print(f"[yellow]interrupted[/]: {what}; rerun the same command to resume", highlight=False,
                              soft_wrap=True)
        raise typer.Exit(130) from None


def set_threads(threads: int | None) -> None:
    """``torch.set_num_threads(threads)`` when given (torch is imported only then: ``--help`` stays fast)."""
    if threads:
        import torch

        torch.set_num_threads(threads)
