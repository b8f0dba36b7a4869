"""Adapter contract (pfbench.adapters.base), run over every registered adapter.

Each built-in adapter name has a builder below, so registering a new one without a contract entry fails
``test_every_builtin_adapter_has_a_contract_entry``. The contract itself is
conftest's ``adapter_contract`` fixture, which tests/test_plugins.py runs on plugin adapters too.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

from pfbench import PfbenchError
from pfbench.adapters.base import MEMBERS, Adapter, check_adapter
from pfbench.nets import DiT, T2INet, distinct_per_sample, forward_flops, make_net
from pfbench.nets.flops import text_flops
from pfbench.nets.presets import t2i_config
from pfbench.plugins import BUILTINS
from pfbench.registry import ADAPTERS
from pfbench.types import Cond, ModelOut


def _net(kind: str = "pf", seed: int = 0) -> DiT:
    torch.manual_seed(seed)
    net = make_net("cpu-xs", kind)
    with torch.no_grad():
        for p in net.parameters():  # zero-initialised layers must not make outputs trivial
            p.add_(0.1 * torch.randn_like(p))
    return net.eval()


def _external(tmp: Path) -> tuple[Adapter, DiT]:
    path = tmp / "sit_external.pt"  # written by the test from conftest's sit_release
    model = ADAPTERS.get("external")(path, "sit", "cpu-xs")
    return model, model.net


def _t2i(tmp: Path) -> tuple[Adapter, Any]:
    from _text_stub import StubTextEncoder  # pytest puts tests/ on sys.path

    torch.manual_seed(0)
    net = T2INet(t2i_config("cpu-xs", "pf_t2i", text_dim=8, text_len=6))
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return ADAPTERS.get("t2i")(net, StubTextEncoder()), net


# name -> tmp folder -> (adapter as a suite would build it, the network whose forward passes are counted)
BUILDERS: dict[str, Callable[[Path], tuple[Adapter, Any]]] = {
    "dit": lambda tmp: (lambda net: (ADAPTERS.get("dit")(net), net))(_net()),
    "cfg": lambda tmp: (lambda net: (ADAPTERS.get("cfg")(ADAPTERS.get("dit")(net), 2.0), net))(_net()),
    "external": _external,
    "t2i": _t2i,
}


def test_every_builtin_adapter_has_a_contract_entry() -> None:
    assert set(BUILDERS) == set(BUILTINS["adapters"])


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_adapter_contract(name: str, tmp_path: Path, sit_release: Callable[[Path], Path],
                          adapter_contract: Callable[[Adapter], None],
                          contract_cond: Callable[[int, int], Cond]) -> None:
    if name == "external":
        sit_release(tmp_path / "sit_external.pt")
    model, net = BUILDERS[name](tmp_path)
    adapter_contract(model)
    assert model.input_shape == (net.cfg.in_channels, net.cfg.input_size, net.cfg.input_size)
    # forwards_per_call counts the network's real passes: rows through DiT.forward per sample and call
    rows: list[int] = []
    hook = net.register_forward_hook(lambda mod, args, out: rows.append(args[0].shape[0]))
    try:
        b, tokens = 2, (net.cfg.input_size // net.cfg.patch) ** 2
        x = torch.randn(b, *model.input_shape)
        t = torch.full((b, tokens), 0.5)
        model(x, t, contract_cond(b, model.num_classes))
    finally:
        hook.remove()
    assert sum(rows) == b * model.forwards_per_call(t)
    rows = distinct_per_sample(t) if net.cfg.per_token_t else 1.0
    # a text-to-image adapter refines each prompt once (``gflops_once``), not on every call
    per_pass = (forward_flops(net.cfg, rows) - (text_flops(net.cfg) if isinstance(net, T2INet) else 0.0)) / 1e9
    assert model.gflops(t) == pytest.approx(model.forwards_per_call(t) * per_pass, rel=1e-12)


def test_check_adapter_names_what_is_missing() -> None:
    class Half:
        patch_size, num_classes, has_difficulty = 2, 10, False

        def __call__(self, x: Tensor, t: Tensor, cond: Cond) -> ModelOut:
            return ModelOut(x)

    with pytest.raises(PfbenchError, match="lacks input_shape, forwards_per_call, gflops"):
        check_adapter(Half(), "models.m")
    whole = Half()
    for bad, needle in (((3, 15, 16), "patch_size 2 must be"), ((3, 16), "input_shape must be")):
        whole.input_shape = bad  # type: ignore[attr-defined]
        whole.forwards_per_call = lambda t: 1  # type: ignore[attr-defined]
        whole.gflops = lambda t: 1.0  # type: ignore[attr-defined]
        with pytest.raises(PfbenchError, match=needle):
            check_adapter(whole, "models.m")
    assert "input_shape" in MEMBERS and "forwards_per_call" in MEMBERS


def test_suite_estimates_ask_the_adapter(tmp_path: Path) -> None:
    """``Runner.estimate`` (pfbench plan, the run's ETA) counts through CFG's own rule, without loading weights."""
    from pfbench.suite.parse import load_suite
    from pfbench.suite.runner import Runner
    from pfbench.suite.spec import plan

    suite = Path(__file__).resolve().parents[1] / "suites" / "ci.yaml"
    spec = load_suite(suite, ["sweep.cfg_scale=[1.0,2.0]", "+sweep.cfg_interval=[null,[0.5,1.0]]"])
    runner = Runner(spec, results_root=tmp_path, progress=False)
    cells = [c for c in plan(spec) if c.model == "pf" and c.sampler.name == "look_ahead" and c.seed == 0]
    assert len(cells) == 3  # unguided, guided, guided in an interval
    net = DiT(runner.suite_models.net_config("pf"))
    model = ADAPTERS.get("dit")(net)
    t = torch.zeros(1, 64)
    for cell in cells:
        sampler = cell.sampler.build(cell.nfe)
        guided = 2 if cell.cfg_scale != 1.0 else 1  # an interval is ignored: an upper bound
        forwards, gflops = runner.estimate(cell)
        assert forwards == sampler.cost(sampler.steps) * guided == (7 if guided == 1 else 14)
        assert gflops == pytest.approx(forwards * model.gflops(t) * cell.num_samples, rel=1e-12)
