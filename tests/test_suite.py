"""Suite parsing: hydra composition, strict keys with did-you-mean, plan expansion."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from pfbench import PfbenchError
from pfbench.suite.parse import build, compose_yaml, load_suite
from pfbench.suite.spec import GridSpec, ModelSpec, RunSpec, SamplerSpec, SweepSpec, plan

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


MINIMAL = """
name: t
models:
  a: {checkpoint: /nonexistent.pt}
grid:
  - models: [a]
    samplers: [euler]
sweep: {nfe: [4, 8], seeds: [0, 1]}
"""


def test_smoke_suite_loads_and_plans() -> None:
    spec = load_suite(ROOT / "suites" / "smoke.yaml")
    cells = plan(spec)
    assert {c.model for c in cells} == {"pf", "sit"}
    assert sorted({c.nfe for c in cells}) == [8, 16]
    assert len(cells) == 2 * 2


def test_every_shipped_suite_loads_and_plans() -> None:
    runner_suites = [p for p in sorted((ROOT / "suites").glob("*.yaml")) if "kind: adm_parity" not in p.read_text()]
    assert {"smoke", "ci", "imagenet", "nfe_sweep", "thresholds", "repa_cfg"} <= {p.stem for p in runner_suites}
    for path in runner_suites:
        assert plan(load_suite(path)), path


def test_imagenet_suite_is_the_authors_protocol() -> None:
    """The reference's sample_ddp.py defaults and sampler configs, the released file names, the paper's numbers."""
    data = compose_yaml(ROOT / "suites" / "imagenet.yaml")
    steps, nfe = data["grid"][:2], data["grid"][2]
    assert [g["steps"] for g in steps] == [[100], [100]] and "nfe" not in steps[0] and nfe["nfe"] == [100]
    params = {s["name"] if isinstance(s, dict) else s: (s.get("params", {}) if isinstance(s, dict) else {})
              for s in steps[1]["samplers"]}
    assert params == {"euler_pf": {}, "dual_loop": {"p": 0.4, "n_inner": 4},
                      "look_ahead": {"p": 0.4, "r": 1.4, "t_warm": 0.05}}
    assert steps[0]["samplers"] == ["euler"] and set(steps[0]["models"]) == {"sit_b2", "sit_xl2"}
    assert data["sweep"]["cfg_scale"] == [1.0] and data["sweep"]["num_samples"] == 50_000
    assert (data["eval"]["precision"], data["eval"]["resize"]) == ("tf32", "tf1x")
    assert set(data["metrics"]) == {"fid", "sfid", "is", "pr"}
    assert str(data["data"]["reference"]).endswith("VIRTUAL_imagenet256_labeled.npz")
    models = data["models"]
    assert {Path(m["checkpoint"]).name for n, m in models.items() if n.startswith("pf")} == {
        "pft-b_step400k_ema.ckpt", "pft-xl_step400k_ema.ckpt"}
    assert all(m["layout"] == "pf" for n, m in models.items() if n.startswith("pf"))
    assert all(m.get("optional") is True for n, m in models.items() if n.startswith("sit"))
    assert all(m["vae"] == "sd-vae-ft-ema" for m in models.values())
    fid = {(e["model"], e["sampler"]): e["value"] for e in data["expected"] if e["steps"] == 100}
    assert fid == {("sit_b2", "euler"): 33.0, ("pf_b2", "euler_pf"): 27.9, ("pf_b2", "dual_loop"): 26.0,
                   ("pf_b2", "look_ahead"): 24.2, ("sit_xl2", "euler"): 17.2, ("pf_xl2", "euler_pf"): 12.9,
                   ("pf_xl2", "dual_loop"): 11.5, ("pf_xl2", "look_ahead"): 9.8}
    repa = plan(load_suite(ROOT / "suites" / "repa_cfg.yaml"))
    assert {(c.cfg_scale, c.cfg_interval) for c in repa} == {(1.0, None), (1.8, None), (1.8, (0.3, 1.0))}


@pytest.mark.skipif(not {"steps"} <= {f.name for f in dataclasses.fields(GridSpec)}
                    or "optional" not in {f.name for f in dataclasses.fields(ModelSpec)},
                    reason="needs the step axis (grid `steps:`) and optional models: merge")
def test_imagenet_suite_plans_the_authors_cells() -> None:
    spec = load_suite(ROOT / "suites" / "imagenet.yaml")
    cells = plan(spec)
    assert {c.num_samples for c in cells} == {50_000} and {c.cfg_scale for c in cells} == {1.0}
    assert {(c.model, c.sampler.name) for c in cells} == {
        (m, s) for m in ("sit_b2", "sit_xl2") for s in ("euler",)} | {
        (m, s) for m in ("pf_b2", "pf_xl2") for s in ("euler_pf", "dual_loop", "look_ahead")}
    assert spec.eval.numerics() == "+tf32" and len(spec.expected) == 8


def test_overrides_change_the_plan(tmp_path: Path) -> None:
    spec = load_suite(write(tmp_path, MINIMAL), ["sweep.nfe=[2,4,8]"])
    assert len(plan(spec)) == 3 * 2
    assert all(isinstance(c, RunSpec) for c in plan(spec))
    with pytest.raises(PfbenchError, match=r"Could not override 'models.a.use_ema'. \(to append to your config use "
                                           r"\+models.a.use_ema=false\)"):
        load_suite(write(tmp_path, MINIMAL), ["models.a.use_ema=false"])
    assert not load_suite(write(tmp_path, MINIMAL), ["+models.a.use_ema=false"]).models["a"].use_ema


def test_include_via_defaults(tmp_path: Path) -> None:
    write(tmp_path, "sweep: {nfe: [3], seeds: [5]}\n", "base.yaml")
    spec = load_suite(write(tmp_path, "defaults:\n  - base\n  - _self_\n" + MINIMAL.replace("sweep: {nfe: [4, 8], seeds: [0, 1]}", "")))
    assert [c.nfe for c in plan(spec)] == [3] and [c.seed for c in plan(spec)] == [5]


@pytest.mark.parametrize(
    "text,match",
    [
        (MINIMAL.replace("sweep:", "swep:"), r"unknown key 'swep'; did you mean 'sweep'"),
        (MINIMAL.replace("nfe: [4, 8]", "nfee: [4, 8]"), r"unknown key 'sweep.nfee'; did you mean 'nfe'"),
        (MINIMAL.replace("nfe: [4, 8]", "nfe: four"), r"sweep.nfe: expected a list"),
        (MINIMAL.replace("samplers: [euler]", "samplers: [eulr]"), r"unknown sampler 'eulr'; did you mean 'euler'"),
        (MINIMAL + "eval: {curve_sampler: eulr}\n", r"^eval.curve_sampler: unknown sampler 'eulr'; did you mean"),
        (MINIMAL.replace("models: [a]", "models: [b]"), r"grid\[0\].models: unknown model 'b'"),
        ("name: [unclosed\n", r"malformed YAML|s.yaml"),
    ],
)
def test_bad_suites_give_one_line_errors(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(PfbenchError, match=match) as info:
        load_suite(write(tmp_path, text))
    assert "\n" not in str(info.value)


def test_yaml_syntax_errors_name_file_line_and_column(tmp_path: Path) -> None:
    bad = MINIMAL.replace("a: {checkpoint: /nonexistent.pt}", "a: {checkpoint: /nonexistent.pt")
    with pytest.raises(PfbenchError) as info:
        load_suite(write(tmp_path, bad))
    # the flow mapping opened on line 4 runs into `grid:` on line 5, column 5 (1-based, as editors count)
    assert str(info.value) == (f"{tmp_path / 's.yaml'}:5:5: malformed YAML: expected ',' or '}}', but got ':' "
                               "(while parsing a flow mapping started at line 4)")
    write(tmp_path, "sweep: {nfe: [3],\n  seeds: [5]\n", "base.yaml")  # an include: its own name and line
    with pytest.raises(PfbenchError, match=r"base.yaml:3:1: malformed YAML: expected ',' or '}'") as info:
        load_suite(write(tmp_path, "defaults:\n  - base\n  - _self_\n" + MINIMAL))
    assert "\n" not in str(info.value)


def test_missing_file() -> None:
    with pytest.raises(PfbenchError, match="not found"):
        compose_yaml("does/not/exist.yaml")


def test_build_types() -> None:
    sw = build(SweepSpec, {"nfe": [1, 2], "cfg_scale": [1, 2.5]})
    assert sw.cfg_scale == [1.0, 2.5]
    with pytest.raises(PfbenchError, match="expected int"):
        build(SweepSpec, {"num_samples": True})


def test_cell_key_depends_on_pixels_only() -> None:
    a = RunSpec("s1", "m", SamplerSpec("euler"), 8, 0, 100, 1.0)
    b = RunSpec("s2", "m", SamplerSpec("euler"), 8, 0, 100, 1.0)  # other suite, same pixels
    c = RunSpec("s1", "m", SamplerSpec("euler", {"shift": 2.0}), 8, 0, 100, 1.0)
    assert a.key("w") == b.key("w")
    assert a.key("w") != c.key("w") and a.key("w") != a.key("other-weights")


def test_sampler_param_axes_interval_and_exclude(tmp_path: Path) -> None:
    text = MINIMAL.replace("samplers: [euler]", "samplers: [{name: dual_loop, params: {p: [0.2, 0.4], n_inner: 2}}]")
    text = text.replace("sweep: {nfe: [4, 8], seeds: [0, 1]}",
                        "sweep: {nfe: [8], seeds: [0], cfg_scale: [1.0, 2.0], cfg_interval: [null, [0.1, 0.9]],\n"
                        "        exclude: [{p: 0.4, cfg_scale: 2.0}]}")
    cells = plan(load_suite(write(tmp_path, text)))
    got = sorted(((c.sampler.params["p"], c.cfg_scale, c.cfg_interval) for c in cells), key=str)
    # p × (cfg 1 without interval, cfg 2 with and without) minus the excluded (p=0.4, cfg 2) pair
    assert got == sorted([(0.2, 1.0, None), (0.2, 2.0, None), (0.2, 2.0, (0.1, 0.9)), (0.4, 1.0, None)], key=str)
    assert all(c.sampler.params["n_inner"] == 2 for c in cells)
    assert len({c.key("w") for c in cells}) == len(cells)


def test_bad_exclude_and_interval(tmp_path: Path) -> None:
    bad = MINIMAL.replace("sweep: {nfe: [4, 8], seeds: [0, 1]}", "sweep: {nfe: [8], exclude: [{samplr: euler}]}")
    with pytest.raises(PfbenchError, match="did you mean 'sampler'"):
        plan(load_suite(write(tmp_path, bad)))
    bad = MINIMAL.replace("sweep: {nfe: [4, 8], seeds: [0, 1]}",
                          "sweep: {nfe: [8], cfg_scale: [2.0], cfg_interval: [[0.9, 0.1]]}")
    with pytest.raises(PfbenchError, match=r"^sweep.cfg_interval\[0\]: \[0.9, 0.1\] must be \[t_lo, t_hi\] with 0 <= "):
        plan(load_suite(write(tmp_path, bad)))


SEEDED = """
name: t
models:
  pf:
    train_seeds: [0, 2]
    train: {kind: pf, model: cpu-xs, steps: 10, seed: 7}
  sit: {checkpoint: /nonexistent.pt}
