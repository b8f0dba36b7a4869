"""Network invariants: dedup == naive modulation, analytic FLOPs == counted FLOPs, batch invariance."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from pfbench import PfbenchError
from pfbench.nets import DiT, DiTConfig, T2IConfig, distinct_per_sample, forward_flops, make_net, net_config
from pfbench.nets.base import PatchNetConfig


def perturbed(kind: str = "pf", seed: int = 0, **kw: object) -> DiT:
    """A tiny net whose zero-initialised layers are randomised, so every path affects the output."""
    torch.manual_seed(seed)
    net = make_net("cpu-xs", kind, depth=2, width=32, heads=2, **kw).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net


def sampler_like_t(b: int, n: int, seed: int = 0) -> torch.Tensor:
    """2–3 distinct timesteps per sample, like dual-loop / look-ahead states."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(b, 1, generator=g)
    choice = torch.randint(0, 3, (b, n), generator=g)
    return (base + 0.1 * choice.float()).clamp(0, 1)


@pytest.mark.parametrize("t_kind", ["constant", "few", "all_distinct"])
def test_dedup_equals_naive(t_kind: str, dedup_equals_naive: Callable[..., None]) -> None:
    net = perturbed()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, 3, 16, 16, generator=g)
    y = torch.tensor([0, 3, 10, 7, 3])  # includes the null class
    dedup_equals_naive(lambda t, dedup: net(x, t, y, dedup=dedup), t_kind, 5, net.cfg.tokens, g)


def test_per_token_time_matters() -> None:
    """Changing one token's time changes the output near that token (PF conditioning is per token)."""
    net = perturbed()
    x = torch.randn(1, 3, 16, 16)
    t = torch.full((1, net.cfg.tokens), 0.5)
    t2 = t.clone()
    t2[0, 0] = 0.9
    v1, _ = net(x, t, torch.tensor([1]))
    v2, _ = net(x, t2, torch.tensor([1]))
    assert not torch.allclose(v1, v2)


def test_batch_size_invariance() -> None:
    net = perturbed()
    g = torch.Generator().manual_seed(2)
    x = torch.randn(9, 3, 16, 16, generator=g)
    t = sampler_like_t(9, net.cfg.tokens, seed=3)
    y = torch.randint(0, 10, (9,), generator=g)
    full, _ = net(x, t, y)
    parts = torch.cat([net(x[i : i + 1], t[i : i + 1], y[i : i + 1])[0] for i in range(9)])
    torch.testing.assert_close(full, parts, rtol=1e-5, atol=1e-6)


def test_sit_accepts_scalar_t_and_rejects_per_token() -> None:
    net = perturbed("sit")
    x = torch.randn(2, 3, 16, 16)
    y = torch.tensor([1, 2])
    t = torch.tensor([0.2, 0.7])
    v_scalar, lv = net(x, t, y)
    v_rows, _ = net(x, t[:, None].expand(2, net.cfg.tokens), y)
    assert lv is None
    torch.testing.assert_close(v_scalar, v_rows)
    with pytest.raises(PfbenchError, match="global-timestep"):
        net(x, torch.rand(2, net.cfg.tokens), y)


def test_fresh_pf_logvar_starts_at_zero() -> None:
    net = make_net("cpu-xs", "pf")
    v, lv = net(torch.randn(2, 3, 16, 16), torch.rand(2, 64), torch.tensor([0, 1]))
    assert lv is not None and lv.shape == (2, 1, 16, 16)
    assert torch.count_nonzero(lv) == 0 and torch.count_nonzero(v) == 0


def test_unpatchify_inverts_token_order() -> None:
    """Token k of the output covers the same p×p pixels that token k of the patch embedding saw."""
    net = make_net("cpu-xs", "sit", depth=1, width=32, heads=2)
    p, g, c = net.cfg.patch, net.cfg.grid, net.cfg.out_channels
    tokens = torch.arange(g * g, dtype=torch.float32)[None, :, None].expand(1, g * g, p * p * c)
    img = net.unpatchify(tokens.contiguous())
    x = torch.zeros(1, 3, 16, 16)
    x[0, :, 2 * p : 3 * p, 5 * p : 6 * p] = 1.0  # patch at row 2, col 5
    emb = torch.nn.functional.unfold(x, kernel_size=p, stride=p)[0].sum(0)  # (T,)
    assert int(emb.argmax()) == 2 * g + 5
    assert torch.all(img[0, :, 2 * p : 3 * p, 5 * p : 6 * p] == 2 * g + 5)


