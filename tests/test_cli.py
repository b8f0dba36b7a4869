"""CLI happy paths (in-process) and one-line errors (subprocess)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from pfbench.cli import app
from pfbench.train.loop import spec_from_dict, train


def sigint_default() -> None:
    """Child start-up: SIGINT's default handling, even under a test run started with SIGINT ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)

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


def test_sample_an_external_checkpoint(tmp_path: Path, sit_release: Callable[[Path], Path]) -> None:
    """`--layout sit --preset …`: a SiT-layout file samples to the same images as its adapter in Python."""
    import torch

    from pfbench.adapters.external import external_adapter
    from pfbench.registry import SAMPLERS
    from pfbench.sample.generate import generate
    from pfbench.sample.shards import load_shards

    ext = sit_release(tmp_path / "sit_external.pt")
    out = tmp_path / "shards"
    res = runner.invoke(app, ["sample", str(ext), str(out), "--layout", "sit", "--preset", "cpu-xs", "--sampler",
                              "euler", "--nfe", "4", "--num-samples", "6", "--batch-size", "6", "--shard-size", "6"])
    assert res.exit_code == 0, res.output
    want = generate(external_adapter(ext, "sit", "cpu-xs"), SAMPLERS.get("euler")(steps=1).with_budget(4), n=6,
                    seed=0, batch_size=6)
    assert torch.equal(torch.as_tensor(load_shards(out)[0]), want.images)
    bad = run_cli("sample", str(ext), str(tmp_path / "o2"), "--preset", "cpu-xs")
    assert bad.returncode == 1 and "need --layout" in bad.stderr


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
    from pfbench.cli.suites import flops_text

    expected = flops_text(8 * per_forward / 1e9 * 500)
    assert expected.endswith(" GFLOP") and float(expected.split()[0]) == pytest.approx(8 * per_forward / 1e9 * 500,
                                                                                       rel=5e-3)
    assert any("euler_pf" in line and expected in line for line in res.output.splitlines()), res.output


