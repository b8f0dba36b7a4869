"""Advisory file locks so that several runners can share one results folder (two terminals, cluster jobs).

A lock is an OS-level ``flock`` on ``<folder>/.locks/<unit>.lock``: the kernel drops it when its process exits
for any reason (SIGKILL included), so a killed runner never leaves a held lock behind. Locks only guard against
duplicated work: the caller must recheck that the work is still to do *after* acquiring (another process may
just have finished).

The lock file records its holder (``Holder``: host, pid, start time, heartbeat), rewritten in place by a daemon
thread every ``HEARTBEAT_S`` seconds while the lock is held; ``pfbench plan`` shows who holds what. A holder
that is alive but stopped (SIGSTOP, a hung filesystem, a frozen node) keeps its ``flock`` but stops beating:
once its heartbeat is older than the stale timeout (``StalePolicy``: ``$PFBENCH_LOCK_STALE_S``, default 10 min;
``pfbench run --stale-after``) a waiting runner takes the lock over. Without ``--steal-stale`` (``$PFBENCH_STEAL_
STALE``) it does so only after it has itself seen the record unchanged for that long (its own clock: safe with
skewed clocks between hosts); with it, it trusts the recorded heartbeat time and takes over at once.

A takeover unlinks the lock file (under a short-lived ``.steal`` guard lock): the old holder keeps a lock on a
nameless file, and ``Lock.lost`` (the lock file's inode is no longer the held one) tells it, when it resumes, that
its unit is someone else's now; callers check it before writing their result, and discard it if lost (results
are written atomically, so nothing is ever half-written either way). Acquiring checks the same inode after
``flock``, so a process that opened the file just before it was unlinked never counts as a holder.

The folder must be on a filesystem with working ``flock`` (local disks, NFS with a lock manager, Lustre mounted
with ``-o flock``, GPFS).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

LOCK_DIR = ".locks"
HEARTBEAT_S = 5.0  # a holder rewrites its record this often
STALE_ENV, STEAL_ENV = "PFBENCH_LOCK_STALE_S", "PFBENCH_STEAL_STALE"
DEFAULT_STALE_S = 600.0
_RECORD_BYTES = 512  # records are padded to this size, so a rewrite never leaves the tail of a longer one


def lock_path(folder: Path, name: str) -> Path:
    """The lock file of unit ``name`` (a result part, a training run) in ``folder``."""
    return Path(folder) / LOCK_DIR / f"{name}.lock"


@dataclass(frozen=True)
class Holder:
    """Who holds a lock: ``host``, ``pid``, ``started`` and last ``heartbeat`` (Unix times)."""

    host: str
    pid: int
    started: float
    heartbeat: float

    def describe(self, stale_after: float, now: float | None = None) -> str:
        """``host:pid since 01:02:03, last heartbeat 4 s ago`` (plus `` [stale]`` past ``stale_after``)."""
        age = (time.time() if now is None else now) - self.heartbeat
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        return (f"{self.host}:{self.pid} since {since}, last heartbeat {_ago(age)} ago"
                + (" [stale]" if age >= stale_after else ""))


@dataclass(frozen=True)
class StalePolicy:
    """When a waiting runner takes over a lock whose holder stopped heart-beating.

    Attributes:
        after_s: a heartbeat this old is stale. steal: trust the recorded heartbeat time (take over a lock that
            is stale at once) rather than waiting to see the record unchanged for ``after_s`` on this host's clock.
    """

    after_s: float = DEFAULT_STALE_S
    steal: bool = False

    @classmethod
    def from_env(cls) -> StalePolicy:
        """From ``$PFBENCH_LOCK_STALE_S`` and ``$PFBENCH_STEAL_STALE`` (``pfbench run`` sets both from its options,
        so its training processes inherit them)."""
        after = float(os.environ.get(STALE_ENV) or DEFAULT_STALE_S)
        return cls(after_s=after, steal=os.environ.get(STEAL_ENV, "") not in ("", "0"))


class Lock:
    """A held lock: its file descriptor (which holds the ``flock``), its record and the heartbeat thread."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path, self.fd, self.inode = path, fd, os.fstat(fd).st_ino
        now = time.time()
        self.holder = Holder(socket.gethostname(), os.getpid(), now, now)
        self._write()
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, name=f"heartbeat {path.name}", daemon=True)
        self._beat.start()

    def lost(self) -> bool:
        """True once another runner has taken this lock over (its holder record went stale)."""
        try:
            return os.stat(self.path).st_ino != self.inode
        except FileNotFoundError:
            return True

    def taken_by(self) -> str:
        """Who took the lock over, in words (after ``lost``): its holder now, or that it has released it since."""
        return describe_holder(self.path) if holder_of(self.path) is not None else "a runner that has released it since"

    def lost_note(self, unit: str) -> str:
        """The line saying that this process lost ``unit`` and drops its result (after ``lost``)."""
        return (f"lost the lock of {unit} (taken over while this process was stopped, by {self.taken_by()}): its "
                "result here is discarded")

    def _write(self) -> None:
        data = json.dumps(asdict(self.holder)).encode()
        os.pwrite(self.fd, data.ljust(max(_RECORD_BYTES, len(data))), 0)  # one write: readers retry a torn one

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            if self.lost():
                return  # the record now lives in the new holder's file; ours is nameless
            self.holder = Holder(self.holder.host, self.holder.pid, self.holder.started, time.time())
            with contextlib.suppress(OSError):
                self._write()

    def release(self) -> None:
        """Stops the heartbeat, removes the lock file (if it is still this lock's) and drops the ``flock``."""
        self._stop.set()
        self._beat.join()
        try:
            if not self.lost():
                self.path.unlink(missing_ok=True)  # waiters check the inode after flock: unlinking is safe
        finally:
            os.close(self.fd)  # drops the flock


