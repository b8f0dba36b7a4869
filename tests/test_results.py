"""Parquet rows: schema, atomic writes, reading files written before a schema addition."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from pfbench import PfbenchError
from pfbench.results import COLUMNS, Row, has_part, metric_rows, read_path, read_results, to_frame, write_rows


def test_roundtrip_and_schema(tmp_path: Path) -> None:
    write_rows(tmp_path / "a.parquet", [{"suite": "s", "metric": "fd", "value": 1.5, "nfe_budget": 8}])
    write_rows(tmp_path / "b.parquet", [{"suite": "s", "metric": "acc", "value": 0.5, "higher_is_better": True}])
    df = read_results(tmp_path)
    assert list(df.columns)[: len(COLUMNS)] == list(COLUMNS)
    assert sorted(df["metric"]) == ["acc", "fd"]
    assert df.loc[df.metric == "fd", "nfe_budget"].iloc[0] == 8
    assert df["torch_version"].notna().all() and df["pfbench_version"].notna().all()


def test_rows_and_mappings_make_the_same_frame() -> None:
    """A ``Row`` writes exactly what the equivalent column mapping writes (committed results stay comparable)."""
    base = {"suite": "s", "part": "cell-x", "kind": "cell", "model": "pf", "model_id": "ab" * 32, "decoder": None,
            "sampler": "euler_pf", "sampler_args": "{}", "nfe_budget": 8, "nfe_used": 8, "forwards": 8, "gflops": 1.5,
            "wall_s": 0.25, "seed": 0, "num_samples": 40, "cfg_scale": 1.0, "cfg_interval": None, "variant": "",
            "train_timesteps": "ltg", "ref_id": "embedded", "metric_args": '{"resize": "tf1x"}'}
    values = {"fd_embedded": (12.5, False), "class_acc": (0.75, True)}
    dicts = [base | {"metric": k, "value": v, "higher_is_better": h} for k, (v, h) in values.items()]
    rows = metric_rows(base, values)
    assert all(isinstance(r, Row) for r in rows) and [r.metric for r in rows] == list(values)
    assert to_frame(rows).equals(to_frame(dicts))
    assert list(to_frame(rows).columns) == list(COLUMNS)


def test_unknown_columns_are_refused(tmp_path: Path) -> None:
    with pytest.raises(PfbenchError, match="unknown column 'metrc'; did you mean 'metric'"):
        write_rows(tmp_path / "x.parquet", [{"metrc": "fd", "value": 1.0}])
    with pytest.raises(TypeError, match="nfe"):
        Row(suite="s", part="p", kind="cell", model="m", metric="fd", value=1.0, higher_is_better=False, nfe=8)  # type: ignore[call-arg]
    assert not list(tmp_path.iterdir())


def test_old_files_without_new_columns_still_read(tmp_path: Path) -> None:
    """A part written before optional columns (and the identity metadata) existed: its rows are checked instead."""
    old = {"suite": ["old"], "part": ["old"], "kind": ["cell"], "model": ["pf"], "metric": ["fd"], "value": [2.0],
           "higher_is_better": [False]}
    pd.DataFrame(old).to_parquet(tmp_path / "old.parquet")
    df = read_results(tmp_path)
    assert df["value"].iloc[0] == 2.0 and pd.isna(df["gflops"].iloc[0])
    assert has_part(tmp_path, "old", suite="old") and not has_part(tmp_path, "old", suite="new", damaged="quiet")


def test_failed_write_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk: one line naming the file, and nothing partial left behind."""
    import pyarrow.parquet as pq

    def boom(table: object, where: object, *a: object, **k: object) -> None:
        Path(where).write_bytes(b"partial")  # type: ignore[arg-type]
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pq, "write_table", boom)
    with pytest.raises(PfbenchError, match=r"^no space left on device writing .*x\.parquet: free some space"):
        write_rows(tmp_path / "x.parquet", [{"metric": "fd", "value": 1.0}])
    assert list(tmp_path.iterdir()) == []


def _damaged(folder: Path) -> dict[str, bytes]:
    """A good part plus one damaged file per kind of damage seen in practice; returns the damaged bytes."""
    write_rows(folder / "good.parquet", [{"suite": "s", "metric": "fd", "value": 1.0}])
    write_rows(folder / "model.parquet", [{"suite": "s", "metric": "acc", "value": 0.5}])
    data = (folder / "model.parquet").read_bytes()
    flipped = bytearray(data)
    flipped[len(data) - 60: len(data) - 40] = b"\xff" * 20  # footer metadata garbled, magic bytes intact
    bad = {"empty": b"", "truncated": data[: len(data) // 2], "junk": b"not parquet at all", "flipped": bytes(flipped)}
    (folder / "model.parquet").unlink()
    for name, raw in bad.items():
        (folder / f"{name}.parquet").write_bytes(raw)
    return bad


def test_damaged_parts_are_skipped_with_one_line_each(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = _damaged(tmp_path)
    df = read_results(tmp_path)
    assert list(df["metric"]) == ["fd"]  # only the good part; no ArrowInvalid traceback
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == len(bad), err
    for name in bad:
        assert sum(f"{name}.parquet" in line and "damaged" in line for line in err) == 1, err
    assert "0 bytes" in next(line for line in err if "empty.parquet" in line)
    assert all(p.is_file() for p in tmp_path.glob("*.parquet")) and len(list(tmp_path.glob("*.parquet"))) == 5
    read_results(tmp_path)
    assert capsys.readouterr().err == ""  # warned once per file and process


def test_has_part_counts_damaged_parts_as_not_done(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = _damaged(tmp_path)
    assert has_part(tmp_path, "good") and not has_part(tmp_path, "missing")
    for name in bad:
        assert not has_part(tmp_path, name, damaged="quiet")
    assert capsys.readouterr().err == ""
    for name in bad:  # plan: a warning, the file stays
        assert not has_part(tmp_path, name)
        assert (tmp_path / f"{name}.parquet").is_file()
    assert len(capsys.readouterr().err.strip().splitlines()) == len(bad)
    for name, raw in bad.items():  # run: moved aside (kept for inspection), one line saying so
        assert not has_part(tmp_path, name, damaged="move")
        assert not (tmp_path / f"{name}.parquet").exists()
        assert (tmp_path / f"{name}.parquet.corrupt").read_bytes() == raw
    err = capsys.readouterr().err
    assert err.count("moved to") == len(bad) and "empty.parquet.corrupt" in err
    (tmp_path / "empty.parquet").write_bytes(b"")  # damaged again: the first .corrupt file is kept
    assert not has_part(tmp_path, "empty", damaged="move")
    assert (tmp_path / "empty.parquet.corrupt.1").is_file() and (tmp_path / "empty.parquet.corrupt").is_file()
    assert list(read_results(tmp_path)["metric"]) == ["fd"]  # .corrupt files are not results


def test_read_path_of_one_damaged_file_is_a_one_line_error(tmp_path: Path) -> None:
    _damaged(tmp_path)
    assert list(read_path(tmp_path / "good.parquet")["metric"]) == ["fd"]
    with pytest.raises(PfbenchError, match="truncated.parquet is damaged"):
        read_path(tmp_path / "truncated.parquet")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs a non-root POSIX user")
def test_unreadable_file_is_an_error_not_damage(tmp_path: Path) -> None:
    write_rows(tmp_path / "locked.parquet", [{"metric": "fd", "value": 1.0}])
    (tmp_path / "locked.parquet").chmod(0)
    with pytest.raises(PermissionError):
        has_part(tmp_path, "locked", damaged="move")
    assert (tmp_path / "locked.parquet").exists()  # a permission problem never moves a good file aside
