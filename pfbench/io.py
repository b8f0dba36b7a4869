"""The one home for atomic file writes and content hashing (ARCHITECTURE.md house rule 5).

Every file pfbench writes goes through :func:`atomic_write`: a temp file in the destination folder,
flushed and fsynced, then ``os.replace``: a reader (or a run killed half-way) never sees half a file.
Every content hash goes through the helpers below, so a cache key means the same thing everywhere.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from pfbench import PfbenchError

__all__ = [
    "atomic_path",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "content_hash",
    "content_key",
    "sha256_bytes",
    "sha256_file",
]


def _shared_mode() -> int:
    """Permission bits of a new shared file (0666 less the umask); mkstemp would give 0600."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yields a temp path beside ``path``; on success it is fsynced and renamed onto ``path``.

    For writers that want a file name (``DataFrame.to_parquet``, ``fig.savefig``). On an exception
    the temp file is removed and ``path`` is left as it was.

    Raises:
        PfbenchError: the disk (or quota) is full: one line naming ``path``.
    """
    path = Path(path)
    # keep the real suffix last: some writers (savefig, np.savez) pick the format from it
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, _shared_mode())
        os.replace(tmp, path)
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT) or "No space left on device" in str(err):  # pyarrow: no errno
            raise PfbenchError(f"no space left on device writing {path}: free some space and run again") from None
        raise
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> Path:
    """Calls ``write(binary file object)`` on a temp file, then renames it onto ``path``."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        write(fh)
        fh.flush()
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Writes ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda fh: fh.write(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Writes UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path, block: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(block), b""):
            h.update(chunk)
    return h.hexdigest()


_SHA_MEMO: dict[tuple[str, int, int], str] = {}


def sha256_cached(path: str | Path) -> str:
    """``sha256_file`` remembered per (resolved path, size, mtime) in this process: a model's weights are hashed
    once per run however often its id is asked for, and a file replaced under the same path is hashed again."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key not in _SHA_MEMO:
        _SHA_MEMO[key] = sha256_file(p)
    return _SHA_MEMO[key]


def content_hash(obj: Any, length: int = 16) -> str:
    """Short sha256 of a JSON-serialisable object (sorted keys; non-JSON values by ``str``).

    The cache/cell key of everything that changes an output: two objects that serialise alike hash
    alike, so the hash must only see plain data (dataclasses as ``asdict``), never object identities.
    """
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def content_key(*parts: bytes | str) -> str:
    """Full sha256 over length-prefixed parts (so ``("ab", "c")`` and ``("a", "bc")`` differ)."""
    h = hashlib.sha256()
    for part in parts:
        raw = part.encode() if isinstance(part, str) else part
        h.update(len(raw).to_bytes(8, "little"))
        h.update(raw)
    return h.hexdigest()
