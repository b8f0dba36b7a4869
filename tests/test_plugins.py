"""Third-party plugins: a distribution adds an adapter, a sampler and a metric through entry points.

The fixture distribution ``pfbench-plugin-demo`` (tests/plugin_fixture) is built and installed offline into
a temporary folder (``pip install --no-deps --no-build-isolation --target``), never into the environment,
and a suite naming its three plugins runs in a subprocess with that folder on ``PYTHONPATH``. Its objects
are also checked in-process against the same contracts as pfbench's own.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from pfbench.sample.generate import generate
from pfbench.types import quantize

FIXTURE = Path(__file__).resolve().parent / "plugin_fixture"
REPO = Path(__file__).resolve().parents[1]

SUITE = """\
name: plugdemo
data: {name: embedded, resolution: 16, test_size: 16}
models:
  demo: {adapter: demo_flow, params: {num_classes: 10}}
grid:
  - models: [demo]
    samplers: [ralston, {name: euler, params: {shift: 2.0}}]
sweep: {nfe: [4, 6], seeds: [0], num_samples: 10, cfg_scale: [1.0, 2.0]}
metrics: [demo_brightness, class_acc]
eval: {batch_size: 10}
"""


@pytest.fixture(scope="module")
def demo(request: pytest.FixtureRequest) -> dict[str, ModuleType]:
    """The fixture package's modules, imported from its source folder (no install needed in-process)."""
    import importlib

    sys.path.insert(0, str(FIXTURE))
    request.addfinalizer(lambda: sys.path.remove(str(FIXTURE)))
    return {m: importlib.import_module(f"pfbench_plugin_demo.{m}") for m in ("adapter", "sampler", "metric")}


def test_demo_adapter_meets_the_adapter_contract(demo: dict[str, ModuleType],
                                                 adapter_contract: Callable[[Any], None]) -> None:
    model = demo["adapter"].DemoFlow()
    assert model.input_shape == (3, 16, 16) and model.patch_size == 2 and model.has_difficulty
    adapter_contract(model)


def test_demo_sampler_is_a_step_sampler_and_lands_on_the_exact_flow(demo: dict[str, ModuleType]) -> None:
    from pfbench.adapters.cfg import CFG
    from pfbench.samplers.base import StepSampler

    ralston: Any = demo["sampler"].Ralston
    assert issubclass(ralston, StepSampler)
    built = ralston.from_budget({}, 9)
    assert built.steps == 4 and built.cost(4) == 8  # two calls per step
    model = demo["adapter"].DemoFlow()
    gen = generate(model, built, n=10, seed=0, batch_size=4)
    assert gen.nfe == 8 and gen.forwards == 8.0
    want = quantize(model.targets[gen.labels])
    assert (gen.images.int() - want.int()).abs().max() <= 1  # the flow is exact: samples reach the targets
    guided = generate(CFG(model, 2.0), built, n=2, seed=0, batch_size=2)
    assert guided.forwards == 16.0  # the guided pair counts twice, by CFG's rule


def test_demo_metric(demo: dict[str, ModuleType]) -> None:
    from pfbench.types import Cond

    cls: Any = demo["metric"].DemoBrightness
    assert cls.features == "images" and cls.needs == frozenset() and cls.higher_is_better
    metric = cls(resolution=4)
    metric.update(torch.full((2, 3, 4, 4), 255, dtype=torch.uint8), Cond(torch.zeros(2, dtype=torch.int64)))
    metric.update(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), Cond(torch.zeros(2, dtype=torch.int64)))
    assert metric.compute() == {"demo_brightness": 0.5}


@pytest.fixture()
def registered(demo: dict[str, ModuleType], monkeypatch: pytest.MonkeyPatch) -> None:
    """The fixture's entry points (read from its pyproject.toml) registered for one test, as an install would (undone
    after it)."""
    import tomllib

    from pfbench import registry

    regs = {r.group: r for r in (registry.ADAPTERS, registry.SAMPLERS, registry.METRICS, registry.FEATURES)}
    groups = tomllib.loads((FIXTURE / "pyproject.toml").read_text())["project"]["entry-points"]
    assert set(groups) <= set(regs)
    for reg in regs.values():
        monkeypatch.setattr(reg, "_targets", dict(reg._targets))
        monkeypatch.setattr(reg, "_objects", dict(reg._objects))
    for group, names in groups.items():
        for name, target in names.items():
            regs[group].add(name, target)
    monkeypatch.setattr("pfbench.suite.spec._SAMPLERS_BUILT", {})  # samplers built meanwhile are forgotten too


