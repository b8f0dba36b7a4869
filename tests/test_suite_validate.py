"""Up-front suite checks: every bad value is one line with its key path, before any work; good suites pass."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from pfbench import FieldError, PfbenchError
from pfbench.suite.inputs import TRAIN_HINT, find_inputs, runnable, skip_notes, used_models
from pfbench.suite.parse import load_suite, suite_kind
from pfbench.suite.spec import SuiteSpec, plan
from pfbench.suite.validate import MAX_NFE, check_inputs, check_writable, validate

ROOT = Path(__file__).resolve().parents[1]

# One checkpoint model ``a`` (a missing file: these checks run before any input is read), euler in one grid block,
# dual_loop (p 0.4, n_inner 2) and look_ahead in the other; NFE 4 and 8, two seeds. No data, metrics or eval keys:
# their defaults stand. Written as YAML (inner lists and maps in flow style) so the cases below can edit its text.
BASE = yaml.safe_dump({
    "name": "t", "models": {"a": {"checkpoint": "/nonexistent.pt"}},
    "grid": [{"models": ["a"], "samplers": ["euler"]},
             {"models": ["a"], "samplers": [{"name": "dual_loop", "params": {"p": 0.4, "n_inner": 2}}, "look_ahead"]}],
    "sweep": {"nfe": [4, 8], "seeds": [0, 1], "num_samples": 10},
}, sort_keys=False, default_flow_style=None)


def suite(tmp_path: Path, text: str = BASE, overrides: list[str] | None = None) -> SuiteSpec:
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return load_suite(path, overrides)


@pytest.mark.parametrize(
    "text,overrides,message",
    [
        (BASE.replace("p: 0.4", "p: 1.5"), [], "grid[1].samplers[0].params.p = 1.5: must be in [0, 1]"),
        (BASE.replace("p: 0.4", "p: [0.2, 1.5]"), [], "grid[1].samplers[0].params.p[1] = 1.5: must be in [0, 1]"),
        (BASE.replace("n_inner: 2", "n_inner: 0"), [], "grid[1].samplers[0].params.n_inner = 0: must be an int >= 1"),
        (BASE.replace("p: 0.4", "pp: 0.4"), [],
         "unknown key 'grid[1].samplers[0].params.pp' for sampler 'dual_loop'; did you mean 'p'?"),
        (BASE.replace("p: 0.4", "p: abc"), [], "grid[1].samplers[0].params.p: expected float, got 'abc'"),
        (BASE.replace("p: 0.4", "steps: 3"), [], "grid[1].samplers[0].params.steps: the step count follows from"),
        (BASE, ["sweep.nfe=[8,0]"], f"sweep.nfe[1] = 0: must be in [1, {MAX_NFE}]"),
        (BASE, ["sweep.nfe=[-2]"], f"sweep.nfe[0] = -2: must be in [1, {MAX_NFE}]"),
        (BASE, ["sweep.nfe=[100000000]"], f"sweep.nfe[0] = 100000000: must be in [1, {MAX_NFE}]"),
        # dual_loop with n_inner 2 needs 2 NFE for one outer step
        (BASE, ["sweep.nfe=[1]"], "sweep.nfe[0] = 1: too small for grid[1].samplers[0] (dual_loop): sampler "
                                  "'dual_loop' needs 2 NFE"),
        (BASE, ["sweep.num_samples=-3"], "sweep.num_samples = -3: must be >= 1"),
        (BASE, ["sweep.num_samples=0"], "sweep.num_samples = 0: must be >= 1"),
        (BASE, ["grid=[]"], "grid: empty; a suite needs at least one block"),
        (BASE, ["grid.0.models=[]"], "grid[0].models: empty list"),
        (BASE, ["grid.1.samplers=[]"], "grid[1].samplers: empty list"),
        (BASE, ["sweep.seeds=[]"], "sweep.seeds: empty list"),
        (BASE, ["sweep.seeds=[0,-1]"], "sweep.seeds[1] = -1: must be >= 0"),
        (BASE, ["sweep.nfe=[]"], "sweep.nfe: empty list"),
        (BASE, ["+sweep.cfg_scale=[]"], "sweep.cfg_scale: empty list"),
        (BASE, ["+metrics=[]"], "metrics: empty list"),
        (BASE, ["+eval.batch_size=0"], "eval.batch_size = 0: must be >= 1"),
        (BASE, ["+eval.resize=clen"], "eval.resize = 'clen': unknown Inception resize; did you mean 'clean'?"),
        (BASE, ["+eval.device=cdua"], "eval.device = 'cdua': not a torch device"),
        (BASE, ["+sweep.exclude=[{model: a}]"], "sweep.exclude: the rules remove every cell"),
        # a grid block with its own budgets: its key path, not sweep.nfe's
        (BASE, ["+grid.1.nfe=[8,0]"], f"grid[1].nfe[1] = 0: must be in [1, {MAX_NFE}]"),
        (BASE, ["+grid.1.nfe=[1]"], "grid[1].nfe[0] = 1: too small for grid[1].samplers[0] (dual_loop)"),
        (BASE, ["+grid.1.nfe=[]"], "grid[1].nfe: empty list"),
    ],
)
def test_bad_values_name_their_key_path(tmp_path: Path, text: str, overrides: list[str], message: str) -> None:
    spec = suite(tmp_path, text, overrides)  # parsing accepts them: only the up-front check refuses
    with pytest.raises(PfbenchError) as info:
        validate(spec)
    assert str(info.value).startswith(message), str(info.value)
    assert "\n" not in str(info.value)


def test_budget_check_skips_excluded_pairs(tmp_path: Path) -> None:
    """NFE 1 is too small for dual_loop, but an exclude rule drops that pair: the suite is valid."""
    validate(suite(tmp_path, BASE, ["sweep.nfe=[1,8]", "+sweep.exclude=[{sampler: dual_loop, nfe: 1}]"]))


def test_blocks_with_their_own_budgets_need_no_sweep_nfe(tmp_path: Path) -> None:
    validate(suite(tmp_path, BASE, ["+grid.0.nfe=[4]", "+grid.1.nfe=[8]", "sweep.nfe=[]"]))
    with pytest.raises(PfbenchError, match=r"^sweep.nfe: empty list"):  # block 0 still uses sweep.nfe
        validate(suite(tmp_path, BASE, ["+grid.1.nfe=[8]", "sweep.nfe=[]"]))


def test_every_shipped_runner_suite_validates() -> None:
    paths = [p for p in sorted((ROOT / "suites").glob("*.yaml")) if suite_kind(p) is None]
    assert len(paths) >= 8
    for path in paths:
        validate(load_suite(path))


def test_parity_suite_has_a_kind_and_load_suite_points_to_pfbench_parity() -> None:
    path = ROOT / "suites" / "adm_parity.yaml"
    assert suite_kind(path) == "adm_parity"
    with pytest.raises(PfbenchError, match=r"ADM parity suite .*`pfbench parity .*adm_parity.yaml`"):
        load_suite(path)


def test_unknown_kind_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PfbenchError, match="kind: unknown suite kind 'paritee' \\(known: adm_parity"):
        suite(tmp_path, "kind: paritee\n" + BASE)


def test_check_writable_uses_a_real_write(tmp_path: Path) -> None:
    good = tmp_path / "out" / "results" / "t"
    check_writable([good])
    assert good.is_dir() and not list(good.iterdir())  # the probe file is gone
    blocker = tmp_path / "a_file"
    blocker.write_text("")  # a file where a folder should be: refused even for root, which chmod does not stop
    with pytest.raises(PfbenchError, match=r"cannot write to .*a_file/results/t: Not a directory"):
        check_writable([good, blocker / "results" / "t"])


def test_check_inputs_lists_every_missing_file_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PFBENCH_WEIGHTS", raising=False)
    monkeypatch.chdir(tmp_path)
    ok = BASE.replace("/nonexistent.pt", '"asset:embedded_pf_r16.pt"')
    check_inputs(suite(tmp_path, ok))
    missing = str(tmp_path / "nowhere" / "inception.pth")
    text = BASE.replace("/nonexistent.pt", str(tmp_path / "ckpt" / "pft-b_step400k_ema.ckpt"))
    overrides = ["+metrics=[fid,is]", f"eval.weights={missing}", "+data.name=imagenet",
                 f"+data.reference={tmp_path / 'data' / 'VIRTUAL_imagenet256_labeled.npz'}"]
    with pytest.raises(PfbenchError) as err:
        check_inputs(suite(tmp_path, text, overrides))
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("3 inputs missing or wrong: ")
    assert "models.a.checkpoint: " + str(tmp_path / "ckpt" / "pft-b_step400k_ema.ckpt") + " not found (pfbench fetch pft-b)" in msg
    assert "data.reference: " + str(tmp_path / "data" / "VIRTUAL_imagenet256_labeled.npz") + " not found (pfbench fetch adm-ref)" in msg
    assert f"eval.weights (metrics fid, is): {missing} not found" in msg
    mapped = find_inputs(suite(tmp_path, ok, ["+metrics=[fid,is]", f"eval.weights.inception={missing}"])).missing
    assert [(m.key, m.path, m.problem) for m in mapped] == [  # the map's entry is checked as its alias was
        ("eval.weights.inception (metrics fid, is)", missing, "not found")]
    default = find_inputs(suite(tmp_path, ok, ["+metrics=[fid]"])).missing  # no eval.weights: fetchable
    assert [(m.key, m.remedy) for m in default] == [("eval.weights.inception (metrics fid)", "pfbench fetch inception")]
    assert default[0].path == str(Path("weights") / "weights-inception-2015-12-05-6726825d.pth")


TWO = """
name: t
models:
  a: {checkpoint: "asset:embedded_pf_r16.pt"}
  b: {checkpoint: /nonexistent/b.pt}
