"""What every benchmark shares: clocks, a thread-count scope, a machine record and a result table.

Times are wall and process-CPU seconds; with one torch thread the CPU time is what a step cost however busy the
machine is, while the wall time is what a user waits. Every result records the thread count and the load average.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from rich.console import Console
from rich.table import Table


def clock(sync: bool = False) -> tuple[float, float]:
    """(wall, process CPU) clock readings in seconds; pending CUDA work is finished first when ``sync``."""
    if sync:
        torch.cuda.synchronize()
    return time.perf_counter(), time.process_time()


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Runs the block with ``threads`` torch CPU threads (0 or None: as is), then restores the previous count."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def machine_info(device: str = "cpu") -> dict[str, Any]:
    """Device name, torch threads, 1-minute load average and torch version: read the numbers with these."""
    name = torch.cuda.get_device_name() if device == "cuda" else f"cpu x{os.cpu_count()}"
    return {"device": name, "threads": torch.get_num_threads(), "load_avg_1m": round(os.getloadavg()[0], 2),
            "torch": torch.__version__}


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Prints a rich table; the first column (sampler / preset / network names) never wraps."""
    table = Table(title=title)
    for i, col in enumerate(columns):
        table.add_column(col, no_wrap=i == 0)
    for row in rows:
        table.add_row(*(str(v) for v in row))
    Console().print(table)