def test_report_of_a_yaml_path_uses_the_suite_name(tmp_path: Path) -> None:
    from pfbench.results import write_rows

    text = (Path(__file__).resolve().parents[1] / "suites" / "ci.yaml").read_text()
    suite = tmp_path / "path to" / "my ci.yaml"  # stem "my ci", name: other
    suite.parent.mkdir()
    suite.write_text(text.replace("name: ci\n", "name: other\n"))
    folder = tmp_path / "results" / "other"
    write_rows(folder / "cell-a.parquet", [{"suite": "other", "part": "cell-a", "kind": "cell", "model": "pf",
                                            "sampler": "euler_pf", "nfe_budget": 8, "nfe_used": 8, "cfg_scale": 1.0,
                                            "seed": 0, "metric": "class_acc", "value": 0.9, "higher_is_better": True}])
    (folder / "cell-b.parquet").write_bytes(b"")  # damaged: skipped with a warning, not a traceback
    res = runner.invoke(app, ["report", str(suite), "--results", str(tmp_path / "results"), "--reports",
                              str(tmp_path / "reports")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "reports" / "other" / "index.md").is_file()
    assert not (tmp_path / "reports" / "my ci").exists()


def test_ctrl_c_in_train_says_what_is_kept(tmp_path: Path) -> None:
    import signal
    import time

    cfg = tmp_path / "t.yaml"
    cfg.write_text("kind: pf\nmodel: cpu-xs\nmodel_overrides: {depth: 1, width: 32, heads: 2}\ndata: {size: 200}\n"
                   "steps: 100000\nbatch_size: 8\nwarmup: 1\nlog_every: 1\nckpt_every: 2\ndevice: cpu\n")
    out = tmp_path / "o"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "pfbench.cli", "train", str(cfg), "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=sigint_default)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "last.pt").is_file() and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()[1][-2000:]
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    from pfbench.train.checkpoints import load_checkpoint

    step = load_checkpoint(out / "last.pt").step
    assert proc.returncode == 130, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("interrupted: the checkpoint of step ") and "rerun the same command to resume" in line
    assert f"step {step} is kept in {out / 'last.pt'}" in line, (line, step)


def latent_checkpoint(tmp_path: Path) -> Path:
    """A tiny random latent-space model (4 input channels, as SD-VAE latents) saved as a pfbench checkpoint."""
    import dataclasses

    from pfbench.nets import build_net
    from pfbench.nets.presets import net_config
    from pfbench.train.checkpoints import save_checkpoint

    cfg = net_config("cpu-xs", "pf", depth=1, width=32, heads=2, in_channels=4, input_size=8)
    state = build_net(cfg).state_dict()
    return save_checkpoint(tmp_path / "latent.pt", step=0, config={}, net_config=dataclasses.asdict(cfg), model=state,
                           ema=state, optimizer=None)


def test_sample_at_fixed_steps_with_sampler_params(tmp_path: Path) -> None:
    """`--steps 8 --param p=0.6` with dual_loop: 8 outer steps x n_inner 4 = 32 calls; the manifest says so."""
    import json

    out = tmp_path / "s"
    res = runner.invoke(app, ["sample", "asset:embedded_pf_r16.pt", str(out), "--sampler", "dual_loop", "--steps", "8",
                              "--param", "p=0.6", "--num-samples", "4", "--batch-size", "4", "--shard-size", "4"])
    assert res.exit_code == 0, res.output
    m = json.loads((out / "manifest.json").read_text())
    assert m["totals"]["nfe"] == 32 and m["sampler"]["steps"] == 8 and m["sampler"]["p"] == 0.6
    assert m["config"]["steps"] == 8 and m["config"]["sampler_params"] == {"p": 0.6}
    assert m["config"]["nfe_budget"] is None
    # the reference's parameter names: context_t_ratio is look-ahead's r; patch_size must agree with the model's
    out = tmp_path / "la"
    res = runner.invoke(app, ["sample", "asset:embedded_pf_r16.pt", str(out), "--sampler", "look_ahead", "--steps", "4",
                              "--param", "context_t_ratio=1.2", "--param", "patch_size=2", "--param", "mode=mean",
                              "--num-samples", "2", "--batch-size", "2", "--shard-size", "2"])
    assert res.exit_code == 0, res.output
    m = json.loads((out / "manifest.json").read_text())
    assert m["sampler"]["r"] == 1.2 and m["config"]["sampler_params"] == {"r": 1.2} and m["sampler"]["steps"] == 4


@pytest.mark.parametrize("args,needle", [
    (["--nfe", "8", "--steps", "8"], "sample: give --nfe (a budget of model calls) or --steps"),
    (["--param", "pp=0.6"], "--param pp: unknown parameter of sampler 'dual_loop'; did you mean 'p'?"),
    (["--param", "xyz=1"], "--param xyz: unknown parameter of sampler 'dual_loop' (valid: n_inner, p, shift)"),
    (["--param", "n_iner=2"], "did you mean 'n_inner'?"),
    (["--sampler", "look_ahead", "--param", "context_ratio=1.2"], "did you mean 'context_t_ratio'?"),
    (["--param", "p=high"], "--param p: expected float"),
    (["--param", "mode=max"], "--param mode=max: pfbench pools the patch difficulty by the mean only"),
    (["--param", "patch_size=4"], "--param patch_size=4: the sampler uses the model's patch size (2)"),
    (["--param", "steps=8"], "--param steps: give the step count with --steps N"),
    (["--param", "p"], "--param 'p': expected KEY=VALUE"),
])
def test_sample_refuses_bad_steps_and_params_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch, args: list[str],
                                                        needle: str) -> None:
    argv = ["sample", "asset:embedded_pf_r16.pt", str(tmp_path / "o"), "--sampler", "dual_loop", "--num-samples", "2"]
    code, err = main_cli(capsys, monkeypatch, *argv, *args)
    assert code == 1 and needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o" / "manifest.json").exists()


