"""Advisory file locks so that several runners can share one results folder (two terminals, cluster jobs).

A lock is an OS-level ``flock`` taken through ``filelock``: the kernel drops it when its process exits for
any reason (SIGKILL included), so a killed runner never leaves a stale lock behind. The lock files themselves
stay (deleting one while another process waits on it would let two processes hold "the" lock); they live in
a hidden ``.locks`` folder, so result readers never see them. Locks only guard against duplicated work: the
caller must recheck that the work is still to do *after* acquiring (another process may just have finished).

The folder must be on a filesystem with working ``flock`` (local disks, NFS with a lock manager, Lustre mounted
with ``-o flock``, GPFS); without it, depending on its version, ``filelock`` fails or falls back to marker files
that a killed process may leave behind.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

LOCK_DIR = ".locks"


def lock_path(folder: Path, name: str) -> Path:
    """The lock file of unit ``name`` (a result part, a training run) in ``folder``."""
    return Path(folder) / LOCK_DIR / f"{name}.lock"


def _lock(path: Path) -> FileLock:
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path), mode=0o666)  # shared folders: other users' runners must be able to open it


@contextmanager
def try_lock(path: Path) -> Iterator[bool]:
    """Takes the lock at ``path`` if it is free; yields whether this process holds it (never waits)."""
    lock = _lock(path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        yield False
        return
    try:
        yield True
    finally:
        lock.release()


@contextmanager
def hold_lock(path: Path, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Holds the lock at ``path``, waiting as long as another process holds it (``on_wait`` is called once,
    before waiting, e.g. to say so)."""
    lock = _lock(path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if on_wait is not None:
            on_wait()
        lock.acquire(timeout=-1, poll_interval=0.5)
    try:
        yield
    finally:
        lock.release()