def _try_acquire(path: Path) -> Lock | None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        with contextlib.suppress(OSError):
            os.fchmod(fd, 0o666)  # shared folders: other users' runners must be able to open it
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.stat(path).st_ino == os.fstat(fd).st_ino:  # not unlinked (released or taken over) meanwhile
            return Lock(path, fd)
    except (BlockingIOError, FileNotFoundError):
        pass
    os.close(fd)
    return None


def read_holder(path: Path) -> tuple[Holder | None, int | None]:
    """(the recorded holder, the lock file's inode) of ``path``; (None, ...) without a readable record."""
    for _ in range(3):  # a torn read of a rewrite in progress: read again
        try:
            with open(path, "rb") as fh:
                inode, raw = os.fstat(fh.fileno()).st_ino, fh.read().strip()
        except FileNotFoundError:
            return None, None
        try:
            return (Holder(**json.loads(raw)) if raw else None), inode
        except (ValueError, TypeError):
            time.sleep(0.01)
    return None, inode


def holder_of(path: Path) -> Holder | None:
    """The holder of a lock that is held now, else None (a free lock, or a record left by a killed holder)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None  # nobody holds it
    except BlockingIOError:
        return read_holder(path)[0] or Holder("?", 0, 0.0, 0.0)  # held, record not readable (yet)
    finally:
        os.close(fd)


def held_locks(folder: Path) -> list[tuple[str, Holder]]:
    """(unit, holder) of every lock in ``folder`` that is held now (``holder_of``), by unit name."""
    locks = sorted((Path(folder) / LOCK_DIR).glob("*.lock")) if (Path(folder) / LOCK_DIR).is_dir() else []
    return [(p.stem, h) for p in locks if (h := holder_of(p)) is not None]


def describe_holder(path: Path, policy: StalePolicy | None = None) -> str:
    """Who holds ``path``, in words (``Holder.describe``), for waiting messages and ``pfbench plan``."""
    holder = read_holder(path)[0]
    if holder is None:
        return "another process (no holder record)"
    return holder.describe((policy or StalePolicy.from_env()).after_s)


_seen: dict[Path, tuple[Holder | None, int | None, float]] = {}  # path -> (record, inode, first seen): stale watch


def _take_over_if_stale(path: Path, policy: StalePolicy) -> str | None:
    """Unlinks ``path`` if its holder has stopped heart-beating (``StalePolicy``); returns who it was taken from."""
    holder, inode = read_holder(path)
    now = time.monotonic()
    seen = _seen.get(path)
    if seen is None or seen[:2] != (holder, inode):
        _seen[path] = seen = (holder, inode, now)
    if holder is None:  # no record (another pfbench version, or not written yet): never taken over
        return None
    stale = (policy.steal and time.time() - holder.heartbeat >= policy.after_s) or now - seen[2] >= policy.after_s
    if not stale:
        return None
    guard = path.with_suffix(".steal")
    gfd = os.open(guard, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(gfd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # one taker at a time
        if read_holder(path) != (holder, inode):
            return None  # it beat again, or another runner took it over first
        path.unlink()
    except (BlockingIOError, FileNotFoundError):
        return None
    finally:
        os.close(gfd)
    _seen.pop(path, None)
    return holder.describe(policy.after_s)


@contextlib.contextmanager
def try_lock(path: Path, policy: StalePolicy | None = None,
             on_take_over: Callable[[str], None] | None = None) -> Iterator[Lock | None]:
    """Takes the lock at ``path`` if it is free or its holder is stale (``StalePolicy``, from the environment by
    default; ``on_take_over`` is told whom it was taken from); yields the ``Lock`` or None (never waits)."""
    lock = _try_acquire(path)
    if lock is None:
        taken = _take_over_if_stale(path, policy or StalePolicy.from_env())
        if taken is not None:
            if on_take_over is not None:
                on_take_over(taken)
            lock = _try_acquire(path)
    try:
        yield lock
    finally:
        if lock is not None:
            lock.release()


@contextlib.contextmanager
def hold_lock(path: Path, on_wait: Callable[[str], None] | None = None, policy: StalePolicy | None = None,
              on_take_over: Callable[[str], None] | None = None) -> Iterator[Lock]:
    """Holds the lock at ``path``, waiting while another process holds it (``on_wait`` is told who, once, before
    waiting); a holder that stopped heart-beating is taken over (``try_lock``)."""
    policy = policy or StalePolicy.from_env()
    said = False
    while True:
        with try_lock(path, policy, on_take_over) as lock:
            if lock is not None:
                yield lock
                return
        if not said and on_wait is not None:
            on_wait(describe_holder(path, policy))
        said = True
        time.sleep(0.5)


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"