def test_a_latent_checkpoint_needs_a_decoder_or_latents(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    ckpt = latent_checkpoint(tmp_path)
    code, err = main_cli(capsys, monkeypatch, "sample", str(ckpt), str(tmp_path / "o"), "--sampler", "euler_pf",
                         "--nfe", "2", "--num-samples", "2")
    assert code == 1 and "is a latent model (4-channel output, not RGB images); give --vae" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "o").exists()
    out = tmp_path / "lat"
    res = runner.invoke(app, ["sample", str(ckpt), str(out), "--sampler", "euler_pf", "--nfe", "2", "--latents",
                              "--num-samples", "2", "--batch-size", "2", "--shard-size", "2"])
    assert res.exit_code == 0, res.output
    m = json.loads((out / "manifest.json").read_text())
    assert m["config"]["output"].startswith("latents: 4-channel") and m["shards"][0]["image_shape"] == [4, 8, 8]


def test_sample_a_text_to_image_checkpoint_from_prompts(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """`--prompt` (repeatable) and `--prompts FILE` give the images `generate` makes with those prompts; the manifest
    records them; a text-to-image checkpoint without prompts, or prompts for a class model, is one line."""
    import json

    import torch
    from _text_stub import install_stub, t2i_checkpoint  # pytest puts tests/ on sys.path

    from pfbench.registry import ADAPTERS, SAMPLERS
    from pfbench.sample.generate import Prompts, generate
    from pfbench.sample.shards import load_shards
    from pfbench.train.checkpoints import build_model_from_checkpoint, load_checkpoint

    enc = install_stub(monkeypatch)
    ckpt = t2i_checkpoint(tmp_path / "t2i.pt")
    texts = ["a red circle", "two blue squares", "a green triangle"]
    common = ["--sampler", "euler_pf", "--steps", "3", "--num-samples", "5", "--batch-size", "5", "--shard-size", "5"]
    res = runner.invoke(app, ["sample", str(ckpt), str(tmp_path / "a"), *common,
                              *[x for t in texts for x in ("--prompt", t)]])
    assert res.exit_code == 0, res.output
    (tmp_path / "p.txt").write_text("\n".join(texts) + "\n")
    res = runner.invoke(app, ["sample", str(ckpt), str(tmp_path / "b"), *common, "--prompts", str(tmp_path / "p.txt")])
    assert res.exit_code == 0, res.output
    model = ADAPTERS.get("t2i")(build_model_from_checkpoint(load_checkpoint(ckpt)), enc)
    want = generate(model, SAMPLERS.get("euler_pf")(steps=3), n=5, seed=0, batch_size=5, prompts=Prompts(tuple(texts)))
    for name in ("a", "b"):
        assert torch.equal(torch.as_tensor(load_shards(tmp_path / name)[0]), want.images)
    a = json.loads((tmp_path / "a" / "manifest.json").read_text())["config"]
    b = json.loads((tmp_path / "b" / "manifest.json").read_text())["config"]
    assert a["prompt_texts"] == texts and b["prompt_file"] == str(tmp_path / "p.txt")
    assert a["prompts"] == b["prompts"] == Prompts(tuple(texts)).id()
    code, err = main_cli(capsys, monkeypatch, "sample", str(ckpt), str(tmp_path / "c"), *common)
    assert code == 1 and "is a text-to-image model; give --prompt TEXT (repeatable) or --prompts FILE" in err
    code, err = main_cli(capsys, monkeypatch, "sample", "asset:embedded_pf_r16.pt", str(tmp_path / "d"), *common,
                         "--prompt", "a red circle")
    assert code == 1 and "is a class-conditional model; --prompt/--prompts are for text-to-image" in err


# ---------------------------------------------------------------- up-front checks of plan/run (issue 9)

CI_SUITE = Path(__file__).resolve().parents[1] / "suites" / "ci.yaml"


def main_cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str]:
    """``pfbench ARGS`` in this process through the console entry point (its one-line errors and exit codes);
    returns (exit code, stderr)."""
    from pfbench.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(sys, "argv", ["pfbench", *args])
    with pytest.raises(SystemExit) as info:
        main()
    return int(info.value.code or 0), capsys.readouterr().err


