"""Samplers (docs/protocol.md §6): invariants, convergence on an analytic flow, NFE/FLOPs accounting, contracts."""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

import pytest
import torch
from torch import Tensor

from pfbench import PfbenchError
from pfbench.adapters.dit import DiTAdapter
from pfbench.nets import distinct_per_sample, make_net
from pfbench.registry import SAMPLERS
from pfbench.samplers.base import time_grid, to_pixels
from pfbench.samplers.dual_loop import DualLoop
from pfbench.samplers.euler import Euler
from pfbench.samplers.euler_maruyama import EulerMaruyama
from pfbench.samplers.euler_pf import EulerPF
from pfbench.samplers.heun import Heun
from pfbench.samplers.look_ahead import LookAhead
from pfbench.samplers.masks import difficulty_mask, easy_count, patch_difficulty, random_mask
from pfbench.types import Cond, ModelOut, SampleOut


class GaussianFlow:
    """Exact velocity of x_t = t·x1 + (1 − t)·x0 for x1 ~ N(μ, s²) independently per pixel.

    x_t ~ N(tμ, σ_t²), σ_t² = t²s² + (1 − t)², so v = μ + (t·s² − (1 − t))/σ_t² · (x − tμ) per pixel
    with the pixel's own token time; the ODE maps x0 = z to μ + s·z. The logvar is a fixed map.
    """

    def __init__(
        self, shape: tuple[int, int, int] = (3, 4, 4), s: float = 0.5, patch: int = 2, seed: int = 0
    ):
        g = torch.Generator().manual_seed(seed)
        self.mu = torch.rand(shape, generator=g, dtype=torch.float64) - 0.5  # (C, H, W)
        self.s = s
        self.patch_size = patch
        self.num_classes = 10
        self.has_difficulty = True
        self.input_shape = shape
        self.logvar = torch.randn(1, *shape[1:], generator=g, dtype=torch.float64)  # (1, H, W), distinct
        self.calls: list[Tensor] = []

    def __call__(self, x: Tensor, t: Tensor, cond: Cond) -> ModelOut:
        self.calls.append(t.clone())
        tp = to_pixels(t.double(), self.patch_size, x.shape[2], x.shape[3])  # (B, 1, H, W)
        var = tp**2 * self.s**2 + (1 - tp) ** 2
        v = self.mu + (tp * self.s**2 - (1 - tp)) / var * (x.double() - tp * self.mu)
        logvar = self.logvar.expand(x.shape[0], 1, *x.shape[2:])
        return ModelOut(v.to(x.dtype), logvar.to(x.dtype))

    def forwards_per_call(self, t: Tensor) -> int:
        return 1

    def gflops(self, t: Tensor) -> float:
        return 1.0 + distinct_per_sample(t)  # varies with the number of distinct times

    def exact(self, noise: Tensor) -> Tensor:
        return self.mu + self.s * noise.double()


def _tiny_pf(seed: int = 0, kind: str = "pf") -> DiTAdapter:
    torch.manual_seed(seed)
    net = make_net("cpu-xs", kind)
    with torch.no_grad():
        for p in net.parameters():  # zero-initialised layers must not make outputs trivial
            p.add_(0.1 * torch.randn_like(p))
    return DiTAdapter(net)


def _batch(
    b: int = 2, shape: tuple[int, int, int] = (3, 16, 16), seed: int = 1
) -> tuple[Tensor, Cond, Tensor]:
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(b, *shape, generator=g)
    return noise, Cond(y=torch.arange(b) % 10), torch.arange(b, dtype=torch.int64) * 7919 + 11