def test_a_plugin_suite_model_is_built_estimated_and_identified(registered: None, tmp_path: Path) -> None:
    from pfbench.suite.parse import load_suite
    from pfbench.suite.runner import Runner
    from pfbench.suite.spec import plan

    path = tmp_path / "plugdemo.yaml"
    path.write_text(SUITE)
    spec = load_suite(path)
    runner = Runner(spec, results_root=tmp_path / "r", progress=False)
    lm = runner.load_model("demo", spec.models["demo"])
    assert lm.net is None and lm.adapter() is lm.plugin and lm.plugin.input_shape == (3, 16, 16)
    assert lm.model_id == runner.known_model_id("demo")  # known without loading: hash of adapter + params
    cells = plan(spec)
    assert len(cells) == 8
    per_call = lm.plugin.gflops(torch.zeros(1, 64))
    for cell in cells:
        forwards, gflops = runner.estimate(cell)
        assert forwards == cell.nfe * (2 if cell.cfg_scale != 1.0 else 1)  # ralston/euler use the whole budget
        assert gflops == pytest.approx(forwards * per_call * cell.num_samples)
    other = load_suite(path, ["models.demo.params.num_classes=5"])
    assert Runner(other, results_root=tmp_path / "r").known_model_id("demo") != lm.model_id


@pytest.mark.parametrize(("model", "needle"), [
    ("{adapter: nope}", "models.demo.adapter: unknown adapter 'nope'"),
    ("{adapter: cfg}", "guidance is the sweep's cfg_scale"),
    ("{adapter: demo_flow, checkpoint: x.pt}", "models.demo: checkpoint describe a pfbench network"),
    ("{adapter: demo_flow, params: {colour: red}}", "bad params {'colour': 'red'}"),
    ("{checkpoint: x.pt, params: {a: 1}}", "models.demo.params: only a plugin adapter takes params"),
])
def test_plugin_model_mistakes_are_one_line(registered: None, tmp_path: Path, model: str, needle: str) -> None:
    from pfbench import PfbenchError
    from pfbench.suite.parse import load_suite
    from pfbench.suite.runner import Runner

    path = tmp_path / "plugdemo.yaml"
    path.write_text(SUITE.replace("{adapter: demo_flow, params: {num_classes: 10}}", model))
    with pytest.raises(PfbenchError, match=re.escape(needle)):
        spec = load_suite(path)
        Runner(spec, results_root=tmp_path / "r").load_model("demo", spec.models["demo"])


