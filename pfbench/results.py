"""Result rows <-> Parquet. The only module that touches Parquet; every write is atomic.

Layout: ``results/<suite>/<part>.parquet``, one file per finished unit of work (a cell, a diagnostic), so a
killed run loses at most the unit in flight and never leaves a partial file.

Damaged files (0 bytes, truncated, overwritten, bit rot: anything pyarrow cannot read back) are never counted
as finished work and never crash a reader. Each one is reported in one line on stderr, and then:
  * ``pfbench run`` (the owner of the folder, under the part's lock) moves it aside to ``<name>.corrupt`` and
    recomputes the unit (``has_part(..., damaged="move")``);
  * ``pfbench plan`` shows the unit as not computed and leaves the file alone (a dry run writes nothing);
  * ``report`` / ``compare`` / ``baseline`` / ``figures`` skip it (``read_results``); one explicitly named
    Parquet file that is damaged (e.g. a committed baseline) is a one-line error instead (``read_path``).
"""

from __future__ import annotations

import functools
import io
import os
import platform
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from rich.console import Console

from pfbench import PfbenchError

SCHEMA_VERSION = 2  # 2: + decoder

# Documented columns (README "Results schema"); readers fill absent columns with NA so older files still load.
COLUMNS: dict[str, str] = {
    "suite": "string",
    "part": "string",  # file the row came from: cell key or diagnostic name
    "kind": "string",  # "cell" | "curve" | "diagnostic" | "reference"
    "model": "string",
    "model_id": "string",  # sha256 of the checkpoint file (trained in the suite or given)
    "decoder": "string",  # latent models: "<vae name>@<sha256[:16]>" of the decoder; missing for pixel models
    "train_timesteps": "string",  # training timestep sampler of the model (SPEC §3), when known
    "train_step": "Int64",
    "train_gflops": "Float64",  # curve rows: analytic training GFLOPs up to train_step (nets.flops.train_flops)
    "train_wall_s": "Float64",  # curve rows: training seconds up to train_step (from the run's log.jsonl)
    "sampler": "string",
    "sampler_args": "string",  # JSON
    "variant": "string",  # JSON of the suite-level sampler params and CFG interval that distinguish this cell ("" = defaults)
    "nfe_budget": "Int64",
    "nfe_used": "Int64",
    "forwards": "Int64",
    "gflops": "Float64",  # per sample, summed over calls
    "wall_s": "Float64",
    "seed": "Int64",
    "num_samples": "Int64",
    "cfg_scale": "Float64",
    "cfg_interval": "string",  # JSON [t_lo, t_hi] or missing (guidance at every step)
    "metric": "string",
    "value": "Float64",
    "higher_is_better": "boolean",
    "ref_id": "string",  # reference set the metric compares against
    "metric_args": "string",  # JSON: how the metric was computed (e.g. Inception resize mode)
    "pfbench_version": "string",
    "git_sha": "string",
    "torch_version": "string",
    "hardware": "string",
    "schema_version": "Int64",
}


@functools.cache
def provenance() -> dict[str, Any]:
    """Version, git and hardware fields shared by every row written by this process."""
    import torch

    import pfbench

    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).parent,
        ).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        sha = None
    if torch.cuda.is_available():
        hw = f"{torch.cuda.get_device_name()} x{torch.cuda.device_count()}"
    else:
        hw = f"cpu {platform.machine()} {os.cpu_count()} cores, {torch.get_num_threads()} threads"
    return {
        "pfbench_version": pfbench.__version__,
        "git_sha": sha,
        "torch_version": torch.__version__,
        "hardware": hw,
        "schema_version": SCHEMA_VERSION,
    }