class _Full(DualLoop):
    def easy_mask(self, out: ModelOut, keys: Tensor | None, step: int, patch: int) -> Tensor:
        b, _, h, w = out.v.shape
        return torch.ones(b, (h // patch) * (w // patch), dtype=torch.bool)


# ---------------------------------------------------------------- time grid and difficulty mask


def test_time_grid_uniform_and_shift() -> None:
    assert torch.equal(time_grid(4), torch.tensor([0, 0.25, 0.5, 0.75, 1.0], dtype=torch.float64))
    shifted = time_grid(8, shift=3.0)
    assert shifted[0] == 0 and shifted[-1] == 1 and bool((shifted.diff() > 0).all())
    # SD3 shift on σ = 1 − t with shift 3: σ' = 3σ/(1 + 2σ); shift > 1 crowds steps near noise (t = 0)
    sigma = 1 - time_grid(8)
    assert torch.allclose(1 - shifted, 3 * sigma / (1 + 2 * sigma))
    assert shifted[1] < time_grid(8)[1]
    with pytest.raises(PfbenchError):
        time_grid(4, shift=0.0)


def test_difficulty_map_and_mask() -> None:
    logvar = torch.randn(3, 1, 8, 8)
    d = patch_difficulty(logvar, 2)
    assert d.shape == (3, 16) and d.dtype == torch.float64
    manual = logvar.double().exp()[0, 0, 2:4, 4:6].mean()  # token (row 1, col 2) = index 1*4 + 2
    assert torch.allclose(d[0, 6], manual)
    for p in (0.0, 0.25, 0.4, 0.9, 1.0):
        m = difficulty_mask(d, p, 2)
        assert (m.sum(1) == easy_count(16, p, 2)).all()
        # the quantile of the pixel-resolution map: each patch value repeated patch² = 4 times
        q = torch.quantile(d.repeat_interleave(4, dim=1), p, dim=1, keepdim=True)
        assert bool((d[m] < q.expand_as(d)[m]).all())  # every easy patch is below the quantile
        assert bool((d[~m] >= q.expand_as(d)[~m]).all())
    assert not difficulty_mask(d, 0.0, 2).any()  # strict <: the minimum is not below itself
    assert (difficulty_mask(d, 1.0, 2).sum(1) == 15).all()  # quantile 1 = max, which is excluded
    assert not difficulty_mask(torch.ones(2, 16), 0.5, 2).any()  # ties: nothing strictly below
    big = torch.rand(3, 64, dtype=torch.float64)
    assert (difficulty_mask(big, 0.4, 2).sum(1) == 25).all()  # not 26: the pixel map, not the T values


def test_random_mask_size_and_keys() -> None:
    cpu = torch.device("cpu")
    a = random_mask([1, 2, 3], step=0, tokens=64, p=0.4, patch=2, salt="x", device=cpu)
    assert (a.sum(1) == easy_count(64, 0.4, 2)).all() and easy_count(64, 0.4, 2) == 25
    b = random_mask([9, 2], step=0, tokens=64, p=0.4, patch=2, salt="x", device=cpu)
    assert torch.equal(a[1], b[1]) and not torch.equal(a[0], a[2])  # per-sample, batch-independent
    c = random_mask([1], step=1, tokens=64, p=0.4, patch=2, salt="x", device=cpu)
    assert not torch.equal(a[0], c[0])  # a fresh mask each step


# ---------------------------------------------------------------- invariants on a tiny PF DiT


@pytest.fixture(scope="module")
def tiny() -> DiTAdapter:
    return _tiny_pf()


def test_dual_loop_empty_mask_equals_fine_euler(tiny: DiTAdapter) -> None:
    noise, cond, _ = _batch()
    a = DualLoop(steps=2, p=0.0, n_inner=3)(tiny, noise, cond)
    b = Euler(steps=6)(tiny, noise, cond)
    assert a.nfe == b.nfe == 6
    assert torch.allclose(a.x, b.x, atol=1e-5)
    assert (a.x - noise).abs().mean() > 0.1  # the net is not trivial


def test_dual_loop_full_mask_equals_coarse_euler(tiny: DiTAdapter) -> None:
    noise, cond, _ = _batch()
    a = _Full(steps=2, n_inner=3)(tiny, noise, cond)
    b = Euler(steps=2)(tiny, noise, cond)
    assert a.nfe == 6 and b.nfe == 2
    assert torch.allclose(a.x, b.x, atol=1e-5)
    assert (DualLoop(steps=2, n_inner=3)(tiny, noise, cond).x - b.x).abs().max() > 1e-2


def test_look_ahead_empty_mask_or_r1_equals_euler(tiny: DiTAdapter) -> None:
    noise, cond, _ = _batch()
    ref = Euler(steps=4)(tiny, noise, cond)
    for sampler in (LookAhead(steps=4, p=0.0), LookAhead(steps=4, r=1.0)):
        out = sampler(tiny, noise, cond)
        assert out.nfe == 2 * 4 - 1  # one warm step (t_0 = 0 < 0.05)
        assert torch.allclose(out.x, ref.x, atol=1e-5)
    assert (LookAhead(steps=4)(tiny, noise, cond).x - ref.x).abs().max() > 1e-2


def test_euler_pf_equals_euler_and_sit_rejects_patch_times(tiny: DiTAdapter) -> None:
    noise, cond, _ = _batch()
    assert torch.equal(EulerPF(steps=3)(tiny, noise, cond).x, Euler(steps=3)(tiny, noise, cond).x)
    sit = _tiny_pf(kind="sit")
    assert Euler(steps=2)(sit, noise, cond).x.shape == noise.shape
    with pytest.raises(PfbenchError):
        DualLoop(steps=2)(sit, noise, cond)  # the SiT adapter refuses per-patch times (and has no logvar)


def test_dual_loop_per_token_times(tiny: DiTAdapter) -> None:
    model = GaussianFlow()
    noise, cond, _ = _batch(1, model.input_shape)
    DualLoop(steps=2, p=0.5, n_inner=4)(model, noise, cond)
    easy = difficulty_mask(patch_difficulty(model.logvar[None], 2), 0.5, 2)[0]  # (T,)
    inner = model.calls[1:4]  # step 0's three inner calls
    for j, t in enumerate(inner, start=1):
        assert torch.allclose(t[0][easy], torch.tensor(0.5))  # easy patches wait at t_1
        assert torch.allclose(t[0][~easy], torch.tensor(0.5 * j / 4))  # hard patches at Δ/n sub-steps
    la = GaussianFlow()
    LookAhead(steps=4, p=0.5, r=1.4)(la, noise, cond)
    t = la.calls[2]  # second call of step 1 (step 0 is warm): easy at 1.4·0.25, hard at 0.25
    assert torch.allclose(t[0][easy], torch.tensor(0.35)) and torch.allclose(t[0][~easy], torch.tensor(0.25))


# ---------------------------------------------------------------- convergence on the analytic flow


def _error(sampler: Any, steps: int) -> float:
    model = GaussianFlow(shape=(3, 8, 8))
    noise, cond, keys = _batch(4, model.input_shape)
    noise = noise.double()
    out = dataclasses.replace(sampler, steps=steps)(model, noise, cond, keys)
    return float((out.x - model.exact(noise)).abs().mean())


def test_euler_first_order_heun_second_order() -> None:
    e = [_error(Euler(steps=1), n) for n in (16, 32, 64)]
    h = [_error(Heun(steps=1), n) for n in (16, 32, 64)]
    for a, b in zip(e, e[1:], strict=False):
        assert 1.8 < a / b < 2.2
    for a, b in zip(h, h[1:], strict=False):
        assert 3.5 < a / b < 4.5
    assert h[-1] < e[-1]


@pytest.mark.parametrize(
    "sampler", [DualLoop(steps=1, p=0.4, n_inner=2), LookAhead(steps=1), EulerPF(steps=1)]
)
def test_patch_samplers_converge_on_exact_flow(sampler: Any) -> None:
    # pixels are independent in the analytic flow, so moving patches at different times is still exact
    errs = [_error(sampler, n) for n in (8, 16, 32)]
    assert errs[0] > errs[1] > errs[2] and errs[2] < 0.02


def test_euler_maruyama_matches_data_distribution() -> None:
    model = GaussianFlow(shape=(1, 2, 2), s=0.5)
    b = 3000
    noise = torch.randn(b, 1, 2, 2, generator=torch.Generator().manual_seed(3))
    keys = torch.arange(b, dtype=torch.int64)
    out = EulerMaruyama(steps=100)(model, noise, Cond(torch.zeros(b, dtype=torch.int64)), keys)
    assert out.nfe == 100
    assert torch.allclose(out.x.double().mean(0), model.mu, atol=0.04)
    assert torch.allclose(out.x.double().std(0), torch.full((1, 2, 2), 0.5, dtype=torch.float64), atol=0.04)
    # stochastic: the endpoint is not the ODE map of the noise
    assert (out.x.double() - model.exact(noise)).abs().mean() > 0.1
    with pytest.raises(PfbenchError):
        EulerMaruyama(steps=10)(model, noise[:2], Cond(torch.zeros(2, dtype=torch.int64)))  # keys required
    with pytest.raises(PfbenchError):
        EulerMaruyama(steps=10, diffusion="SBDM")  # infinite at t = 0
    placeholder = EulerMaruyama(steps=1)  # a placeholder before with_budget is allowed, running it is not
    assert placeholder.with_budget(1 + 1).steps == 2
    with pytest.raises(PfbenchError):
        placeholder(model, noise[:2], Cond(torch.zeros(2, dtype=torch.int64)), keys[:2])


# ---------------------------------------------------------------- accounting


def test_reported_cost_equals_calls_and_fits_budget() -> None:
    for name in SAMPLERS.names():
        cls = SAMPLERS.get(name)
        base = cls(steps=1)  # the runner's placeholder, then with_budget
        for budget in range(1, 41):
            try:
                sampler = base.with_budget(budget)
            except PfbenchError:
                assert base.cost(base.min_steps) > budget, (name, budget)
                continue
            model = GaussianFlow()
            noise, cond, keys = _batch(2, model.input_shape)
            out = sampler(model, noise, cond, keys)
            assert out.nfe == len(model.calls) == sampler.cost(sampler.steps) <= budget, (name, budget)
            assert out.forwards == out.nfe
            assert math.isclose(out.gflops, sum(model.gflops(t) for t in model.calls), rel_tol=1e-12)
            assert sampler.cost(sampler.steps + 1) > budget  # the largest step count that fits
    assert DualLoop(steps=1).with_budget(17).steps == 4 and Heun(steps=1).with_budget(6).steps == 3
    assert LookAhead(steps=1).with_budget(40).cost(LookAhead(steps=1).with_budget(40).steps) <= 40


def test_from_budget_parses_params_once_and_fits() -> None:
    assert DualLoop.from_budget({"p": 0.2, "n_inner": 3}, 17) == DualLoop(steps=5, p=0.2, n_inner=3)
    assert Heun.from_budget({}, 6) == Heun(steps=1).with_budget(6) == Heun(steps=3)
    assert LookAhead.from_budget({"r": 1.2}, 40) == LookAhead(steps=1, r=1.2).with_budget(40)
    for params, needle in (({"q": 1}, "bad parameters"), ({"p": 1.5}, "p must be in [0, 1]"),
                           ({"steps": 4}, "steps follows from the NFE budget")):
        with pytest.raises(PfbenchError, match=re.escape(needle)):
            DualLoop.from_budget(params, 16)
    with pytest.raises(PfbenchError, match="budget is 1"):
        EulerMaruyama.from_budget({}, 1)  # needs two calls


def test_suite_builds_each_sampler_once() -> None:
    """``SamplerSpec.build`` (validate, plan, run and figures all call it) is ``from_budget``, built once."""
    from pfbench.suite.spec import SamplerSpec

    spec = SamplerSpec("dual_loop", {"p": 0.2})
    built = spec.build(16)
    assert built == DualLoop.from_budget({"p": 0.2}, 16) and SamplerSpec("dual_loop", {"p": 0.2}).build(16) is built
    assert spec.build(12) is not built and spec.build(12).steps == 3  # N·n_inner = N·4 calls


def test_costs_match_spec() -> None:
    assert Euler(steps=7).cost(7) == 7 and Heun(steps=7).cost(7) == 13
    assert DualLoop(steps=5, n_inner=4).cost(5) == 20
    assert LookAhead(steps=20).cost(20) == 2 * 20 - 1  # only t_0 = 0 is warm: t_1 = 0.05 is not < 0.05
    assert LookAhead(steps=21).cost(21) == 2 * 21 - 2  # t_1 = 1/21 < 0.05
    assert LookAhead(steps=20, t_warm=0.0).cost(20) == 40


# ---------------------------------------------------------------- contract over every registered sampler


@pytest.mark.parametrize("name", SAMPLERS.names())
def test_sampler_contract(name: str) -> None:
    cls = SAMPLERS.get(name)
    sampler: Any = cls(steps=4)
    assert dataclasses.fields(sampler)  # a dataclass (raises TypeError otherwise)
    with pytest.raises(dataclasses.FrozenInstanceError):
        sampler.steps = 5  # type: ignore[misc]
    model = GaussianFlow(shape=(3, 4, 4))
    noise, cond, keys = _batch(3, model.input_shape)
    out = sampler(model, noise, cond, keys)
    assert isinstance(out, SampleOut) and out.x.shape == noise.shape and out.x.dtype == torch.float32
    assert bool(torch.isfinite(out.x).all())
    assert out.nfe == sampler.cost(4) and isinstance(out.nfe, int) and isinstance(out.forwards, int)
    again = sampler(GaussianFlow(shape=(3, 4, 4)), noise, cond, keys)
    assert torch.equal(out.x, again.x)  # deterministic given noise and keys
    single = sampler(GaussianFlow(shape=(3, 4, 4)), noise[1:2], Cond(cond.y[1:2]), keys[1:2])
    assert torch.allclose(single.x, out.x[1:2], atol=1e-6)  # sample i depends only on its own inputs
    with pytest.raises(PfbenchError):
        cls(steps=0)
    built = cls.from_budget({}, 12)  # how every suite path builds it: parameters once, then the budget
    assert type(built) is cls and built == cls(steps=1).with_budget(12) and built.cost(built.steps) <= 12


def test_samplers_see_only_the_adapter_protocol() -> None:
    """No sampler module names a concrete adapter: the conditional velocity comes in ``ModelOut.v_cond``."""
    from pathlib import Path

    import pfbench.samplers

    for path in Path(pfbench.samplers.__file__).parent.glob("*.py"):
        text = path.read_text()
        for concrete in ("adapters.cfg", "adapters.dit", "GuidedOut", "isinstance(out", "getattr(model"):
            assert concrete not in text, (path.name, concrete)
