"""Result rows <-> Parquet. The only module that touches Parquet; every write is atomic.

Layout: ``results/<suite>/<part>.parquet``, one file per finished unit of work (a cell, a diagnostic), so a
killed run loses at most the unit in flight and never leaves a partial file.
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

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


def read_results(folder: Path) -> pd.DataFrame:
    """All rows under ``folder`` (recursively), old files upgraded to the current columns."""
    files = sorted(p for p in Path(folder).rglob("*.parquet") if not p.name.startswith("."))
    if not files:
        return to_frame([]).iloc[0:0]
    return _coerce(pd.concat([_coerce(pd.read_parquet(f)) for f in files], ignore_index=True))


def has_part(folder: Path, part: str) -> bool:
    return (Path(folder) / f"{part}.parquet").is_file()


def read_path(path: Path) -> pd.DataFrame:
    """Rows from a results folder (see ``read_results``) or from one Parquet file (e.g. a committed baseline)."""
    path = Path(path)
    if path.is_dir():
        return read_results(path)
    return _coerce(pd.read_parquet(path))


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