@pytest.mark.parametrize(
    "edit,args,needle",
    [
        ("dual_loop", [], "grid[1].samplers[1].params.p = 1.5: must be in [0, 1]"),
        ("", ["sweep.num_samples=-3"], "sweep.num_samples = -3: must be >= 1"),
        ("", ["sweep.num_samples=0"], "sweep.num_samples = 0: must be >= 1"),
        ("", ["grid=[]"], "grid: empty; a suite needs at least one block, e.g. grid: [{models: [m], samplers: [euler]}]"),
        ("", ["sweep.seeds=[]"], "sweep.seeds: empty list"),
        ("", ["--results", "{blocker}/results"], "cannot write to {blocker}/results/ci: Not a directory"),
        ("", ["--reports", "{blocker}/reports"], "cannot write to {blocker}/reports/ci: Not a directory"),
    ],
)
def test_run_refuses_a_bad_suite_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch, edit: str, args: list[str],
                                                 needle: str) -> None:
    """Exit 1 with the key path in one line, and nothing computed (no reference rows, no diagnostics)."""
    text = CI_SUITE.read_text().replace("num_samples: 500", "num_samples: 50")
    if edit:
        text = text.replace("dual_loop,", "{name: dual_loop, params: {p: 1.5}},")
    suite = tmp_path / "ci.yaml"
    suite.write_text(text)
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be (root ignores permissions, not this)")
    folders = {"--results": tmp_path / "results", "--reports": tmp_path / "reports", "--runs": tmp_path / "runs"}
    args = [a.replace("{blocker}", str(blocker)) for a in args]
    options = [x for key, path in folders.items() if key not in args for x in (key, str(path))]
    code, err = main_cli(capsys, monkeypatch, "run", str(suite), *args, *options, "--quiet")
    assert code == 1, err
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix in (".parquet", ".png", ".md")], err
    assert needle.replace("{blocker}", str(blocker)) in err and len(err.strip().splitlines()) == 1, err


def test_plan_refuses_an_nfe_above_the_cap_and_names_yaml_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    code, err = main_cli(capsys, monkeypatch, "plan", str(CI_SUITE), "sweep.nfe=[8,5000]", "--results",
                         str(tmp_path / "r"))
    from pfbench.suite.validate import MAX_NFE

    assert 5000 > MAX_NFE
    assert code == 1 and err.strip() == f"error: sweep.nfe[1] = 5000: must be in [1, {MAX_NFE}] (model calls per " \
                                        "sample)", err
    bad = tmp_path / "bad.yaml"
    bad.write_text(CI_SUITE.read_text().replace("samplers: [euler]", "samplers: [euler"))
    code, err = main_cli(capsys, monkeypatch, "plan", str(bad))
    line = next(i for i, text in enumerate(bad.read_text().splitlines(), 1) if "samplers: [euler" in text)
    assert code == 1 and err.startswith(f"error: {bad}:{line + 1}:") and "malformed YAML" in err, err
    assert len(err.strip().splitlines()) == 1


