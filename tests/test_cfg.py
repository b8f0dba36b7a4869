"""Classifier-free guidance wrapper (docs/protocol.md §6): exactness at scale 1, all channels, interval, accounting."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from pfbench import PfbenchError
from pfbench.adapters.cfg import CFG
from pfbench.adapters.dit import DiTAdapter
from pfbench.nets import make_net
from pfbench.registry import ADAPTERS
from pfbench.samplers.euler import Euler
from pfbench.samplers.look_ahead import LookAhead
from pfbench.types import Cond, ModelOut


class ClassFlow:
    """Analytic adapter whose every output channel depends on the class (null class included)."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.table = torch.randn(11, 3, 4, 4, generator=g)  # (classes + null, C, H, W)
        self.lv = torch.randn(11, 1, 4, 4, generator=g)
        self.patch_size = 2
        self.num_classes = 10
        self.has_difficulty = True
        self.input_shape = (3, 4, 4)
        self.batches: list[tuple[int, Tensor]] = []

    def __call__(self, x: Tensor, t: Tensor, cond: Cond) -> ModelOut:
        self.batches.append((x.shape[0], cond.y.clone()))
        tm = t.mean(dim=1)[:, None, None, None]  # (B, 1, 1, 1)
        return ModelOut(self.table[cond.y] * (1 + tm) - 0.3 * x, self.lv[cond.y] + tm)

    def forwards_per_call(self, t: Tensor) -> int:
        return 1

    def gflops(self, t: Tensor) -> float:
        return 3.0


