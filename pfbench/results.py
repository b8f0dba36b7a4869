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

A readable part whose content does not match its name, its suite or the schema is damaged too (``identity``):
every part carries its identity in the file's key-value metadata (``pfbench.suite``, ``pfbench.kind``,
``pfbench.part``, ``pfbench.schema_version``), and its rows say the same in their ``suite`` and ``part``
columns (parts written before the metadata existed are checked on their rows alone). A part of another suite
is moved aside to ``<name>.foreign`` instead of ``.corrupt``; nothing from another suite is read as this one's.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import os
import platform
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console

from pfbench import PfbenchError, __version__
from pfbench.io import atomic_path

SCHEMA_VERSION = 3  # 2: + decoder; 3: + steps
Kind = Literal["cell", "curve", "diagnostic", "reference"]


def _col(dtype: str, *, required: bool = False) -> Any:
    """A ``Row`` field: its pandas dtype in the metadata; optional columns default to None (NA)."""
    return field(metadata={"dtype": dtype}) if required else field(default=None, metadata={"dtype": dtype})


@dataclass(frozen=True, kw_only=True)
class Row:
    """One result row: one metric value of one unit of work. The fields are the Parquet columns, in order.

    Every row pfbench writes is built as a ``Row`` (a misspelt column is a TypeError where it is built, not a
    silent extra column). The provenance fields (``pfbench_version`` .. ``schema_version``) are left None by
    producers: ``write_rows`` stamps this process's ``provenance()`` into them.
    """

    suite: str = _col("string", required=True)
    part: str = _col("string", required=True)  # file the row came from: cell key or diagnostic name
    kind: Kind = _col("string", required=True)
    model: str = _col("string", required=True)
    model_id: str | None = _col("string")  # sha256 of a given checkpoint file, or of the weights of one trained in the suite
    decoder: str | None = _col("string")  # latent models: "<vae name>@<sha256[:16]>" of the decoder; None for pixel models
    train_timesteps: str | None = _col("string")  # training timestep sampler of the model (docs/protocol.md §4), when known
    train_step: int | None = _col("Int64")
    train_gflops: float | None = _col("Float64")  # curve rows: analytic training GFLOPs up to train_step (nets.flops.train_flops)
    train_wall_s: float | None = _col("Float64")  # curve rows: training seconds up to train_step (from the run's log.jsonl)
    sampler: str | None = _col("string")
    sampler_args: str | None = _col("string")  # JSON
    variant: str | None = _col("string")  # JSON of the suite-level sampler params and CFG interval that distinguish this cell ("" = defaults)
    nfe_budget: int | None = _col("Int64")  # NA for a cell run at a fixed step count (steps set by the suite)
    steps: int | None = _col("Int64")  # outer sampling steps actually run (set, or the most the NFE budget allows)
    nfe_used: int | None = _col("Int64")
    forwards: int | None = _col("Int64")
    gflops: float | None = _col("Float64")  # per sample, summed over calls
    wall_s: float | None = _col("Float64")
    seed: int | None = _col("Int64")
    num_samples: int | None = _col("Int64")
    cfg_scale: float | None = _col("Float64")
    cfg_interval: str | None = _col("string")  # JSON [t_lo, t_hi] or None (guidance at every step)
    metric: str = _col("string", required=True)
    value: float = _col("Float64", required=True)
    higher_is_better: bool = _col("boolean", required=True)
    ref_id: str | None = _col("string")  # reference set the metric compares against
    metric_args: str | None = _col("string")  # JSON: how the metric was computed (e.g. Inception resize mode)
    pfbench_version: str | None = _col("string")
    git_sha: str | None = _col("string")
    torch_version: str | None = _col("string")
    hardware: str | None = _col("string")
    schema_version: int | None = _col("Int64")

    def to_dict(self) -> dict[str, Any]:
        """The columns that are set (None fields are left out: they read back as NA)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


def metric_rows(base: Mapping[str, Any], values: Mapping[str, tuple[float, bool]]) -> list[Row]:
    """One ``Row`` per metric, in the order of ``values``.

    Args:
        base: the columns the rows share (suite, part, kind, model, ...); a misspelt column is a TypeError.
        values: metric name -> (value, higher_is_better).
    """
    return [Row(**base, metric=k, value=v, higher_is_better=hib) for k, (v, hib) in values.items()]


# Documented columns and their pandas dtypes (README "Results schema"), in file order; readers fill absent
# columns with NA so older files still load.
COLUMNS: dict[str, str] = {f.name: f.metadata["dtype"] for f in dataclasses.fields(Row)}


@functools.cache
def provenance() -> dict[str, Any]:
    """Version, git and hardware fields shared by every row written by this process."""
    import torch  # here, not at the top: report and compare read results and never import torch

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
        "pfbench_version": __version__,
        "git_sha": sha,
        "torch_version": torch.__version__,
        "hardware": hw,
        "schema_version": SCHEMA_VERSION,
    }


def _checked(row: Row | Mapping[str, Any]) -> dict[str, Any]:
    """A row as a column dict; a mapping with a key that is not a column is a one-line error naming it."""
    if isinstance(row, Row):
        return row.to_dict()
    unknown = [k for k in row if k not in COLUMNS]
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(COLUMNS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise PfbenchError(f"result row has unknown column {unknown[0]!r}{hint} (columns: pfbench.results.Row)")
    return dict(row)


def to_frame(rows: Iterable[Row | Mapping[str, Any]]) -> pd.DataFrame:
    """Rows -> DataFrame with the documented columns and types, provenance filled in where a row has none.

    Raises:
        PfbenchError: a mapping row has a key that is not a column.
    """
    return _coerce(pd.DataFrame([dict(provenance()) | _checked(r) for r in rows]))


def _coerce(df: pd.DataFrame) -> pd.DataFrame:
    """Adds missing documented columns as NA and applies the documented types. Columns that are not documented
    (only in files from other tools: pfbench never writes one) are kept last, so reading never loses data."""
    for col, dtype in COLUMNS.items():
        if col not in df:
            df[col] = pd.NA
        df[col] = df[col].astype(dtype)  # type: ignore[call-overload]
    if df["steps"].isna().any() and df["sampler_args"].notna().any():  # rows written before schema 3
        df["steps"] = df["steps"].fillna(pd.Series([_steps_arg(a) for a in df["sampler_args"]], index=df.index,
                                                   dtype="Int64"))
    return df[list(COLUMNS) + [c for c in df.columns if c not in COLUMNS]]


def _steps_arg(args: Any) -> int | None:
    """``steps`` of a ``sampler_args`` JSON text (every pfbench sampler records it), or None."""
    if not isinstance(args, str):
        return None
    try:
        steps = json.loads(args).get("steps")
    except (ValueError, AttributeError):
        return None
    return steps if isinstance(steps, int) and not isinstance(steps, bool) else None


def write_rows(path: Path, rows: Iterable[Row | Mapping[str, Any]]) -> Path:
    """Writes rows (``Row``s; mappings of column -> value are checked) to ``path`` atomically, as result part
    ``path.stem``: rows without a ``part`` get it, and the file's metadata records its identity (``identity``).

    Raises:
        PfbenchError: a mapping row has a key that is not a column.
    """
    path = Path(path)
    df = to_frame(rows)
    df["part"] = df["part"].fillna(path.stem)
    suites, kinds = sorted(set(df["suite"].dropna())), sorted(set(df["kind"].dropna()))
    meta = {"suite": ",".join(suites), "kind": ",".join(kinds), "part": path.stem,
            "schema_version": str(SCHEMA_VERSION)}
    table = pa.Table.from_pandas(df, preserve_index=False)
    table = table.replace_schema_metadata((table.schema.metadata or {})
                                          | {f"{_META}{k}".encode(): v.encode() for k, v in meta.items()})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


_MAGIC = b"PAR1"  # first and last 4 bytes of every Parquet file
_META = "pfbench."  # prefix of the identity keys in a part's Parquet key-value metadata
REQUIRED: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Row) if f.default is dataclasses.MISSING)
_stderr = Console(stderr=True, highlight=False, soft_wrap=True)
_warned: set[tuple[Path, str]] = set()  # one warning per file and action per process (readers run repeatedly)


@dataclass(frozen=True)
class _Loaded:
    """One readable Parquet file: its rows (as stored), its identity metadata (empty for a legacy part)."""

    rows: pd.DataFrame
    meta: dict[str, str]


def _load(path: Path) -> _Loaded | str:
    """The rows of one Parquet file, or why the file is damaged.

    Raises:
        OSError: the file cannot be read at all (permissions, I/O error): not damage, so it is not moved aside.
    """
    data = path.read_bytes()  # result parts are small (a few rows); reading them whole checks every byte
    if not data:
        return "empty file (0 bytes)"
    if len(data) < 12 or data[:4] != _MAGIC or data[-4:] != _MAGIC:
        return f"truncated or not a Parquet file ({len(data)} bytes, no PAR1 header/footer)"
    try:
        table = pq.read_table(pa.BufferReader(data))
        meta = {k.decode()[len(_META):]: v.decode() for k, v in (table.schema.metadata or {}).items()
                if k.startswith(_META.encode())}
        return _Loaded(table.to_pandas(), meta)
    except Exception as err:  # whatever pyarrow/pandas raise on these bytes (ArrowInvalid, OSError, ...) is damage
        return "unreadable: " + (str(err).strip().splitlines() or [type(err).__name__])[0][:200]


def _claimed_suite(loaded: _Loaded) -> str | None:
    """The suite a part says it belongs to (metadata, else its rows' one ``suite``), or None."""
    if loaded.meta.get("suite"):
        return loaded.meta["suite"]
    suites = set(loaded.rows["suite"].dropna()) if "suite" in loaded.rows else set()
    return str(next(iter(suites))) if len(suites) == 1 else None


def identity(path: Path, loaded: _Loaded, suite: str | None) -> tuple[str, str] | None:
    """Why a readable part's content does not match its name, its suite or the schema, or None when it does.

    Returns ``(what, suffix)``: the reason in words and the suffix a runner moves it aside with (``.foreign`` for
    a part of another suite, else ``.corrupt``).

    Args:
        path: the part's file (its stem is the part name). loaded: its rows and metadata.
        suite: the suite it must belong to (None: any, e.g. a loose file); every row's ``part`` must then be
            the file's stem.
    """
    rows, meta = loaded.rows, loaded.meta
    missing = [c for c in REQUIRED if c not in rows]
    other = [c for c in rows if c not in COLUMNS]
    if missing or other:
        what = "; ".join(x for x in (missing and f"missing column(s) {', '.join(map(str, missing))}",
                                     other and f"column(s) not in the schema: {', '.join(map(str, other[:5]))}") if x)
        return f"does not match the result schema ({what})", ".corrupt"
    row_suites = {str(x) for x in rows["suite"].dropna()}
    if suite is not None and (rows["suite"].isna().any() or row_suites - {suite}
                              or meta.get("suite", suite) != suite):
        theirs = meta.get("suite") or ",".join(sorted(row_suites)) or "no suite"
        return f"belongs to another suite ({theirs}, not {suite})", ".foreign"
    if meta:
        if meta.get("part") != path.stem:
            return f"is part {meta.get('part')!r} by its metadata, not {path.stem!r} (renamed or copied)", ".corrupt"
        if meta.get("suite") and row_suites - {meta["suite"]}:
            return f"rows of suite(s) {', '.join(sorted(row_suites))} in a part of suite {meta['suite']}", ".corrupt"
        kinds = {str(x) for x in rows["kind"].dropna()}
        if kinds - set(meta.get("kind", "").split(",")):
            return f"rows of kind {', '.join(sorted(kinds))} in a part of kind {meta.get('kind')!r}", ".corrupt"
        version = meta.get("schema_version", "")
        if not version.isdigit() or int(version) > SCHEMA_VERSION:
            return f"has schema version {version!r} (this pfbench reads up to {SCHEMA_VERSION})", ".corrupt"
    if suite is not None and (rows["part"].isna().any() or set(rows["part"].dropna()) - {path.stem}):
        return f"holds rows of part(s) {', '.join(sorted(map(str, set(rows['part'].dropna()))))}, not {path.stem}", ".corrupt"
    return None


def _warn(path: Path, what: str) -> None:
    if (path, what) not in _warned:
        _warned.add((path, what))
        _stderr.print(f"[yellow]warning:[/] {path} {what}")


def move_aside(path: Path, suffix: str = ".corrupt") -> Path | None:
    """Renames a damaged part to ``<name><suffix>`` (``<suffix>.1``, ... if taken), keeping it for inspection.

    Returns None when the file is already gone (another runner moved it first).
    """
    dst, n = path.with_name(path.name + suffix), 0
    while dst.exists():
        n += 1
        dst = path.with_name(f"{path.name}{suffix}.{n}")
    try:
        os.replace(path, dst)
    except FileNotFoundError:
        return None
    return dst


def read_results(folder: Path, suite: str | None = None) -> pd.DataFrame:
    """All rows under ``folder`` (recursively), old files upgraded to the current columns.

    Damaged files, and parts whose content does not match their name, suite or the schema (``identity``), are
    skipped with a one-line warning each (see the module docstring).

    Args:
        folder: a results folder (``results/<suite>``) or a folder of them.
        suite: the suite every part must belong to. None: each folder's suite is inferred, as its own name when
            one of its parts claims it, else the suite most of its parts claim.
    """
    files = sorted(p for p in Path(folder).rglob("*.parquet") if not p.name.startswith("."))
    loaded: dict[Path, _Loaded] = {}
    for f in files:
        got = _load(f)
        if isinstance(got, str):
            _warn(f, f"is damaged ({got}): skipped; `pfbench run` moves it aside and recomputes it")
        else:
            loaded[f] = got
    frames: list[pd.DataFrame] = []
    suites: dict[Path, str | None] = {}
    for f, got in loaded.items():
        if suite is None and f.parent not in suites:
            suites[f.parent] = _folder_suite(f.parent, loaded)
        expected = suite if suite is not None else suites[f.parent]
        problem = identity(f, got, expected)
        if problem is not None:
            _warn(f, f"{problem[0]}: skipped; `pfbench run` moves it aside and recomputes it")
        else:
            frames.append(_coerce(got.rows))
    if not frames:
        return to_frame([]).iloc[0:0]
    return _coerce(pd.concat(frames, ignore_index=True))


def _folder_suite(folder: Path, loaded: Mapping[Path, _Loaded]) -> str | None:
    """The suite of a results folder whose suite is not given: its name when one of its parts claims it, else
    the suite most of its parts claim (None when none does)."""
    claims = [c for f, got in loaded.items() if f.parent == folder and (c := _claimed_suite(got)) is not None]
    if folder.name in claims or not claims:
        return folder.name if claims else None
    return max(sorted(set(claims)), key=claims.count)


def has_part(folder: Path, part: str, *, suite: str | None = None,
             damaged: Literal["warn", "move", "quiet"] = "warn") -> bool:
    """Whether ``folder/<part>.parquet`` holds a finished, readable unit of work of ``suite`` (``identity``).

    Args:
        folder: a results folder (``results/<suite>``).
        part: the unit's name (file stem).
        suite: the suite the part must belong to (None: not checked).
        damaged: what to do with a damaged file (it counts as not finished in every case): ``"warn"`` one
            line on stderr; ``"move"`` also move it aside to ``<name>.corrupt`` (only the folder's runner, while
            holding the part's lock, so it never moves a file another runner has just rewritten); ``"quiet"``
            nothing.
    """
    path = Path(folder) / f"{part}.parquet"
    if not path.is_file():
        return False
    got, suffix = _load(path), ".corrupt"
    if isinstance(got, str):
        reason = f"is damaged ({got})"
    else:
        problem = identity(path, got, suite)
        if problem is None:
            return True
        reason, suffix = problem
    if damaged == "move":
        dst = move_aside(path, suffix)
        if dst is not None:
            _warn(path, f"{reason}: moved to {dst.name}; recomputing it")
    elif damaged == "warn":
        _warn(path, f"{reason}: counted as not computed; `pfbench run` moves it aside and recomputes it")
    return False


def read_path(path: Path) -> pd.DataFrame:
    """Rows from a results folder (see ``read_results``) or from one Parquet file (e.g. a committed baseline).

    Raises:
        PfbenchError: ``path`` is a file that is not a readable Parquet file.
    """
    path = Path(path)
    if path.is_dir():
        return read_results(path)
    got = _load(path)
    if isinstance(got, str):
        raise PfbenchError(f"{path} is damaged ({got}): restore it, or regenerate it (e.g. `pfbench baseline`)")
    return _coerce(got.rows)


def write_frame(path: Path, df: pd.DataFrame) -> Path:
    """Writes a derived table (e.g. a committed baseline) atomically, as is: no provenance added, no torch."""
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)
    return Path(path)
