"""Fixtures shared by the test modules: test modules never import each other, they ask for these.

- ``tiny_suite``: the one tiny-suite factory (a suite that trains a 1-block PF, optionally SiT, on the embedded
  data in seconds), written as YAML into the test's folder; ``shipped_suite``: the same over the shipped PF
  checkpoint (nothing trains);
- ``tiny_train``: a training config that trains in well under a second per step on one CPU core;
- ``random_net`` / ``to_external`` / ``sit_release``: tiny DiTs with every weight random, and their external
  (DiT/SiT/PatchForcingDiT) key layout;
- ``dedup_equals_naive``: the exactness check of deduplicated modulation, for either PF network;
- ``adapter_contract`` / ``contract_cond``: the checks every adapter must pass (built-ins and plugins) and the
  conditioning they call it with;
- ``cell_grid``: synthetic result Parquet of 8 cells that differ only in variant, CFG interval and training
  sampler.

torch is imported inside the helpers, so report tests (which check that the report stage never imports torch)
pay nothing for it.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from _release import to_external as _to_external  # pytest puts tests/ on sys.path

# ------------------------------------------------------------------ tiny suite


TINY_TRAIN: dict[str, Any] = {
    "kind": "pf", "model": "cpu-xs", "model_overrides": {"depth": 1, "width": 32, "heads": 2},
    "data": {"name": "embedded", "resolution": 16, "size": 2000, "seed": 0}, "steps": 12, "batch_size": 16,
    "lr": 3.0e-3, "warmup": 2, "ema_decay": 0.99, "ema_warmup": True, "ckpt_every": 6, "keep_every": 6,
    "log_every": 6,
}
DUAL_LOOP_2 = {"name": "dual_loop", "params": {"n_inner": 2}}
# Grid row of a model named in ``grid`` by its name: trained PF, trained SiT, or a checkpoint model.
GRID_ROWS: dict[str, list[Any]] = {"pf": ["euler_pf", DUAL_LOOP_2], "sit": ["euler"]}


def tiny_suite_config(name: str = "tiny", *, models: Sequence[str] = ("pf",), checkpoints: dict[str, str] | None = None,
                      train: dict[str, Any] | None = None, grid: Sequence[str | dict[str, Any]] = ("pf",),
                      sweep: dict[str, Any] | None = None, metrics: Sequence[str] = ("fd_embedded", "class_acc"),
                      eval: dict[str, Any] | None = None, test_size: int = 300) -> dict[str, Any]:
    """The tiny suite as plain data.

    Args:
        name: suite name.
        models: model names in order; a name in ``checkpoints`` is a checkpoint model, ``pf`` and ``sit`` otherwise
            train in the suite (``sit``: same recipe, global t).
        checkpoints: name -> checkpoint path of the checkpoint models.
        train: changes to the training recipe (``None`` as a value removes the key).
        grid: grid rows; a model name stands for its default row (pf: euler_pf + dual_loop n_inner 2, sit: euler,
            checkpoint models: euler_pf), a dict is a literal row.
        sweep, metrics, eval, test_size: as in a suite (defaults: NFE 2 and 4, seed 0, 40 samples; FD and class
            accuracy in the embedded features; no parallel training).
    """
    recipe = {k: v for k, v in {**TINY_TRAIN, **(train or {})}.items() if v is not None}
    ckpts = checkpoints or {}

    def model(m: str) -> dict[str, Any]:
        if m in ckpts:
            return {"checkpoint": ckpts[m]}
        if m == "pf":
            return {"train": recipe}
        if m == "sit":
            return {"train": {**recipe, "kind": "sit", "timesteps": {"name": "global_uniform"}}}
        return {"checkpoint": ckpts[m]}

    def row(r: str | dict[str, Any]) -> dict[str, Any]:
        return r if isinstance(r, dict) else {"models": [r], "samplers": GRID_ROWS.get(r, ["euler_pf"])}

    return {
        "name": name, "data": {"name": "embedded", "resolution": 16, "seed": 0, "test_size": test_size},
        "models": {m: model(m) for m in models}, "grid": [row(r) for r in grid],
        "sweep": sweep or {"nfe": [2, 4], "seeds": [0], "num_samples": 40}, "metrics": list(metrics),
        "eval": eval or {"parallel_train": False},
    }


TinySuite = Callable[..., Path]


@pytest.fixture
def tiny_suite(tmp_path: Path) -> TinySuite:
    """``tiny_suite(file="tiny.yaml", **tiny_suite_config kwargs) -> Path``: writes the suite into ``tmp_path``."""

    def write(file: str = "tiny.yaml", **kw: Any) -> Path:
        path = tmp_path / file
        path.write_text(yaml.safe_dump(tiny_suite_config(**kw), sort_keys=False))
        return path

    return write


SHIPPED_PF = "asset:embedded_pf_r16.pt"  # the shipped PF checkpoint of the embedded recipe: suites that train nothing


@pytest.fixture
def shipped_suite(tiny_suite: TinySuite) -> TinySuite:
    """``shipped_suite(file="shipped.yaml", samplers=("euler_pf", "look_ahead"), batch_size=100, **tiny_suite kwargs)
    -> Path``: the tiny suite over the shipped PF checkpoint as model ``pf`` (nothing trains), one grid row of
    ``samplers``, class accuracy only, no learning curve; ``sweep``, ``grid``, ``test_size``... as in the tiny suite."""

    def write(file: str = "shipped.yaml", *, samplers: Sequence[str | dict[str, Any]] = ("euler_pf", "look_ahead"),
              batch_size: int = 100, **kw: Any) -> Path:
        shipped = {"name": "shipped", "models": ("pf",), "checkpoints": {"pf": SHIPPED_PF},
                   "grid": [{"models": ["pf"], "samplers": list(samplers)}], "metrics": ("class_acc",),
                   "eval": {"batch_size": batch_size, "learning_curve": False}}
        return tiny_suite(file, **{**shipped, **kw})

    return write


# ------------------------------------------------------------------ tiny training config


def _tiny_train(**kw: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "model": "cpu-xs",
        "model_overrides": {"depth": 2, "width": 32, "heads": 2},
        "kind": "pf",
        "data": {"resolution": 8, "size": 40},
        "steps": 8,
        "batch_size": 8,
        "lr": 1e-3,
        "warmup": 2,
        "ema_decay": 0.9,
        "log_every": 2,
        "ckpt_every": 100,
        "device": "cpu",
    }
    d.update(kw)
    return d


@pytest.fixture
def tiny_train() -> Callable[..., dict[str, Any]]:
    """``tiny_train(**changes)``: a training config (8 px, 4×4 tokens, 2 blocks) that trains in well under a
    second per step on one CPU core."""
    return _tiny_train


# ------------------------------------------------------------------ random nets and the external key layout

PRESET = "cpu-xs"  # depth 4, width 64, 3×16×16, patch 2, 10 classes


def _random_net(kind: str, seed: int = 0) -> Any:
    """A tiny pfbench net with every parameter random (the default init zeroes adaLN and the output)."""
    import torch

    from pfbench.nets.dit import DiT
    from pfbench.nets.presets import net_config

    torch.manual_seed(seed)
    net = DiT(net_config(PRESET, kind))
    with torch.no_grad():
        for prm in net.parameters():
            prm.copy_(torch.randn_like(prm) * 0.1)
    return net.eval()


@pytest.fixture
def random_net() -> Callable[..., Any]:
    """``random_net(kind, seed=0) -> DiT``: a ``cpu-xs`` net of kind "pf" or "sit" with every weight random."""
    return _random_net


@pytest.fixture
def to_external() -> Callable[..., dict[str, Any]]:
    """``to_external(net, sigma, pos=None)``: the net's state dict in DiT/SiT key names (``sigma``: learned-σ
    output channels added, as DiT and SiT releases have them)."""
    return _to_external


@pytest.fixture
def sit_release() -> Callable[[Path], Path]:
    """``sit_release(path) -> path``: writes a SiT-layout training checkpoint (``{"ema": ...}``, learned σ) of
    ``random_net("sit")``."""

    def write(path: Path) -> Path:
        import torch

        torch.save({"ema": _to_external(_random_net("sit"), sigma=True)}, path)
        return path

    return write


# ------------------------------------------------------------------ network invariants

TIME_KINDS = ("constant", "few", "all_distinct")  # one t per sample, 1–3 per sample (sampler states), all distinct


def _dedup_equals_naive(forward: Callable[[Any, bool], tuple[Any, Any]], kind: str, b: int, n: int, g: Any) -> None:
    """Timesteps (b, n) of ``kind`` (``TIME_KINDS``, drawn from generator g); ``forward(t, dedup)`` -> (v, logvar)
    with the deduplicated modulation equals the naive per-token one, and the output is not trivial."""
    import torch

    base = torch.rand(b, 1, generator=g)
    t = {
        "constant": base.expand(b, n),
        "few": (base + 0.1 * torch.randint(0, 3, (b, n), generator=g).float()).clamp(0, 1),
        "all_distinct": torch.rand(b, n, generator=g),
    }[kind]
    v1, lv1 = forward(t, True)
    v2, lv2 = forward(t, False)
    assert lv1 is not None and lv2 is not None
    torch.testing.assert_close(v1, v2, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(lv1, lv2, rtol=1e-5, atol=1e-6)
    assert v1.abs().mean() > 1e-3  # outputs are non-trivial


@pytest.fixture
def dedup_equals_naive() -> Callable[..., None]:
    """``dedup_equals_naive(forward, kind, b, n, g)``: a PF network's deduplicated modulation (``dedup=True``)
    gives the naive per-token result at timesteps of ``kind`` (one of ``TIME_KINDS``)."""
    return _dedup_equals_naive


# ------------------------------------------------------------------ adapter contract


def _contract_cond(b: int, num_classes: int) -> Any:
    """Labels and prompts for b samples (class-conditional adapters ignore the prompts, text-to-image ones need them)."""
    import torch

    from pfbench.types import Cond

    return Cond(torch.arange(b) % num_classes, tuple(f"a red disk number {i}" for i in range(b)))


def _check_adapter_contract(model: Any) -> None:
    """Protocol members, output shapes and cost declarations that agree with ``Meter``'s accounting."""
    import torch

    from pfbench.adapters.base import Adapter, check_adapter
    from pfbench.sample.trace import Recorder
    from pfbench.samplers.dual_loop import DualLoop
    from pfbench.samplers.euler import Euler
    from pfbench.types import ModelOut

    assert check_adapter(model, "contract") is model and isinstance(model, Adapter)
    c, h, w = model.input_shape
    p = model.patch_size
    tokens = (h // p) * (w // p)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, c, h, w, generator=g)
    cond = _contract_cond(3, model.num_classes)
    t = torch.full((3, tokens), 0.3)
    out = model(x, t, cond)
    assert isinstance(out, ModelOut) and out.v.shape == x.shape and out.v.dtype == torch.float32
    assert (out.logvar is not None) == model.has_difficulty
    if out.logvar is not None:
        assert out.logvar.shape == (3, 1, h, w)
    assert out.v_cond is None or out.v_cond.shape == x.shape
    assert out.cond_velocity().shape == x.shape
    n, gf = model.forwards_per_call(t), model.gflops(t)
    assert isinstance(n, int) and n >= 1 and isinstance(gf, float) and gf > 0 and math.isfinite(gf)
    # Meter's totals are the sums of the declarations at the times the sampler actually passed
    sampler = DualLoop(steps=2, n_inner=2) if model.has_difficulty else Euler(steps=3)
    rec = Recorder(model)
    res = sampler(rec, torch.randn(2, c, h, w, generator=g), _contract_cond(2, model.num_classes),
                  torch.arange(2))
    assert res.nfe == len(rec.times) == sampler.cost(sampler.steps)
    assert res.forwards == sum(model.forwards_per_call(tt) for tt in rec.times)
    assert math.isclose(res.gflops, sum(model.gflops(tt) for tt in rec.times), rel_tol=1e-12)


@pytest.fixture
def contract_cond() -> Callable[[int, int], Any]:
    """``contract_cond(b, num_classes) -> Cond``: labels ``i mod num_classes`` and a prompt per sample."""
    return _contract_cond


@pytest.fixture
def adapter_contract() -> Callable[[Any], None]:
    """``adapter_contract(model)``: asserts the ``Adapter`` contract (members, shapes, cost declarations)."""
    return _check_adapter_contract


# ------------------------------------------------------------------ report cell grid (synthetic Parquet)

VARIANTS = ({"p": 0.2}, {"p": 0.6})
INTERVALS = ([0.0, 0.5], [0.1, 0.9])
TRAIN = ("ltg", "srm")


@dataclass(frozen=True)
class CellGrid:
    """2 sampler variants × 2 CFG intervals × 2 training timestep samplers of one model, sampler, CFG scale and
    NFE budget; cell i has fd_embedded ``10 + i + 0.5·seed`` (+ ``shift[i]``) and class_acc ``0.5 + 0.05·i +
    0.01·seed``.

    Attributes:
        cells: (train t-sampler, variant, CFG interval) as the tables print them, in cell order.
    """

    cells: tuple[tuple[str, str, str], ...] = tuple(
        (tr, f"p={v['p']:g}", f"[{iv[0]:g}, {iv[1]:g}]") for v, iv, tr in itertools.product(VARIANTS, INTERVALS, TRAIN))

    @staticmethod
    def fd_mean(i: int) -> float:
        """Mean over the two seeds of cell i's fd_embedded: every cell has its own value."""
        return 10.25 + i

    @staticmethod
    def write(folder: Path, seeds: int = 2, shift: dict[int, float] | None = None) -> Path:
        """One Parquet file per (cell, seed) in ``folder``, written as the runner writes them."""
        from pfbench.results import write_rows

        shift = shift or {}
        for i, (v, iv, tr) in enumerate(itertools.product(VARIANTS, INTERVALS, TRAIN)):
            for seed in range(seeds):
                part = f"cell-{i}-{seed}"
                base = {"suite": "grid", "part": part, "kind": "cell", "model": "pf", "model_id": f"sha-{tr}",
                        "train_timesteps": tr, "sampler": "dual_loop",
                        "sampler_args": json.dumps({"n_inner": 4, "steps": 4, **v}, sort_keys=True),
                        "variant": json.dumps({**v, "cfg_interval": iv}, sort_keys=True), "nfe_budget": 16,
                        "nfe_used": 16, "forwards": 32, "gflops": 1.5, "wall_s": 1.0, "seed": seed,
                        "num_samples": 100, "cfg_scale": 4.0, "cfg_interval": json.dumps(iv)}
                write_rows(folder / f"{part}.parquet", [
                    base | {"metric": "fd_embedded", "value": 10.0 + i + 0.5 * seed + shift.get(i, 0.0),
                            "higher_is_better": False},
                    base | {"metric": "class_acc", "value": 0.5 + 0.05 * i + 0.01 * seed, "higher_is_better": True}])
        return folder


@pytest.fixture
def cell_grid() -> CellGrid:
    """The synthetic 8-cell grid (``CellGrid``): ``.write(folder)``, ``.cells``, ``.fd_mean(i)``."""
    return CellGrid()