def to_frame(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Rows -> DataFrame with the documented column types (extra columns are kept)."""
    return _coerce(pd.DataFrame([dict(provenance()) | dict(r) for r in rows]))


def _coerce(df: pd.DataFrame) -> pd.DataFrame:
    """Adds missing documented columns as NA and applies the documented types; extra columns stay last."""
    for col, dtype in COLUMNS.items():
        if col not in df:
            df[col] = pd.NA
        df[col] = df[col].astype(dtype)  # type: ignore[call-overload]
    return df[list(COLUMNS) + [c for c in df.columns if c not in COLUMNS]]


def write_rows(path: Path, rows: Iterable[Mapping[str, Any]]) -> Path:
    """Writes rows to ``path`` atomically (temp file in the same folder, fsync, rename)."""
    return write_frame(path, to_frame(rows))


_MAGIC = b"PAR1"  # first and last 4 bytes of every Parquet file
_stderr = Console(stderr=True, highlight=False, soft_wrap=True)
_warned: set[tuple[Path, str]] = set()  # one warning per file and action per process (readers run repeatedly)


def _load(path: Path) -> pd.DataFrame | str:
    """The rows of one Parquet file with the documented columns, or why the file is damaged.

    Raises:
        OSError: the file cannot be read at all (permissions, I/O error): not damage, so it is not moved aside.
    """
    data = path.read_bytes()  # result parts are small (a few rows); reading them whole checks every byte
    if not data:
        return "empty file (0 bytes)"
    if len(data) < 12 or data[:4] != _MAGIC or data[-4:] != _MAGIC:
        return f"truncated or not a Parquet file ({len(data)} bytes, no PAR1 header/footer)"
    try:
        return _coerce(pd.read_parquet(io.BytesIO(data)))
    except Exception as err:  # whatever pyarrow/pandas raise on these bytes (ArrowInvalid, OSError, ...) is damage
        return "unreadable: " + (str(err).strip().splitlines() or [type(err).__name__])[0][:200]


def _warn(path: Path, what: str) -> None:
    if (path, what) not in _warned:
        _warned.add((path, what))
        _stderr.print(f"[yellow]warning:[/] {path} {what}")


def move_aside(path: Path) -> Path | None:
    """Renames a damaged part to ``<name>.corrupt`` (``.corrupt.1``, ... if taken), keeping it for inspection.

    Returns None when the file is already gone (another runner moved it first).
    """
    dst, n = path.with_name(path.name + ".corrupt"), 0
    while dst.exists():
        n += 1
        dst = path.with_name(f"{path.name}.corrupt.{n}")
    try:
        os.replace(path, dst)
    except FileNotFoundError:
        return None
    return dst


def read_results(folder: Path) -> pd.DataFrame:
    """All rows under ``folder`` (recursively), old files upgraded to the current columns.

    Damaged files are skipped with a one-line warning each (see the module docstring).
    """
    files = sorted(p for p in Path(folder).rglob("*.parquet") if not p.name.startswith("."))
    frames = []
    for f in files:
        df = _load(f)
        if isinstance(df, str):
            _warn(f, f"is damaged ({df}): skipped; `pfbench run` moves it aside and recomputes it")
        else:
            frames.append(df)
    if not frames:
        return to_frame([]).iloc[0:0]
    return _coerce(pd.concat(frames, ignore_index=True))


def has_part(folder: Path, part: str, *, damaged: Literal["warn", "move", "quiet"] = "warn") -> bool:
    """Whether ``folder/<part>.parquet`` holds a finished, readable unit of work.

    Args:
        folder: a results folder (``results/<suite>``).
        part: the unit's name (file stem).
        damaged: what to do with a damaged file (it counts as not finished in every case): ``"warn"`` one
            line on stderr; ``"move"`` also move it aside to ``<name>.corrupt`` (only the folder's runner, while
            holding the part's lock, so it never moves a file another runner has just rewritten); ``"quiet"``
            nothing.
    """
    path = Path(folder) / f"{part}.parquet"
    if not path.is_file():
        return False
    reason = _load(path)
    if not isinstance(reason, str):
        return True
    if damaged == "move":
        dst = move_aside(path)
        if dst is not None:
            _warn(path, f"is damaged ({reason}): moved to {dst.name}; recomputing it")
    elif damaged == "warn":
        _warn(path, f"is damaged ({reason}): counted as not computed; `pfbench run` moves it aside and recomputes it")
    return False


def read_path(path: Path) -> pd.DataFrame:
    """Rows from a results folder (see ``read_results``) or from one Parquet file (e.g. a committed baseline).

    Raises:
        PfbenchError: ``path`` is a file that is not a readable Parquet file.
    """
    path = Path(path)
    if path.is_dir():
        return read_results(path)
    df = _load(path)
    if isinstance(df, str):
        raise PfbenchError(f"{path} is damaged ({df}): restore it, or regenerate it (e.g. `pfbench baseline`)")
    return df


def write_frame(path: Path, df: pd.DataFrame) -> Path:
    """Writes a derived table (e.g. a committed baseline) atomically, as is: no provenance added, no torch."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        df.to_parquet(tmp, index=False)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        _umask = os.umask(0)
        os.umask(_umask)
        os.chmod(tmp, 0o666 & ~_umask)  # mkstemp makes 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
