"""Golden forwards: the shipped PF checkpoint and a seeded text-to-image net give the outputs, parameter names and
initialisation they gave before the two networks shared their config and blocks (``pfbench/nets/base.py``).

The numbers were computed on main before that change (one CPU thread, float32). Parameter names and shapes are
compared exactly (a checkpoint loads by name); outputs within float32 round-off, so another CPU's BLAS passes.
"""

from __future__ import annotations

import hashlib

import pytest
import torch

from pfbench.assets import asset_path
from pfbench.nets import T2INet
from pfbench.nets.presets import t2i_config
from pfbench.train.checkpoints import build_model_from_checkpoint, load_checkpoint


def keys_digest(net: torch.nn.Module) -> str:
    """sha256 (16 hex) of the state dict's ``name:shape`` lines, in state-dict order."""
    lines = "\n".join(f"{k}:{tuple(v.shape)}" for k, v in net.state_dict().items())
    return hashlib.sha256(lines.encode()).hexdigest()[:16]


def check(v: torch.Tensor, logvar: torch.Tensor | None, sums: tuple[float, float, float], first: list[float]) -> None:
    """Sum and absolute sum of v, sum of logvar (float64 sums), and v's first four values."""
    assert logvar is not None
    got = (v.double().sum().item(), v.double().abs().sum().item(), logvar.double().sum().item())
    for g, want in zip(got, sums, strict=True):
        assert g == pytest.approx(want, rel=1e-5, abs=1e-3)
    torch.testing.assert_close(v[0, 0, 0, :4], torch.tensor(first), rtol=1e-5, atol=1e-6)


def test_shipped_pf_checkpoint_loads_and_gives_its_golden_forward() -> None:
    net = build_model_from_checkpoint(load_checkpoint(asset_path("embedded_pf_r16.pt")))
    assert keys_digest(net) == "3d261c0af1036e42"
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(4, 3, 16, 16, generator=g), torch.rand(4, net.cfg.tokens, generator=g)
    with torch.no_grad():
        v, logvar = net(x, t, torch.tensor([0, 3, 7, 10]))  # 10: the null class
    check(v, logvar, (-69.91287035960704, 3444.0034528234974, -1142.2866005897522),
          [0.9786208868026733, -0.03087155893445015, -0.862517237663269, 0.4670395255088806])


def test_text_to_image_net_keeps_its_names_initialisation_and_forward() -> None:
    """The t2i_smoke shape (cpu-xs, tiny_text's 64-wide, 32-long tokens): same parameter names, same seeded
    initialisation (so a suite retrains to the same weights) and the same forward once every weight is random."""
    torch.manual_seed(0)
    net = T2INet(t2i_config("cpu-xs", "pf_t2i", text_dim=64, text_len=32)).eval()
    assert keys_digest(net) == "4105218ada4e6665"
    init = sum(p.double().sum().item() * (i + 1) for i, p in enumerate(net.parameters()))  # order-sensitive
    assert init == pytest.approx(6297.978727522205, rel=1e-9)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    g = torch.Generator().manual_seed(1)
    x, t = torch.randn(3, 3, 16, 16, generator=g), torch.rand(3, net.cfg.tokens, generator=g)
    tokens = torch.randn(3, 32, 64, generator=g)
    mask = torch.arange(32)[None] < torch.tensor([[0], [5], [32]])  # empty, short and full prompts
    with torch.no_grad():
        v, logvar = net(x, t, tokens, mask)
    check(v, logvar, (5.542900482658297, 858.0243940730579, 45.688493840862066),
          [-0.5794345140457153, -0.6962040662765503, -0.26612183451652527, -0.8665554523468018])
