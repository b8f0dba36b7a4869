"""Text-to-image network (docs/protocol.md §3): shapes, zero-initialised difficulty head, dedup == naive modulation,
text conditioning and its padding mask, analytic FLOPs == counted FLOPs."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from pfbench import PfbenchError
from pfbench.nets import T2INet, build_net, config_from_dict, distinct_per_sample, forward_flops
from pfbench.nets.presets import t2i_config


def perturbed(kind: str = "pf_t2i", seed: int = 0) -> T2INet:
    """A tiny net whose zero-initialised layers are randomised, so every path affects the output."""
    torch.manual_seed(seed)
    net = T2INet(t2i_config("cpu-xs", kind, depth=2, width=32, heads=2, text_dim=8, text_len=6)).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net


def text(b: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random encoder tokens (b, 6, 8) and a padding mask with 0..6 real tokens per row."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randn(b, 6, 8, generator=g)
    lengths = torch.arange(b) % 7  # includes an empty prompt (no real token)
    mask = torch.arange(6)[None] < lengths[:, None]
    return tokens, mask


def test_shapes_and_fresh_logvar_is_zero() -> None:
    cfg = t2i_config("cpu-xs", "pf_t2i", text_dim=8, text_len=6)
    net = T2INet(cfg).eval()
    tokens, mask = text(3)
    x, t = torch.randn(3, 3, 16, 16), torch.rand(3, cfg.tokens)
    v, logvar = net(x, t, tokens, mask)
    assert v.shape == (3, 3, 16, 16) and logvar is not None and logvar.shape == (3, 1, 16, 16)
    assert torch.equal(logvar, torch.zeros_like(logvar)) and torch.equal(v, torch.zeros_like(v))  # zero-init head
    sit = T2INet(t2i_config("cpu-xs", "sit_t2i", text_dim=8, text_len=6)).eval()
    v2, lv2 = sit(x, torch.rand(3), tokens, mask)
    assert v2.shape == (3, 3, 16, 16) and lv2 is None
    with pytest.raises(PfbenchError, match="global-timestep"):
        sit(x, t, tokens, mask)


@pytest.mark.parametrize("t_kind", ["constant", "few", "all_distinct"])
def test_dedup_equals_naive(t_kind: str, dedup_equals_naive: Callable[..., None]) -> None:
    net = perturbed()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, 3, 16, 16, generator=g)
    tokens, mask = text(5)
    dedup_equals_naive(lambda t, dedup: net(x, t, tokens, mask, dedup=dedup), t_kind, 5, net.cfg.tokens, g)


def test_text_conditions_and_padding_is_ignored() -> None:
    """Other text changes the output; masked (padding) positions and the rest of the batch do not."""
    net = perturbed()
    x, t = torch.randn(2, 3, 16, 16), torch.rand(2, net.cfg.tokens)
    tokens, mask = text(2, seed=3)
    mask = torch.tensor([[True, True, True, False, False, False]] * 2)
    v, _ = net(x, t, tokens, mask)
    other = tokens.clone()
    other[:, 3:] = torch.randn(2, 3, 8)  # only padding changes
    v_pad, _ = net(x, t, other, mask)
    torch.testing.assert_close(v, v_pad, rtol=0, atol=1e-6)
    other[:, 0] += 1.0  # a real token changes
    v_txt, _ = net(x, t, other, mask)
    assert (v_txt - v).abs().max() > 1e-4
    v_one, _ = net(x[:1], t[:1], tokens[:1], mask[:1])  # the other sample does not matter
    torch.testing.assert_close(v_one, v[:1], rtol=1e-5, atol=1e-6)
    empty, _ = net(x, t, tokens, torch.zeros_like(mask))  # the empty prompt: finite (the register token)
    assert torch.isfinite(empty).all()


@pytest.mark.parametrize("kind,dedup", [("pf_t2i", True), ("pf_t2i", False), ("sit_t2i", True)])
def test_analytic_flops_match_counted(kind: str, dedup: bool) -> None:
    net = T2INet(t2i_config("cpu-xs", kind, text_dim=8, text_len=6)).eval()
    b, n = 3, net.cfg.tokens
    g = torch.Generator().manual_seed(0)
    base = torch.rand(b, 1, generator=g)
    t = (base + 0.1 * torch.randint(0, 3, (b, n), generator=g)).clamp(0, 1) if kind == "pf_t2i" else base.expand(b, n)
    tokens, mask = text(b)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter, torch.no_grad():
        net(torch.randn(b, 3, 16, 16), t, tokens, mask, dedup=dedup)
    rows = (distinct_per_sample(t) if dedup else n) if kind == "pf_t2i" else 1.0
    counted = counter.get_total_flops() / b
    assert abs(forward_flops(net.cfg, rows) - counted) / counted < 0.02


def test_config_round_trip_and_errors() -> None:
    cfg = t2i_config("cpu-s", "pf_t2i", text_dim=16)
    assert config_from_dict(cfg.__dict__) == cfg and isinstance(build_net(cfg), T2INet)
    with pytest.raises(PfbenchError, match="did you mean 'text_dim'"):
        t2i_config("cpu-xs", "pf_t2i", text_dmi=3)
    with pytest.raises(PfbenchError, match="text-to-image kind"):
        t2i_config("cpu-xs", "pf")
    net = perturbed()
    with pytest.raises(PfbenchError, match="do not fit the network"):
        net(torch.randn(1, 3, 16, 16), torch.rand(1), torch.randn(1, 9, 8), torch.ones(1, 9, dtype=torch.bool))