@pytest.mark.parametrize("kind,dedup", [("pf", True), ("pf", False), ("sit", True)])
def test_analytic_flops_match_counted(kind: str, dedup: bool) -> None:
    net = make_net("cpu-xs", kind).eval()
    b, n = 3, net.cfg.tokens
    t = sampler_like_t(b, n) if kind == "pf" else torch.rand(b, 1).expand(b, n)
    x, y = torch.randn(b, 3, 16, 16), torch.tensor([1, 2, 3])
    # The math backend decomposes attention into matmuls the counter sees on every device.
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter, torch.no_grad():
        net(x, t, y, dedup=dedup)
    rows = (distinct_per_sample(t) if dedup else n) if kind == "pf" else 1.0
    counted = counter.get_total_flops() / b
    assert abs(forward_flops(net.cfg, rows) - counted) / counted < 0.02


def test_paper_presets_and_flop_saving() -> None:
    b2_pf, b2_sit = net_config("B/2", "pf"), net_config("B/2", "sit")
    assert (b2_pf.depth, b2_pf.width, b2_pf.heads, b2_pf.tokens) == (12, 768, 12, 256)
    assert b2_pf.out_channels == 5 and b2_sit.out_channels == 4
    naive, dedup, sit = forward_flops(b2_pf, 256), forward_flops(b2_pf, 1), forward_flops(b2_sit, 1)
    saving = 1 - dedup / naive
    assert 0.25 < saving < 0.40  # about a third of a naive PF forward is per-token modulation
    assert abs(dedup / sit - 1) < 1e-3


def test_bad_config_errors() -> None:
    with pytest.raises(PfbenchError, match="did you mean 'depth'"):
        net_config("cpu-xs", "pf", dpeth=3)
    with pytest.raises(PfbenchError, match="unknown network preset"):
        net_config("XXL/2")


@pytest.mark.parametrize("cls", [DiTConfig, T2IConfig])
def test_both_network_configs_share_the_size_checks_and_keep_their_stored_field_order(cls: type) -> None:
    """The shared ``PatchNetConfig`` checks both configs; field order (what checkpoints store) is unchanged."""
    assert issubclass(cls, PatchNetConfig)
    for bad, needle in (({"input_size": 15}, "not a multiple of patch"), ({"width": 30, "heads": 4},
                        "not a multiple of heads"), ({"per_token_t": False}, "difficulty_head=True needs")):
        with pytest.raises(PfbenchError, match=needle):
            cls(**bad)
    core = [f.name for f in dataclasses.fields(PatchNetConfig)]
    assert [f.name for f in dataclasses.fields(cls)][: len(core)] == core  # the shared fields first, in place
    extra = {DiTConfig: ["repa_depth", "repa_dim", "repa_hidden"],
             T2IConfig: ["text_dim", "text_len", "refiner_depth", "pooled_text", "repa_depth"]}[cls]
    assert [f.name for f in dataclasses.fields(cls)][len(core):] == extra
    cfg = cls(input_size=8, patch=2, width=32, heads=2)
    assert (cfg.grid, cfg.tokens, cfg.out_channels) == (4, 16, cfg.in_channels + 1)


@pytest.mark.parametrize("kind", ["pf", "sit"])
def test_activation_checkpointing_gives_the_same_loss_and_gradients(kind: str) -> None:
    """``DiT.checkpointing`` recomputes the blocks in the backward pass: bit-identical loss and gradients."""
    grads = []
    for on in (False, True):
        net = perturbed(kind, seed=3).train()
        net.checkpointing = on
        g = torch.Generator().manual_seed(2)
        x = torch.randn(4, 3, 16, 16, generator=g)
        t = torch.rand(4, net.cfg.tokens, generator=g) if kind == "pf" else torch.rand(4, generator=g)
        v, logvar, _ = net.forward_all(x, t, torch.tensor([1, 2, 3, 10]), dedup=False)
        loss = v.square().mean() + (0.0 if logvar is None else logvar.mean())
        loss.backward()
        grads.append((loss.detach(), {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}))
    (l0, g0), (l1, g1) = grads
    assert torch.equal(l0, l1) and g0.keys() == g1.keys() and len(g0) > 10
    for name in g0:
        assert torch.equal(g0[name], g1[name]), name
