"""Inception metric options (issue 9.6): unverified weights, KID subset size, IS sample order, and their record."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import Tensor
from typer.testing import CliRunner

from pfbench import PfbenchError
from pfbench.data.embedded import EmbeddedSpec, generate
from pfbench.encoders.base import FeatureContext
from pfbench.evaluate.metric_pass import evaluate
from pfbench.metrics.options import metric_args
from pfbench.types import quantize
from pfbench.weights import KNOWN_WEIGHTS, file_sha256

N, REF = 60, 300


class CountingExtractor:
    """Deterministic stand-in for Inception: pool (12-d), logits (10), spatial (6); counts the rows it sees."""

    keys = ("pool", "logits", "spatial")

    def __init__(self) -> None:
        self.rows = 0
        g = torch.Generator().manual_seed(0)
        self.w_logits, self.w_spatial = torch.randn(12, 10, generator=g) * 40, torch.randn(12, 6, generator=g)

    def fingerprint(self) -> dict[str, str]:
        return {"extractor": "counting-options-test"}

    def __call__(self, images: Tensor) -> dict[str, Tensor]:
        self.rows += images.shape[0]
        pool = torch.nn.functional.avg_pool2d(images.double() / 255.0, images.shape[-1] // 2).flatten(1)  # (B, 12)
        return {"pool": pool.float(), "logits": ((pool - 0.4) @ self.w_logits.double()).float(),
                "spatial": torch.tanh(pool @ self.w_spatial.double()).float()}  # fmt: skip


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ADM-style .npz of N embedded images (16×16) with labels."""
    b = generate(EmbeddedSpec(resolution=16, split="train", size=N))
    path = tmp_path_factory.mktemp("options") / "samples.npz"
    np.savez(path, arr_0=quantize(b.images).numpy().transpose(0, 2, 3, 1), arr_1=b.labels.numpy())
    return path


# ------------------------------------------------------------------ KID subset size


def test_kid_subset_size_is_an_option_checked_before_the_feature_pass(samples: Path, tmp_path: Path) -> None:
    from torch_fidelity.metric_kid import kid_features_to_metric

    ext = CountingExtractor()
    kw = {"context": FeatureContext(batch_size=16), "ref_size": REF, "cache_dir": tmp_path, "extractor": ext}
    with pytest.raises(PfbenchError, match=r"kid_subset_size: 1000 exceeds the 60 generated and 300 reference "
                                           r"images; lower it to at most 60 \(pfbench eval --kid-subset-size") as info:  # fmt: skip
        evaluate(samples, "embedded", ["fid", "kid"], **kw)  # type: ignore[arg-type]
    assert ext.rows == 0 and "\n" not in str(info.value)  # refused before any image went through the network
    with pytest.raises(PfbenchError, match="exceeds the 30 reference images; lower it to at most 30"):
        evaluate(samples, "embedded", ["kid"], kid_subset_size=40, **{**kw, "ref_size": 30})  # type: ignore[arg-type]
    assert ext.rows == 0
    got = evaluate(samples, "embedded", ["kid"], kid_subset_size=40, **kw)  # type: ignore[arg-type]
    fake = ext(torch.from_numpy(np.load(samples)["arr_0"]).permute(0, 3, 1, 2))["pool"]
    real = ext(quantize(generate(EmbeddedSpec(resolution=16, split="test", size=REF)).images))["pool"]
    want = kid_features_to_metric(fake, real, kid_subsets=100, kid_subset_size=40, rng_seed=2020, verbose=False)
    assert got["kid"] == pytest.approx(want["kernel_inception_distance_mean"], rel=1e-9)


# ------------------------------------------------------------------ IS order


def test_is_order_file_by_default_and_torch_fidelity_shuffle_selectable(samples: Path, tmp_path: Path) -> None:
    from torch_fidelity.metric_isc import isc_features_to_metric

    ext = CountingExtractor()
    kw = {"context": FeatureContext(batch_size=16), "cache_dir": tmp_path, "extractor": ext}
    default = evaluate(samples, None, ["is"], **kw)  # type: ignore[arg-type]
    shuffled = evaluate(samples, None, ["is"], is_order="shuffle", **kw)  # type: ignore[arg-type]
    logits = ext(torch.from_numpy(np.load(samples)["arr_0"]).permute(0, 3, 1, 2))["logits"]
    in_order = isc_features_to_metric(logits, 10, shuffle=False)
    tf_default = isc_features_to_metric(logits)  # torch-fidelity's defaults: shuffle=True, rng_seed=2020
    assert default["is"] == pytest.approx(in_order["inception_score_mean"], rel=1e-12)
    assert shuffled["is"] == pytest.approx(tf_default["inception_score_mean"], rel=1e-12)
    assert shuffled["is_std"] == pytest.approx(tf_default["inception_score_std"], rel=1e-12)
    assert abs(default["is"] - shuffled["is"]) > 1e-3 * default["is"]  # the two conventions really differ here
    ext.rows = 0
    with pytest.raises(PfbenchError, match="is_order: 'random' is not one of file, shuffle"):
        evaluate(samples, None, ["is"], is_order="random", **kw)  # type: ignore[arg-type]
    assert ext.rows == 0


# ------------------------------------------------------------------ unverified Inception weights


