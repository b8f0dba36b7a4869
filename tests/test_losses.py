"""Tests for pfbench.train.losses: values by hand, stop-gradient on v, the NLL optimum, clamping."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from pfbench import PfbenchError
from pfbench.train.losses import difficulty_nll, flow_matching_loss, pf_loss


def tensors(seed: int = 0, b: int = 2, c: int = 3, hw: int = 4) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(b, c, hw, hw, generator=g)
    u = torch.randn(b, c, hw, hw, generator=g)
    logvar = torch.randn(b, 1, hw, hw, generator=g)
    return v, logvar, u


def test_flow_matching_by_hand() -> None:
    v = torch.tensor([[[[1.0, 2.0]], [[0.0, -1.0]]]])  # (1, 2, 1, 2)
    u = torch.tensor([[[[0.0, 0.0]], [[3.0, 1.0]]]])
    assert flow_matching_loss(v, u).item() == pytest.approx((1 + 4 + 9 + 4) / 4)


def test_difficulty_nll_by_hand_broadcasts_over_channels() -> None:
    v = torch.tensor([[[[1.0, 0.0]], [[2.0, 0.0]]]])  # (B=1, C=2, H=1, W=2)
    u = torch.tensor([[[[0.0, 0.0]], [[0.0, 3.0]]]])
    logvar = torch.tensor([[[[0.5, -1.0]]]])  # (1, 1, 1, 2)
    errs = [(1.0, 0.5), (0.0, -1.0), (4.0, 0.5), (9.0, -1.0)]  # (squared error, s) per element
    want = sum(0.5 * (math.log(2 * math.pi) + s + e * math.exp(-s)) for e, s in errs) / 4
    assert difficulty_nll(logvar, v, u).item() == pytest.approx(want, rel=1e-6)


def test_pf_loss_combines_with_weight() -> None:
    v, logvar, u = tensors()
    total, parts = pf_loss(v, logvar, u, nll_weight=0.3)
    assert set(parts) == {"fm", "nll"}
    assert parts["fm"].item() == pytest.approx(flow_matching_loss(v, u).item())
    assert parts["nll"].item() == pytest.approx(difficulty_nll(logvar, v, u).item())
    assert total.item() == pytest.approx(parts["fm"].item() + 0.3 * parts["nll"].item(), rel=1e-6)
    default, _ = pf_loss(v, logvar, u)
    assert default.item() == pytest.approx(parts["fm"].item() + 0.01 * parts["nll"].item(), rel=1e-6)
    alone, only = pf_loss(v, None, u)
    assert set(only) == {"fm"} and alone.item() == pytest.approx(parts["fm"].item())


def test_nll_gradient_reaches_logvar_never_v() -> None:
    v, logvar, u = tensors(1)
    v.requires_grad_(True)
    logvar.requires_grad_(True)
    gv, gs = torch.autograd.grad(difficulty_nll(logvar, v, u), [v, logvar], allow_unused=True)
    assert gv is None or bool((gv == 0).all())
    assert gs is not None and bool((gs != 0).all())


class TinyNet(nn.Module):
    """A network with a shared trunk, a velocity head and a difficulty head."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Conv2d(3, 8, 1)
        self.v_head = nn.Conv2d(8, 3, 1)
        self.s_head = nn.Conv2d(8, 1, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.tanh(self.trunk(x))  # (B, 8, H, W)
        return self.v_head(h), self.s_head(h)


def test_nll_trains_only_through_the_difficulty_path() -> None:
    torch.manual_seed(0)
    net = TinyNet()
    x, _, u = tensors(2)
    v, logvar = net(x)
    difficulty_nll(logvar, v, u).backward()
    assert all(p.grad is None or bool((p.grad == 0).all()) for p in net.v_head.parameters())
    assert net.s_head.weight.grad is not None and net.s_head.weight.grad.abs().sum() > 0
    assert net.trunk.weight.grad is not None and net.trunk.weight.grad.abs().sum() > 0  # via logvar
    # the full PF loss: the velocity head sees only the FM gradient
    net.zero_grad()
    v, logvar = net(x)
    pf_loss(v, logvar, u, nll_weight=5.0)[0].backward()
    assert net.v_head.weight.grad is not None
    with_nll = net.v_head.weight.grad.clone()
    net.zero_grad()
    v, _ = net(x)
    flow_matching_loss(v, u).backward()
    fm_only = net.v_head.weight.grad
    assert fm_only is not None and torch.allclose(with_nll, fm_only, atol=1e-7)


def test_nll_optimum_is_log_mean_squared_error_per_pixel() -> None:
    v, _, u = tensors(3, b=2, c=4, hw=3)
    s = torch.zeros(2, 1, 3, 3, requires_grad=True)
    opt = torch.optim.LBFGS([s], lr=1.0, max_iter=200, tolerance_grad=1e-12, tolerance_change=1e-14)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = difficulty_nll(s, v, u)
        loss.backward()
        return loss

    opt.step(closure)
    want = (u - v).square().mean(1, keepdim=True).log()  # (B, 1, H, W) log E_c[(u − v)²]
    assert torch.allclose(s.detach(), want, atol=1e-3)
    # and the gradient vanishes exactly there
    at = want.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(difficulty_nll(at, v, u), [at])
    assert g.abs().max() < 1e-6


def test_clamp_bounds_value_and_gradient() -> None:
    v, _, u = tensors(4)
    for outside, edge in [(-100.0, -30.0), (50.0, 20.0)]:
        s_out = torch.full((2, 1, 4, 4), outside, requires_grad=True)
        s_edge = torch.full((2, 1, 4, 4), edge)
        assert difficulty_nll(s_out, v, u).item() == pytest.approx(difficulty_nll(s_edge, v, u).item())
        (g,) = torch.autograd.grad(difficulty_nll(s_out, v, u), [s_out])
        assert bool((g == 0).all())
    inside = torch.full((2, 1, 4, 4), 3.0)
    assert difficulty_nll(inside, v, u).item() != pytest.approx(difficulty_nll(inside + 1, v, u).item())
    assert math.isfinite(difficulty_nll(torch.full((2, 1, 4, 4), -1e4), v, u).item())


def test_bf16_inputs_give_float32_losses() -> None:
    v, logvar, u = (x.bfloat16() for x in tensors(5))
    total, parts = pf_loss(v, logvar, u)
    assert total.dtype == torch.float32 and parts["nll"].dtype == torch.float32


def test_shape_errors() -> None:
    v, logvar, u = tensors(6)
    with pytest.raises(PfbenchError, match="logvar"):
        difficulty_nll(logvar.expand(2, 3, 4, 4), v, u)
    with pytest.raises(PfbenchError, match="differ"):
        flow_matching_loss(v, u[:1])
    with pytest.raises(PfbenchError, match="nll_weight"):
        pf_loss(v, logvar, u, nll_weight=-1.0)