grid:
  - models: [a, b]
    samplers: [euler]
sweep: {nfe: [4], seeds: [0], num_samples: 10}
"""


def test_only_models_the_grid_uses_are_required(tmp_path: Path) -> None:
    with pytest.raises(PfbenchError, match=r"models\.b\.checkpoint: /nonexistent/b\.pt not found"):
        check_inputs(suite(tmp_path, TWO))
    spec = suite(tmp_path, TWO, ["grid=[{models: [a], samplers: [euler]}]"])
    check_inputs(spec)  # b is declared but samples no cell
    check_inputs(suite(tmp_path, TWO, ["+sweep.exclude=[{model: b}]"]))  # excluded: no cell either
    assert used_models(spec) == ["a"] and list(runnable(spec, {}).models) == ["a"]


def test_an_optional_model_with_missing_files_is_skipped(tmp_path: Path) -> None:
    spec = suite(tmp_path, TWO.replace("b: {checkpoint: /nonexistent/b.pt}",
                                       "b: {checkpoint: /nonexistent/b.pt, optional: true}"))
    found = find_inputs(spec)
    assert found.missing == () and list(found.skipped) == ["b"]
    assert skip_notes(spec, found.skipped) == [{"model": "b", "cells": 1, "reason": "missing /nonexistent/b.pt (" +
                                                TRAIN_HINT + ")"}]
    left = runnable(spec, found.skipped)
    assert list(left.models) == ["a"] and {c.model for c in plan(left)} == {"a"}
    with pytest.raises(PfbenchError, match="every cell's model is optional and missing"):
        runnable(spec, {"a": found.skipped["b"], "b": found.skipped["b"]})
    with pytest.raises(PfbenchError, match=r"models\.b\.optional: bool expected|optional"):
        suite(tmp_path, TWO.replace("b: {checkpoint: /nonexistent/b.pt}", "b: {checkpoint: /x.pt, optional: maybe}"))
    with pytest.raises(PfbenchError, match=r"models\.b\.optional: only a model loaded from a file"):
        suite(tmp_path, TWO.replace("b: {checkpoint: /nonexistent/b.pt}", "b: {train: {steps: 1}, optional: true}"))


def test_a_wrong_inception_file_is_refused_up_front_unless_verification_is_off(tmp_path: Path) -> None:
    bad = tmp_path / "inception.pth"
    bad.write_bytes(b"not the official network")
    ok = BASE.replace("/nonexistent.pt", '"asset:embedded_pf_r16.pt"')
    with pytest.raises(PfbenchError, match=r"eval.weights \(metrics fid\): .*inception\.pth has the wrong sha256 "
                                           r"\(inception-v3-compat weights .* expected 6726825d0af5f729…"):
        check_inputs(suite(tmp_path, ok, ["+metrics=[fid]", f"eval.weights={bad}"]))
    spec = suite(tmp_path, ok, ["+metrics=[fid]", f"eval.weights={bad}", "eval.verify_weights=false"])
    assert spec.eval.verify_weights is False
    check_inputs(spec)  # accepted; the rows then record its sha256 and are marked non-standard


def test_every_eval_key_takes_a_plain_override(tmp_path: Path) -> None:
    """No `+` needed for an eval key the suite file does not write: EvalSpec's defaults stand in for it."""
    from dataclasses import fields

    from pfbench.suite.spec import EvalSpec

    base = suite(tmp_path).eval
    assert "eval" not in BASE
    for f in fields(EvalSpec):
        if isinstance(getattr(base, f.name), bool):
            spec = suite(tmp_path, overrides=[f"eval.{f.name}={str(not getattr(base, f.name)).lower()}"])
            assert getattr(spec.eval, f.name) is (not getattr(base, f.name)), f.name
    assert suite(tmp_path, overrides=["eval.batch_size=7", "eval.resize=clean"]).eval.batch_size == 7
    with pytest.raises(PfbenchError, match="verfy_weights.*did you mean 'verify_weights'"):
        suite(tmp_path, overrides=["eval.verfy_weights=false"])


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["+eval.precision=bf16"], "eval.precision = 'bf16': needs eval.device=cuda (on CPU pfbench samples in fp32"),
        (["+eval.compile=true"], "eval.compile = True: needs eval.device=cuda"),
        (["+eval.precision=fp16", "+eval.device=cuda"], "eval.precision = 'fp16': must be fp32, tf32 or bf16"),
    ],
)
def test_gpu_sampling_switches_are_checked(tmp_path: Path, overrides: list[str], message: str) -> None:
    with pytest.raises(PfbenchError) as err:
        validate(suite(tmp_path, overrides=overrides))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_gpu_sampling_switches_enter_cell_keys_only_when_set(tmp_path: Path) -> None:
    """fp32 uncompiled adds nothing to cell keys (committed results stay valid); bf16 / compile make new cells."""
    plain = suite(tmp_path).eval
    assert plain.numerics() == ""
    fast = suite(tmp_path, overrides=["+eval.precision=bf16", "+eval.compile=true", "+eval.device=cuda"]).eval
    assert fast.numerics() == "+bf16+compile"