def _inputs(b: int = 3, t: float = 0.5) -> tuple[Tensor, Tensor, Cond]:
    x = torch.randn(b, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    return x, torch.full((b, 4), t), Cond(torch.arange(b))


def test_scale_one_is_the_unguided_model_with_one_forward() -> None:
    torch.manual_seed(0)
    net = make_net("cpu-xs", "pf")
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    model = DiTAdapter(net)
    x = torch.randn(2, 3, 16, 16)
    t = torch.full((2, 64), 0.3)
    cond = Cond(torch.tensor([1, 4]))
    plain, guided = model(x, t, cond), CFG(model, 1.0)(x, t, cond)
    assert torch.equal(guided.v, plain.v) and torch.equal(guided.logvar, plain.logvar)  # type: ignore[arg-type]
    assert CFG(model, 1.0).forwards_per_call(t) == 1 and CFG(model, 1.0).gflops(t) == model.gflops(t)
    assert CFG(model, 2.0).forwards_per_call(t) == 2 and CFG(model, 2.0).gflops(t) == 2 * model.gflops(t)
    counted = ClassFlow()
    out = CFG(counted, 1.0)(*_inputs())
    assert [b for b, _ in counted.batches] == [3]  # no doubled batch
    assert out.v_cond is None and out.cond_velocity() is out.v  # unguided: the conditional v is v itself
    assert CFG(model, 2.0).input_shape == model.input_shape == (3, 16, 16)


def test_guidance_formula_on_all_channels_and_logvar() -> None:
    model = ClassFlow()
    x, t, cond = _inputs()
    out = CFG(model, 3.0)(x, t, cond)
    assert type(out) is ModelOut and out.v_cond is not None  # plain data: samplers need no CFG type
    ((b, y),) = model.batches
    assert b == 6 and torch.equal(y[:3], cond.y) and bool((y[3:] == 10).all())  # one doubled call, null = 10
    c, u = model(x, t, cond), model(x, t, Cond(torch.full((3,), 10)))
    assert torch.allclose(out.v, u.v + 3.0 * (c.v - u.v), atol=1e-6)
    assert out.logvar is not None and c.logvar is not None and u.logvar is not None
    assert torch.allclose(out.logvar, u.logvar + 3.0 * (c.logvar - u.logvar), atol=1e-6)
    assert torch.allclose(out.v_cond, c.v) and torch.equal(out.cond_velocity(), out.v_cond)
    for ch in range(3):  # every channel moves away from the conditional output
        assert (out.v[:, ch] - c.v[:, ch]).abs().max() > 1e-2


def test_guidance_interval_uses_per_sample_time() -> None:
    model = ClassFlow()
    cfg = CFG(model, 4.0, interval=(0.4, 0.6))
    x, _, cond = _inputs()
    t = torch.tensor([[0.5] * 4, [0.9] * 4, [0.9, 0.9, 0.1, 0.9]])  # in, out, out (min over tokens is 0.1)
    assert cfg.guided_rows(t).tolist() == [True, False, False]
    out = cfg(x, t, cond)
    c, u = model(x, t, cond), model(x, t, Cond(torch.full((3,), 10)))
    assert torch.allclose(out.v[0], u.v[0] + 4.0 * (c.v[0] - u.v[0]), atol=1e-6)
    assert torch.equal(out.v[1:], c.v[1:])  # w = 1 outside: the conditional output
    outside = torch.full((3, 4), 0.9)
    assert cfg.forwards_per_call(outside) == 1 and cfg.gflops(outside) == 3.0
    model.batches.clear()
    assert torch.equal(cfg(x, outside, cond).v, model(x, outside, cond).v)
    assert [b for b, _ in model.batches] == [3, 3]  # the all-outside call was not doubled
    with pytest.raises(PfbenchError):
        CFG(model, 2.0, interval=(0.7, 0.2))


def test_sampler_accounting_under_guidance() -> None:
    x, _, cond = _inputs()
    out = Euler(steps=4)(CFG(ClassFlow(), 2.0), x, cond)
    assert out.nfe == 4 and out.forwards == 8 and out.gflops == pytest.approx(4 * 2 * 3.0)
    # grid 0, .25, .5, .75: only t = 0.5 and 0.75 lie in [0.5, 1]
    out = Euler(steps=4)(CFG(ClassFlow(), 2.0, interval=(0.5, 1.0)), x, cond)
    assert out.nfe == 4 and out.forwards == 6 and out.gflops == pytest.approx(6 * 3.0)


def test_look_ahead_warm_steps_and_jump_use_conditional_velocity() -> None:
    x, _, cond = _inputs()
    model = ClassFlow()
    guided = CFG(model, 2.0)
    out = LookAhead(steps=4, p=0.0, t_warm=0.3)(guided, x, cond)  # empty mask: the second call repeats v
    ref = x
    for k in range(4):
        t = torch.full((3, 4), k / 4)
        o = guided(ref, t, cond)
        assert o.v_cond is not None
        ref = ref + 0.25 * (o.v_cond if k / 4 <= 0.3 else o.v)
    assert torch.allclose(out.x, ref, atol=1e-6)
    a = LookAhead(steps=4, r=1.5)(guided, x, cond).x
    b = LookAhead(steps=4, r=1.5, guided_jump=True)(guided, x, cond).x
    assert (a - b).abs().max() > 1e-3
    plain = CFG(model, 1.0)
    assert torch.equal(
        LookAhead(steps=4, r=1.5)(plain, x, cond).x,
        LookAhead(steps=4, r=1.5, guided_jump=True)(plain, x, cond).x,
    )


def test_registered() -> None:
    assert ADAPTERS.get("cfg") is CFG and ADAPTERS.get("dit") is DiTAdapter


def test_guided_cost_doubles_the_wrapped_adapters_own_count() -> None:
    """CFG's ×2 applies to whatever the wrapped adapter reports (its forwards and GFLOPs per call)."""

    class TwoPass(ClassFlow):
        def forwards_per_call(self, t: Tensor) -> int:
            return 2

    t = torch.full((3, 4), 0.5)
    assert CFG(TwoPass(), 2.0).forwards_per_call(t) == 4 and CFG(TwoPass(), 1.0).forwards_per_call(t) == 2
    assert CFG(TwoPass(), 2.0, interval=(0.0, 0.1)).forwards_per_call(t) == 2  # outside the interval: undoubled