@pytest.fixture(scope="module")
def unofficial(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid torch-fidelity Inception state dict that is not the official file (seeded random weights)."""
    from pfbench.bench.metrics import random_inception

    return random_inception(tmp_path_factory.mktemp("w") / "my-inception.pth")


def test_metric_args_record_options_and_unverified_weights(unofficial: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert metric_args(["fd_embedded", "class_acc"]) == {"resize": "tf1x"}  # embedded suites: unchanged record
    assert metric_args(["fid", "is", "kid"], kid_subset_size=50, is_order="shuffle") == {
        "resize": "tf1x", "is_order": "shuffle", "kid_subset_size": 50}  # fmt: skip
    args = metric_args(["fid", "is", "class_acc"], weights=unofficial, verify_weights=False)
    assert args["inception_sha256"] == file_sha256(unofficial)
    assert args["nonstandard"] == ["fid", "is", "is_std"]  # result keys of the Inception metrics only
    official = KNOWN_WEIGHTS["inception-v3-compat"]
    monkeypatch.setitem(KNOWN_WEIGHTS, "inception-v3-compat",
                        type(official)(**{**official.__dict__, "sha256": file_sha256(unofficial)}))  # fmt: skip
    args = metric_args(["fid"], weights=unofficial, verify_weights=False)  # the official file, check off
    assert "nonstandard" not in args and args["inception_sha256"] == file_sha256(unofficial)


def test_eval_no_verify_accepts_an_unofficial_inception_file(samples: Path, unofficial: Path, tmp_path: Path) -> None:
    from pfbench.cli import app

    few = tmp_path / "few.npz"  # 12 images: 10 IS splits, a short CPU Inception pass
    np.savez(few, arr_0=np.load(samples)["arr_0"][:12])
    runner = CliRunner()
    base = ["eval", str(few), "--ref", "none", "--metrics", "is", "--weights", str(unofficial), "--batch-size", "12"]
    refused = runner.invoke(app, base, env={"COLUMNS": "300"})  # main() prints it as a one-line error
    assert isinstance(refused.exception, PfbenchError)
    assert "sha256" in str(refused.exception) and "pass --no-verify" in str(refused.exception)
    res = runner.invoke(app, [*base, "--no-verify"], env={"COLUMNS": "300"})
    assert res.exit_code == 0, res.output
    values = dict(line.split(maxsplit=1) for line in res.output.splitlines()[:4])  # rich prints tabs as spaces
    assert values["inception_sha256"] == file_sha256(unofficial) and float(values["is"]) >= 1.0
    assert "non-standard Inception weights: is, is_std are not comparable" in res.output


# ------------------------------------------------------------------ suites: options, record, report marker


def test_suite_options_reach_rows_and_reports(tmp_path: Path, unofficial: Path) -> None:
    from pfbench.report.stats import summarize
    from pfbench.report.tables import NONSTANDARD, results_table
    from pfbench.suite.parse import load_suite
    from pfbench.suite.runner import Runner
    from pfbench.suite.validate import validate

    text = f"""
name: t
models:
  a: {{checkpoint: /nonexistent.pt}}
grid:
  - models: [a]
    samplers: [euler]
sweep: {{nfe: [4], num_samples: 200}}
metrics: [fid, kid, class_acc]
eval: {{verify_weights: false, weights: {unofficial}, kid_subset_size: 100, is_order: shuffle}}
"""
    (tmp_path / "s.yaml").write_text(text)
    spec = load_suite(tmp_path / "s.yaml")
    validate(spec)
    runner = Runner(spec, tmp_path / "r", tmp_path / "rep", tmp_path / "runs", progress=False)
    args = json.loads(runner.scorer.context()["metric_args"])
    assert args == {"resize": "tf1x", "kid_subset_size": 100, "inception_sha256": file_sha256(unofficial),
                    "nonstandard": ["fid", "kid", "kid_std"]}  # fmt: skip
    default = Runner(load_suite(tmp_path / "s.yaml", ["eval.verify_weights=true", "eval.kid_subset_size=1000"]),
                     tmp_path / "r", tmp_path / "rep", tmp_path / "runs", progress=False)  # fmt: skip
    assert runner.scorer.key() != default.scorer.key()
    rows = pd.DataFrame([{"kind": "cell", "model": "a", "sampler": "euler", "nfe_budget": 4, "cfg_scale": 1.0,
                          "metric": m, "seed": s, "value": v + s, "higher_is_better": m == "class_acc",
                          "metric_args": json.dumps(args, sort_keys=True)}
                         for m, v in (("fid", 30.0), ("class_acc", 0.5)) for s in (0, 1)])  # fmt: skip
    table = results_table(summarize(rows.astype({"nfe_budget": "Int64", "value": "Float64"})))
    fid_col, acc_col = (table.columns.index(c) for c in ("fid ↓", "class_acc ↑"))
    assert NONSTANDARD in table.rows[0][fid_col] and NONSTANDARD not in table.rows[0][acc_col]
    assert "not the official one" in table.note
    for override, match in ((["eval.kid_subset_size=201"], r"^eval.kid_subset_size: 201 exceeds the 200 "
                                                            r"sweep.num_samples images; lower it to at most 200"),
                            (["eval.kid_subset_size=1"], r"^eval.kid_subset_size: 1; it must be >= 2"),
                            (["eval.is_order=adm", "metrics=[is]"], "^eval.is_order: 'adm' is not one of file, shuffle")):
        with pytest.raises(PfbenchError, match=match):
            validate(load_suite(tmp_path / "s.yaml", override))