def _cli(args: list[str], pythonpath: list[Path], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env |= {"PYTHONPATH": os.pathsep.join(map(str, pythonpath)), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
            "COLUMNS": "200", "PFBENCH_CACHE": str(cwd / "cache")}
    return subprocess.run([sys.executable, "-m", "pfbench.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow
def test_an_installed_plugin_distribution_runs_in_a_suite(tmp_path: Path) -> None:
    pytest.importorskip("setuptools", minversion="70.1",
                        reason="building the fixture plugin offline needs setuptools >= 70.1 (pip install -e .[dev])")
    src, site = tmp_path / "src", tmp_path / "site"
    shutil.copytree(FIXTURE, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                          "--no-index", "--disable-pip-version-check", "--target", str(site), str(src)],
                         capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stderr
    assert (site / "pfbench_plugin_demo-0.1.0.dist-info" / "entry_points.txt").is_file()
    suite = tmp_path / "suites" / "plugdemo.yaml"
    suite.parent.mkdir()
    suite.write_text(SUITE)
    folders = ["--results", "results", "--reports", "reports", "--runs", "runs"]

    plan = _cli(["plan", str(suite), "--results", "results"], [site, REPO], tmp_path)
    assert plan.returncode == 0, plan.stderr
    assert "ralston" in plan.stdout and "8 cells" in plan.stdout and "models to train: none" in plan.stdout
    run = _cli(["run", str(suite), *folders, "--quiet"], [site, REPO], tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]

    from pfbench.results import read_results

    rows = read_results(tmp_path / "results" / "plugdemo")
    cells = rows[rows["kind"] == "cell"]
    assert set(cells["model"]) == {"demo"} and set(cells["sampler"]) == {"ralston", "euler"}
    assert set(cells["metric"]) == {"demo_brightness", "class_acc"}
    ral = cells[(cells["sampler"] == "ralston") & (cells["metric"] == "demo_brightness")]
    assert sorted(zip(ral["nfe_budget"], ral["cfg_scale"], strict=True)) == [(4, 1.0), (4, 2.0), (6, 1.0), (6, 2.0)]
    assert set(ral["nfe_used"]) == {4, 6}  # two calls per step: N = 2 and 3
    assert sorted(ral["forwards"]) == [4, 6, 8, 12]  # CFG pairs count twice
    # exact flow, 10 balanced classes at brightness levels symmetric around grey: mean brightness 0.5
    assert ral["value"].between(0.45, 0.55).all() and bool(ral["higher_is_better"].all())

    bare = _cli(["run", str(suite), *folders], [REPO], tmp_path)  # the plugin distribution not on the path
    lines = bare.stderr.strip().splitlines()
    assert bare.returncode == 1 and len(lines) == 1, bare.stderr
    assert "models.demo.adapter: unknown adapter 'demo_flow'" in lines[0], lines[0]


def test_a_plugin_model_id_hashes_the_weights_file_its_params_name(registered: None, tmp_path: Path) -> None:
    """Replacing a plugin's weights file under the same path gives a new model id (and new cell parts); putting
    the first content back finds the first id again: the id is the content, not the path."""
    from pfbench.suite.parse import load_suite
    from pfbench.suite.runner import Runner
    from pfbench.suite.spec import plan

    weights = tmp_path / "levels.pt"
    torch.save(torch.linspace(-0.8, 0.8, 10), weights)
    path = tmp_path / "plugdemo.yaml"
    path.write_text(SUITE.replace("params: {num_classes: 10}", f"params: {{num_classes: 10, weights: '{weights}'}}"))
    spec = load_suite(path)

    def model_id() -> str | None:
        return Runner(spec, results_root=tmp_path / "r", progress=False).known_model_id("demo")

    first = model_id()
    runner = Runner(spec, results_root=tmp_path / "r", progress=False)
    assert first is not None and runner.load_model("demo", spec.models["demo"]).model_id == first
    cell = plan(spec)[0]
    torch.save(torch.linspace(-0.5, 0.5, 10).double(), weights)  # new weights, same path
    second = model_id()
    assert second is not None and second != first and runner.cell_part(cell, second) != runner.cell_part(cell, first)
    torch.save(torch.linspace(-0.8, 0.8, 10), weights)  # the first weights back
    assert model_id() == first


PALETTE_SUITE = SUITE.replace("samplers: [ralston, {name: euler, params: {shift: 2.0}}]", "samplers: [ralston]").replace(
    "sweep: {nfe: [4, 6], seeds: [0], num_samples: 10, cfg_scale: [1.0, 2.0]}",
    "sweep: {nfe: [4], seeds: [0], num_samples: 10}").replace("metrics: [demo_brightness, class_acc]",
                                                             "metrics: [demo_palette, demo_brightness]")


def _palette(path: Path, colours: list[list[float]]) -> Path:
    torch.save(torch.tensor(colours), path)
    return path


def test_a_plugin_metric_reads_its_own_network_weights_from_eval_weights(registered: None, tmp_path: Path) -> None:
    """demo_palette (one fixture file plus its entry points) runs in a suite whose eval.weights gives its file."""
    import pandas as pd

    from pfbench.results import read_results
    from pfbench.suite.parse import load_suite
    from pfbench.suite.runner import Runner
    from pfbench.suite.scoring import Scorer

    white_first = _palette(tmp_path / "white.pt", [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    black_first = _palette(tmp_path / "black.pt", [[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    path = tmp_path / "palette.yaml"
    path.write_text(PALETTE_SUITE.replace("eval: {batch_size: 10}", f"eval: {{batch_size: 10, weights: "
                                          f"{{demo_palette: {white_first}}}}}"))
    spec = load_suite(path)
    images = torch.zeros(4, 3, 16, 16, dtype=torch.uint8)
    images[:3] = 255  # three white images, one black
    labels = torch.zeros(4, dtype=torch.int64)
    assert Scorer(spec).score(images, labels)["demo_palette"] == (0.75, True)
    other = load_suite(path, [f"eval.weights.demo_palette={black_first}"])  # the CLI override of the same map
    assert Scorer(other).score(images, labels)["demo_palette"] == (0.25, True)
    assert Scorer(other).key() != Scorer(spec).key()  # a set path of a network the metrics read enters the key
    runner = Runner(spec, results_root=tmp_path / "r", reports_root=tmp_path / "rep", runs_root=tmp_path / "runs",
                    progress=False)
    runner.run()
    rows = read_results(tmp_path / "r" / "plugdemo")
    cells = rows[(rows["kind"] == "cell") & (rows["metric"] == "demo_palette")]
    assert len(cells) == 1 and isinstance(cells, pd.DataFrame)
    assert 0.0 <= float(cells["value"].iloc[0]) <= 1.0


def test_a_plugin_network_weights_file_missing_is_one_line(registered: None, tmp_path: Path) -> None:
    from pfbench import PfbenchError
    from pfbench.encoders.base import FeatureContext
    from pfbench.evaluate.metric_pass import evaluate
    from pfbench.evaluate.sources import images_from_tensor
    from pfbench.suite.parse import load_suite
    from pfbench.suite.validate import check_inputs, validate

    path = tmp_path / "palette.yaml"
    path.write_text(PALETTE_SUITE)
    spec = load_suite(path)
    validate(spec)
    unset = "the weights file of feature network 'demo_palette' not set (set eval.weights.demo_palette to the file"
    with pytest.raises(PfbenchError, match=re.escape(f"eval.weights.demo_palette (metrics demo_palette): {unset}")):
        check_inputs(spec, device=False)
    gone = tmp_path / "gone.pt"
    with pytest.raises(PfbenchError, match=re.escape(f"eval.weights.demo_palette (metrics demo_palette): {gone} not "
                                                     "found (set eval.weights.demo_palette")):
        check_inputs(load_suite(path, [f"eval.weights.demo_palette={gone}"]), device=False)
    samples = images_from_tensor(torch.zeros(2, 3, 16, 16, dtype=torch.uint8), torch.zeros(2, dtype=torch.int64))
    for ctx, needle in ((FeatureContext(), "feature network 'demo_palette' needs its weights file: set "
                                           "eval.weights.demo_palette in the suite (pfbench eval: --weights "
                                           "demo_palette=PATH)"),
                        (FeatureContext(weights={"demo_palette": str(gone)}),
                         f"feature network 'demo_palette': weights file {gone} not found; set eval.weights.demo_palette"),
                        (FeatureContext(weights={"demo_palete": str(gone)}),
                         "weights.demo_palete: unknown feature network 'demo_palete'; did you mean 'demo_palette'?"),
                        (FeatureContext(weights={"embedded": str(gone)}),
                         "weights.embedded: the 'embedded' feature network reads no weights file")):
        with pytest.raises(PfbenchError, match=re.escape(needle)) as err:
            evaluate(samples, None, ["demo_palette"], ctx)
        assert "\n" not in str(err.value)
    with pytest.raises(PfbenchError, match=re.escape("eval.weights.embeded: unknown feature network 'embeded'")):
        validate(load_suite(path, [f"eval.weights.embeded={gone}"]))


def test_pfbench_eval_takes_weights_network_equals_path(registered: None, tmp_path: Path) -> None:
    import numpy as np
    from typer.testing import CliRunner

    from pfbench.cli import app

    npz = tmp_path / "s.npz"
    images = np.zeros((4, 16, 16, 3), np.uint8)
    images[:1] = 255  # one white image of four
    np.savez(npz, arr_0=images)
    white_first = _palette(tmp_path / "white.pt", [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    res = CliRunner().invoke(app, ["eval", str(npz), "--ref", "none", "--metrics", "demo_palette", "--weights",
                                   f"demo_palette={white_first}"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert dict(line.split(maxsplit=1) for line in res.output.splitlines())["demo_palette"] == "0.25"
    twice = CliRunner().invoke(app, ["eval", str(npz), "--ref", "none", "--metrics", "demo_palette", "--weights",
                                     f"demo_palette={white_first}", "--weights", f"demo_palette={tmp_path}"])
    assert "--weights demo_palette=" in str(twice.exception) and "already given" in str(twice.exception)
