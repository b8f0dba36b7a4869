"""Published numbers in a suite (``expected:``): strict parsing, and the report's published-vs-measured table.

Also the TF32 sampling switch (``eval.precision: tf32``), which the ImageNet suite uses as the reference does.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pfbench import PfbenchError
from pfbench.report.html import report
from pfbench.report.paper import EXPECTED_FILE, published_table, read_expected, write_expected
from pfbench.results import read_results, write_rows
from pfbench.suite.parse import load_suite
from pfbench.suite.runner import Runner
from pfbench.suite.validate import validate

SUITE = """
name: pub
models:
  pf: {checkpoint: /nonexistent.pt}
grid:
  - models: [pf]
    samplers: [euler_pf, {name: dual_loop, params: {p: 0.4, n_inner: 4}}]
sweep: {nfe: [8]}
metrics: [fid, is]
expected:
  - {model: pf, sampler: euler_pf, steps: 8, metric: fid, value: 27.9, source: "paper Table 1"}
"""


def _suite(tmp_path: Path, text: str = SUITE, overrides: list[str] | None = None):  # noqa: ANN202
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return load_suite(path, overrides)


def test_expected_entries_are_parsed_with_defaults(tmp_path: Path) -> None:
    (e,) = _suite(tmp_path).expected
    assert (e.model, e.sampler, e.steps, e.nfe, e.metric, e.value, e.source, e.cfg_scale) == (
        "pf", "euler_pf", 8, None, "fid", 27.9, "paper Table 1", 1.0)
    assert not _suite(tmp_path, SUITE.split("expected:")[0]).expected  # optional


@pytest.mark.parametrize("override,message", [
    ("expected.0.sampler=eulr_pf", "expected[0].sampler: unknown sampler 'eulr_pf'"),
    ("expected.0.metric=recall", "expected[0].metric: 'recall' is not a value of the suite's metrics (the suite's "
                               "metrics give: fid, is)"),
    ("expected.0.metric=fd", "did you mean 'fid'?"),
    ("+expected.0.nfe=8", "expected[0]: give exactly one of 'steps' (outer sampling steps) or 'nfe'"),
    ("expected.0.steps=0", "expected[0].steps = 0: must be >= 1"),
    ("expected.0.value=1e999", "expected[0].value = inf: must be a finite number"),
    ("expected.0.source=' '", "expected[0].source: say where the number is published"),
    ("+expected.0.tabel=2", "unknown key 'expected[0].tabel'"),
    ("expected.0.value=high", "expected[0].value: expected float"),
])
def test_bad_expected_entries_are_one_line_errors(tmp_path: Path, override: str, message: str) -> None:
    with pytest.raises(PfbenchError, match=None) as err:
        _suite(tmp_path, overrides=[override])
    assert message in str(err.value) and "\n" not in str(err.value), str(err.value)


def _cell(model: str, sampler: str, steps: int, nfe: int, seed: int, fid: float, cfg: float = 1.0,
          args: dict[str, object] | None = None, n: int = 50_000) -> list[dict[str, object]]:
    base = {"suite": "pub", "part": f"cell-{model}-{sampler}-{nfe}-{seed}-{cfg}", "kind": "cell", "model": model,
            "sampler": sampler, "sampler_args": json.dumps({"steps": steps, **(args or {})}), "variant": "",
            "nfe_budget": nfe, "nfe_used": nfe, "seed": seed, "num_samples": n, "cfg_scale": cfg}
    return [base | {"metric": "fid", "value": fid, "higher_is_better": False},
            base | {"metric": "is", "value": 100.0 + fid, "higher_is_better": True}]


def test_report_shows_published_beside_measured(tmp_path: Path) -> None:
    res = tmp_path / "results" / "pub"
    cells = [_cell("pf", "euler_pf", 100, 100, 0, 28.5), _cell("pf", "euler_pf", 100, 100, 1, 28.9),  # 2 seeds
             _cell("pf", "euler_pf", 100, 100, 0, 9.0, cfg=4.0),  # guided: not the unguided paper number
             _cell("pf", "dual_loop", 100, 400, 0, 25.0, args={"p": 0.4}),  # 100 steps = 400 calls
             _cell("pf", "dual_loop", 25, 100, 0, 27.5, args={"p": 0.4}),  # the same budget
             _cell("pf", "look_ahead", 51, 100, 0, 26.0, n=4),
             [r | {"cfg_scale": None, "part": "cell-old"} for r in _cell("pf", "look_ahead", 51, 100, 1, 1.0)]]
    for rows in cells:
        write_rows(res / f"{rows[0]['part']}.parquet", rows)
    entries = [{"model": "pf", "sampler": "euler_pf", "steps": 100, "metric": "fid", "value": 27.9, "source": "T1"},
               {"model": "pf", "sampler": "dual_loop", "steps": 100, "metric": "fid", "value": 26.0, "source": "T1"},
               {"model": "pf", "sampler": "dual_loop", "nfe": 100, "metric": "fid", "value": 26.5, "source": "T9"},
               {"model": "pf", "sampler": "look_ahead", "steps": 51, "metric": "fid", "value": 24.2, "source": "T1"},
               {"model": "sit", "sampler": "euler", "steps": 100, "metric": "fid", "value": 33.0, "source": "T1"}]
    assert write_expected(res, entries) == res / EXPECTED_FILE
    assert read_expected(res)[1]["steps"] == 100 and read_expected(res)[2]["steps"] is None
    table = published_table(read_results(res), read_expected(res))
    rows = {(r[1], r[2]): r for r in table.rows}
    assert rows[("euler_pf", "100 steps")][4:8] == ("27.9", "28.7", "+0.8", "50000 × 2 cells")  # mean of 2 seeds
    assert rows[("dual_loop", "100 steps")][5:7] == ("25", "-1")  # the 100-step cell, not the 25-step one
    assert rows[("dual_loop", "NFE 100")][5:7] == ("27.5", "+1")
    assert rows[("look_ahead", "51 steps")][5:8] == ("26", "+1.8", "4 × 1 cell")
    assert rows[("euler", "100 steps")][5:7] == ("not measured", "—")
    index = report("pub", tmp_path / "results", tmp_path / "reports").read_text()
    section = index.split("## Published vs measured")[1].split("\n## ")[0]
    assert "| pf | euler_pf | 100 steps | fid | 27.9 | 28.7 | +0.8 | 50000 × 2 cells | T1 |" in section, section
    assert "not measured" in section and "Δ = measured − published" in section
    assert index.index("## Published vs measured") < index.index("## Results")
    write_expected(res, [])  # a suite without published numbers: no stale table
    assert not (res / EXPECTED_FILE).exists()
    assert "Published vs measured" not in report("pub", tmp_path / "results", tmp_path / "reports").read_text()
    (res / EXPECTED_FILE).write_text("{")
    with pytest.raises(PfbenchError, match="expected.json: not valid JSON"):
        read_expected(res)


def test_tf32_is_a_cuda_setting_in_the_cell_key(tmp_path: Path) -> None:
    spec = _suite(tmp_path, overrides=["+eval.precision=tf32", "+eval.device=cuda"])
    assert spec.eval.numerics() == "+tf32"
    with pytest.raises(PfbenchError, match=r"eval.precision = 'tf32': needs eval.device=cuda"):
        validate(_suite(tmp_path, overrides=["+eval.precision=tf32"]))
    with pytest.raises(PfbenchError, match=r"eval.precision = 'fp16': must be fp32, tf32 or bf16"):
        validate(_suite(tmp_path, overrides=["+eval.precision=fp16", "+eval.device=cuda"]))
    runner = Runner(spec, tmp_path / "r", tmp_path / "rep", tmp_path / "runs", progress=False)
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with runner.numerics():
            assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
            assert not torch.is_autocast_enabled("cuda")
        assert not torch.backends.cuda.matmul.allow_tf32  # restored
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_sample_grid_with_fewer_images_than_columns(tmp_path: Path) -> None:
    """A few-sample run of a 1000-class suite (the rehearsal) draws what it has instead of failing."""
    import numpy as np

    from pfbench.report.images import sample_grid

    images = np.zeros((2, 8, 8, 3), np.uint8)
    out = sample_grid(tmp_path / "g.png", [("pf_b2", images, np.array([3, 917]))], [f"c{i}" for i in range(1000)])
    assert out.is_file() and out.stat().st_size > 0