def test_every_suite_yaml_plans(tmp_path: Path) -> None:
    """`pfbench plan` works on every YAML in suites/ (recipes/ holds `pfbench train` configs), parity included."""
    paths = sorted((CI_SUITE.parent).glob("*.yaml"))
    assert {"ci", "smoke", "imagenet", "adm_parity"} <= {p.stem for p in paths}
    for path in paths:
        res = runner.invoke(app, ["plan", str(path), "--results", str(tmp_path / "r"), "--runs", str(tmp_path / "runs")],
                            env={"COLUMNS": "300"})
        stops = "run would stop" in res.output  # GPU suites on a fresh clone: their files are not here
        assert res.exit_code == (1 if stops else 0) and "suite" in res.output, (path, res.output, res.exception)
    res = runner.invoke(app, ["plan", str(CI_SUITE.parent / "adm_parity.yaml")], env={"COLUMNS": "300"})
    assert "parity suite adm_parity (kind: adm_parity)" in res.output and "checks: fid 3.9426 ± 0.02" in res.output
    assert "pfbench parity" in res.output, res.output


def test_run_of_a_parity_suite_runs_the_parity_check(monkeypatch: pytest.MonkeyPatch) -> None:
    import pfbench.evaluate.parity

    calls: list[Path] = []

    def fake(path: Path, device: str | None = None) -> dict[str, object]:
        calls.append(Path(path))
        ok = len(calls) == 1  # first call passes, second fails
        row = {"metric": "fid", "measured": 3.94, "expected": 3.9426, "diff": -0.0026, "tolerance": 0.02, "ok": ok}
        return {"suite": "adm_parity", "samples": "s.npz", "ref": "r.npz", "num_samples": 4, "measured": {},
                "table": [row], "pass": ok}

    monkeypatch.setattr(pfbench.evaluate.parity, "run_adm_parity_suite", fake)
    path = CI_SUITE.parent / "adm_parity.yaml"
    assert runner.invoke(app, ["run", str(path)]).exit_code == 0
    assert runner.invoke(app, ["run", str(path)]).exit_code == 1  # a parity failure fails the run
    assert calls == [path, path]
    res = runner.invoke(app, ["run", str(path), "sweep.nfe=[8]"])
    assert res.exit_code != 0 and "a parity suite takes no overrides" in str(res.exception)


def test_ctrl_c_in_sample_says_what_is_kept(tmp_path: Path) -> None:
    import signal
    import time

    out = tmp_path / "shards"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "pfbench.cli", "sample", "asset:embedded_pf_r16.pt", str(out),
                             "--num-samples", "100000", "--shard-size", "20", "--batch-size", "20", "--nfe", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=sigint_default)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("shard_*.json"))) < 2 and proc.poll() is None:
        time.sleep(0.1)
    assert proc.poll() is None, proc.communicate()[1][-2000:]
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    kept = len(list(out.glob("shard_*.json")))
    assert err.strip().splitlines()[-1] == (f"interrupted: {kept} of 5000 shards are saved in {out}; rerun the same "
                                            "command to resume")


def test_plan_of_the_main_job_lists_every_missing_input_with_its_fetch_command(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A fresh clone: every input of suites/imagenet.yaml in one table, each with what provides it; exit 1."""
    for var in ("PFBENCH_WEIGHTS", "PFBENCH_DATA", "PFBENCH_CHECKPOINTS"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    res = runner.invoke(app, ["plan", str(CI_SUITE.parent / "imagenet.yaml"), "--results", str(tmp_path / "r")],
                        env={"COLUMNS": "400"})
    assert res.exit_code == 1, res.output
    table = res.output[res.output.index("missing inputs"):]
    rows = [line for line in table.splitlines() if line.startswith("│")]
    for needle in ("pfbench fetch sd-vae-ft-ema", "pfbench fetch inception", "pfbench fetch adm-ref", "data.reference",
                   "eval.weights.inception (metrics fid, sfid, is, pr)"):
        assert any(needle in r for r in rows), (needle, table)
    from pfbench.suite.parse import load_suite

    spec = load_suite(CI_SUITE.parent / "imagenet.yaml")
    for name, model in spec.models.items():  # every required checkpoint is a row, with a fetch command or a recipe
        row = next((r for r in rows if f"models.{name}.checkpoint" in r), None)
        assert model.optional or (row is not None and ("pfbench fetch pft-" in row or "pfbench train" in row)), name
    assert "run would stop" in res.output
