"""CLI happy paths (in-process) and one-line errors (subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from pfbench.cli import app
from pfbench.train.loop import spec_from_dict, train

runner = CliRunner()


def tiny_checkpoint(tmp_path: Path) -> Path:
    spec = spec_from_dict({"kind": "pf", "model": "cpu-xs", "model_overrides": {"depth": 1, "width": 32, "heads": 2},
                           "data": {"size": 200}, "steps": 2, "batch_size": 8, "warmup": 1, "log_every": 1})
    return train(spec, tmp_path / "run", progress=False).checkpoint


def test_sample_export_and_eval(tmp_path: Path) -> None:
    ckpt = tiny_checkpoint(tmp_path)
    out, npz = tmp_path / "shards", tmp_path / "samples.npz"
    res = runner.invoke(app, ["sample", str(ckpt), str(out), "--sampler", "dual_loop", "--nfe", "8",
                              "--num-samples", "30", "--batch-size", "16", "--shard-size", "10", "--npz", str(npz)])
    assert res.exit_code == 0, res.output
    assert len(list(out.glob("shard_*.npz"))) == 3 and (out / "manifest.json").is_file()
    arr = np.load(npz)
    assert arr["arr_0"].shape == (30, 16, 16, 3) and arr["arr_0"].dtype == np.uint8
    res = runner.invoke(app, ["eval", str(npz), "--ref", "embedded", "--metrics", "fd_embedded,class_acc",
                              "--ref-size", "200"])
    assert res.exit_code == 0, res.output
    values = dict(line.split()[:2] for line in res.output.strip().splitlines() if len(line.split()) == 2)
    assert float(values["fd_embedded"]) > 0 and 0 <= float(values["class_acc"]) <= 1


def test_sample_an_external_checkpoint(tmp_path: Path) -> None:
    """`--layout sit --preset …`: a SiT-layout file samples to the same images as its adapter in Python."""
    import torch
    from test_adapters_external import random_net, to_external  # pytest puts tests/ on sys.path

    from pfbench.adapters.external import external_adapter
    from pfbench.registry import SAMPLERS
    from pfbench.sample.generate import generate
    from pfbench.sample.shards import load_shards

    ext = tmp_path / "sit_external.pt"
    torch.save({"ema": to_external(random_net("sit"), sigma=True)}, ext)
    out = tmp_path / "shards"
    res = runner.invoke(app, ["sample", str(ext), str(out), "--layout", "sit", "--preset", "cpu-xs", "--sampler",
                              "euler", "--nfe", "4", "--num-samples", "6", "--batch-size", "6", "--shard-size", "6"])
    assert res.exit_code == 0, res.output
    want = generate(external_adapter(ext, "sit", "cpu-xs"), SAMPLERS.get("euler")(steps=1).with_budget(4), n=6,
                    seed=0, batch_size=6)
    assert torch.equal(torch.as_tensor(load_shards(out)[0]), want.images)
    bad = run_cli("sample", str(ext), str(tmp_path / "o2"), "--layout", "sit")
    assert bad.returncode == 1 and "--layout and --preset go together" in bad.stderr


def test_data_preview_writes_png(tmp_path: Path) -> None:
    out = tmp_path / "p.png"
    res = runner.invoke(app, ["data", "preview", "--out", str(out), "--n", "12"])
    assert res.exit_code == 0, res.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "pfbench.cli", *args], capture_output=True, text=True, env=env,
                          timeout=120)


def test_errors_are_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    for args, needle in [
        (("sample", str(bad), str(tmp_path / "o")), "corrupt"),
        (("sample", str(tmp_path / "missing.pt"), str(tmp_path / "o")), "not found"),
        (("bench", "overheat"), "did you mean 'overhead'"),
        (("train", str(tmp_path / "nope.yaml")), "not found"),
    ]:
        proc = run_cli(*args)
        assert proc.returncode == 1, (args, proc.stderr)
        assert needle in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, (args, proc.stderr)


def test_plan_estimates_compute(tmp_path: Path) -> None:
    from pfbench.nets import forward_flops, net_config

    suite = Path(__file__).resolve().parents[1] / "suites" / "ci.yaml"
    res = runner.invoke(app, ["plan", str(suite), "--results", str(tmp_path / "r")], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "estimated compute still to run" in res.output and "models to train: none" in res.output
    assert "checkpoint or decoder is not found: none" in res.output
    # euler_pf at NFE 8 on the shipped cpu-xs PF model, 500 samples: 8 forwards each
    per_forward = forward_flops(net_config("cpu-xs", "pf", input_size=16, in_channels=3, num_classes=10), 1.0)
    from pfbench.cli import _flops

    expected = _flops(8 * per_forward / 1e9 * 500)
    assert expected.endswith(" GFLOP") and float(expected.split()[0]) == pytest.approx(8 * per_forward / 1e9 * 500,
                                                                                       rel=5e-3)
    assert any("euler_pf" in line and expected in line for line in res.output.splitlines()), res.output