grid:
  - models: [pf, sit]
    samplers: [euler]
  - models: [pf]
    samplers: [euler_pf]
    nfe: [16]
sweep: {nfe: [4, 8], seeds: [0, 1, 2], pair_seeds: true}
"""


def test_train_seeds_expand_into_one_model_per_seed(tmp_path: Path) -> None:
    spec = load_suite(write(tmp_path, SEEDED))
    assert list(spec.models) == ["pf@s0", "pf@s2", "sit"]
    assert [spec.models[m].train["seed"] for m in ("pf@s0", "pf@s2")] == [0, 2]  # type: ignore[index]
    assert spec.grid[0].models == ["pf@s0", "pf@s2", "sit"]
    cells = plan(spec)
    # pair_seeds: an instance samples with its own seed only; the unseeded model with every seed
    assert sorted({(c.model, c.seed) for c in cells if c.sampler.name == "euler"}) == [
        ("pf@s0", 0), ("pf@s2", 2), ("sit", 0), ("sit", 1), ("sit", 2)]
    assert {c.nfe for c in cells if c.sampler.name == "euler_pf"} == {16}  # the block's own budgets
    assert {c.nfe for c in cells if c.sampler.name == "euler"} == {4, 8}


def test_exclude_by_train_seed(tmp_path: Path) -> None:
    spec = load_suite(write(tmp_path, SEEDED), ["+sweep.exclude=[{model: pf, train_seed: 2}]"])
    assert {c.model for c in plan(spec)} == {"pf@s0", "sit"}


def test_pair_seeds_needs_the_training_seeds_among_the_sampling_seeds(tmp_path: Path) -> None:
    with pytest.raises(PfbenchError, match=r"training seeds \[2\] that are not in sweep.seeds"):
        load_suite(write(tmp_path, SEEDED), ["sweep.seeds=[0,1]"])


def test_train_seeds_need_a_training_recipe(tmp_path: Path) -> None:
    with pytest.raises(PfbenchError, match="only models trained in the suite"):
        load_suite(write(tmp_path, MINIMAL), ["+models.a.train_seeds=[0]"])


def test_at_sign_is_reserved_in_model_names(tmp_path: Path) -> None:
    with pytest.raises(PfbenchError, match="reserved"):
        load_suite(write(tmp_path, MINIMAL.replace("  a:", "  a@s1:").replace("[a]", "[a@s1]")))


def test_cells_of_a_fixed_sampler_get_new_keys() -> None:
    """A sampler whose output changed for the same parameters (``revision`` > 1) must not reuse old cells."""
    import dataclasses

    from pfbench.io import content_hash
    from pfbench.registry import SAMPLERS

    def old_key(cell: RunSpec) -> str:  # the key before revisions existed
        payload = dataclasses.asdict(cell) | {"model_id": "w"}
        payload.pop("suite")
        payload.pop("cfg_interval")
        payload.pop("steps")  # NFE cells: the field added with fixed-step cells is not hashed
        return content_hash(payload)

    for name in ("euler", "euler_pf", "heun"):  # unchanged samplers keep their keys (and committed results)
        cell = RunSpec("s", "m", SamplerSpec(name), 8, 0, 100, 1.0)
        assert SAMPLERS.get(name).revision == 1 and cell.key("w") == old_key(cell)
    for name in ("dual_loop", "look_ahead", "dual_loop_random", "look_ahead_random"):  # docs/protocol.md §6 fix
        cell = RunSpec("s", "m", SamplerSpec(name), 8, 0, 100, 1.0)
        assert SAMPLERS.get(name).revision == 2 and cell.key("w") != old_key(cell)


def test_claims_trends_are_checked_against_the_declared_claims() -> None:
    spec = load_suite(ROOT / "suites" / "validity.yaml")
    assert spec.claims.trends == ["look_ahead < dual_loop"]
    with pytest.raises(PfbenchError, match=r"claims.trends\[0\]: 'look_ahead < dual_lop' .* did you mean "
                                           r"'look_ahead < dual_loop'"):
        load_suite(ROOT / "suites" / "validity.yaml", ["claims.trends=['look_ahead < dual_lop']"])