@dataclasses.dataclass(frozen=True)
class _PluginTimesteps:
    """A plugin timestep sampler that reports a bad value as (field, reason), knowing nothing of suites."""

    s: float = 1.0

    def __post_init__(self) -> None:
        if self.s < 0:
            raise FieldError("s", "must be >= 0")


@dataclasses.dataclass(frozen=True)
class _PluginSampler:
    """A plugin sampler that reports a bad value as (field, reason)."""

    steps: int = 1
    q: float = 0.5

    def __post_init__(self) -> None:
        if not 0 <= self.q <= 1:
            raise FieldError("q", "must be in [0, 1]")


def test_plugin_field_errors_get_their_suite_key_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pfbench.registry import SAMPLERS, TIMESTEPS

    monkeypatch.setitem(TIMESTEPS._objects, "strict", _PluginTimesteps)
    monkeypatch.setitem(SAMPLERS._objects, "strict", _PluginSampler)
    trained = BASE.replace("a: {checkpoint: /nonexistent.pt}", "a: {train: {steps: 2, timesteps: {name: strict, "
                           "params: {s: -1.0}}}}")
    with pytest.raises(PfbenchError, match=r"^models.a.train.timesteps.params.s: must be >= 0$"):
        validate(suite(tmp_path, trained))
    grid = BASE.replace("samplers: [euler]", "samplers: [{name: strict, params: {q: 2.0}}]")
    with pytest.raises(PfbenchError, match=r"^grid\[0\].samplers\[0\].params.q: must be in \[0, 1\]$"):
        validate(suite(tmp_path, grid))
    assert FieldError("", "bad").under("sweep.cfg_interval[0]").field == "sweep.cfg_interval[0]"
    assert str(FieldError("[1]", "bad").under("x").under("y")) == "y.x[1]: bad"
