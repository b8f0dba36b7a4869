"""Parquet rows: schema, atomic writes, reading files written before a schema addition."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pfbench.results import COLUMNS, read_results, write_rows


def test_roundtrip_and_schema(tmp_path: Path) -> None:
    write_rows(tmp_path / "a.parquet", [{"suite": "s", "metric": "fd", "value": 1.5, "nfe_budget": 8}])
    write_rows(tmp_path / "b.parquet", [{"suite": "s", "metric": "acc", "value": 0.5, "higher_is_better": True}])
    df = read_results(tmp_path)
    assert list(df.columns)[: len(COLUMNS)] == list(COLUMNS)
    assert sorted(df["metric"]) == ["acc", "fd"]
    assert df.loc[df.metric == "fd", "nfe_budget"].iloc[0] == 8
    assert df["torch_version"].notna().all() and df["pfbench_version"].notna().all()


def test_old_files_without_new_columns_still_read(tmp_path: Path) -> None:
    pd.DataFrame({"suite": ["old"], "metric": ["fd"], "value": [2.0]}).to_parquet(tmp_path / "old.parquet")
    df = read_results(tmp_path)
    assert df["value"].iloc[0] == 2.0 and pd.isna(df["gflops"].iloc[0])


def test_failed_write_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(self: pd.DataFrame, *a: object, **k: object) -> None:
        Path(a[0]).write_bytes(b"partial")  # type: ignore[arg-type]
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", boom)
    with pytest.raises(OSError):
        write_rows(tmp_path / "x.parquet", [{"metric": "fd", "value": 1.0}])
    assert list(tmp_path.iterdir()) == []
