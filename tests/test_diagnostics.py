"""Validity-study diagnostics (pfbench.evaluate.diagnostics) and training-cost accounting (train log, nets.flops)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from pfbench.evaluate.diagnostics import context_curve, context_grid, hard_easy_patches, patch_correlations
from pfbench.nets import forward_flops, make_net, net_config
from pfbench.nets.flops import train_flops


def _pf_net(seed: int = 0) -> nn.Module:
    """A cpu-xs PF net whose zero-initialised final layer is randomised, so logvar varies over pixels."""
    torch.manual_seed(seed)
    net = make_net("cpu-xs", "pf")
    for p in [*net.final.parameters(), *(q for b in net.blocks for q in b.ada.parameters())]:  # adaLN-Zero inits
        nn.init.normal_(p, std=0.2)
    return net.eval()


def _data(n: int = 24, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 16, 16, generator=g) * 2 - 1, torch.randint(0, 10, (n,), generator=g)


def test_patch_correlations_match_scipy() -> None:
    net = _pf_net()
    images, labels = _data()
    got = patch_correlations(net, images, labels, [0.3, 0.7], seed=5, batch=10)
    x0 = torch.randn(images.shape, generator=torch.Generator().manual_seed(5))
    for c, t in zip(got, [0.3, 0.7], strict=True):
        with torch.no_grad():
            v, logvar = net(t * images + (1 - t) * x0, torch.full((24, 64), t), labels)
        var = logvar.clamp(-30, 20).exp().reshape(24, 8, 2, 8, 2).mean(dim=(2, 4)).flatten()  # (24·64,)
        err = ((images - x0) - v).pow(2).mean(1).reshape(24, 8, 2, 8, 2).mean(dim=(2, 4)).flatten()
        assert c.t == t and c.n == 24 * 64
        assert np.std(var.numpy()) > 0  # the check is not vacuous
        assert c.pearson == pytest.approx(stats.pearsonr(var.numpy(), err.numpy())[0], abs=1e-5)
        assert c.spearman == pytest.approx(stats.spearmanr(var.numpy(), err.numpy())[0], abs=1e-5)


def test_patch_correlations_need_a_difficulty_head() -> None:
    with pytest.raises(ValueError, match="difficulty head"):
        patch_correlations(make_net("cpu-xs", "sit"), *_data(), [0.5])


def test_hard_easy_patches() -> None:
    hard = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    hard[0, 0, 0, 0] = True  # patch 0: 1/4 hard -> neither
    hard[0, 0, 0:2, 2:4] = True  # patch 1: all hard
    hard[0, 0, 2, 0:2] = True  # patch 2: 2/4 hard -> hard at threshold 0.5
    h, e = hard_easy_patches(hard, 2)
    assert h.tolist() == [[False, True, True, False]]
    assert e.tolist() == [[False, False, False, True]]


class _Recorder(nn.Module):
    """Stands in for a PF net: records (x, t) and predicts v = 0, so the loss is E[(x1 − x0)²] on hard patches."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.cfg = SimpleNamespace(per_token_t=True, patch=2, input_size=4, tokens=4, difficulty_head=True)
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, None]:
        self.calls.append((x.clone(), t.clone()))
        return torch.zeros_like(x), None


def test_context_curve_moves_only_the_easy_context() -> None:
    net = _Recorder()
    g = torch.Generator().manual_seed(0)
    images = torch.rand(3, 3, 4, 4, generator=g) * 2 - 1
    hard = torch.zeros(3, 1, 4, 4, dtype=torch.bool)
    hard[:, :, 0:2, 0:2] = True  # patch 0 hard, patch 3 easy, patches 1 and 2 easy too
    hard[:, :, 2:4, 0:1] = True  # patch 2: half hard -> hard
    pts = context_curve(net, images, torch.zeros(3, dtype=torch.long), hard, 0.3, [0.3, 1.0], seed=2)  # type: ignore[arg-type]
    x0 = torch.randn(images.shape, generator=torch.Generator().manual_seed(2))
    assert [p.t_ctx for p in pts] == [0.3, 1.0] and all(p.n_hard == 6 for p in pts)
    x_ctx, t_ctx = net.calls[-1]
    assert torch.equal(t_ctx, torch.tensor([[0.3, 1.0, 0.3, 1.0]] * 3))  # hard patches 0 and 2 stay at t_hard
    assert torch.allclose(x_ctx[:, :, 0:2, 2:4], images[:, :, 0:2, 2:4])  # clean context at t = 1
    assert torch.allclose(x_ctx[:, :, 0:2, 0:2], 0.3 * images[:, :, 0:2, 0:2] + 0.7 * x0[:, :, 0:2, 0:2])
    u = (images - x0).pow(2)
    want = torch.cat([u[:, :, 0:2, 0:2].flatten(1), u[:, :, 2:4, 0:2].flatten(1)], 1).mean()  # hard pixels
    assert pts[0].loss_hard == pytest.approx(float(want), rel=1e-6)


def test_context_grid() -> None:
    assert context_grid(0.3) == [0.3, 0.475, 0.65, 0.825, 1.0]


def test_train_flops_count_per_token_modulation() -> None:
    pf, sit = net_config("cpu-xs", "pf"), net_config("cpu-xs", "sit")
    assert train_flops(pf) == pytest.approx(3 * forward_flops(pf, 64.0, include_repa=True))
    assert train_flops(sit) == pytest.approx(3 * forward_flops(sit, 1.0))
    assert 1.4 < train_flops(pf) / train_flops(sit) < 1.7  # cpu-xs at 16x16: modulation dominates the extra cost


def test_training_log_records_cost(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from pfbench.train.loop import spec_from_dict, train

    spec = spec_from_dict({"kind": "pf", "model": "cpu-xs", "data": {"size": 64}, "steps": 4, "batch_size": 4,
                           "log_every": 2, "ckpt_every": 2, "warmup": 0})
    train(spec, tmp_path / "a", stop_after=2, progress=False)
    train(spec, tmp_path / "a", progress=False)  # resumed: wall-clock carries over
    rows = [json.loads(ln) for ln in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    per_step = train_flops(spec.net_config()) * 4 / 1e9
    assert [r["step"] for r in rows] == [2, 4]
    assert [r["gflops"] for r in rows] == pytest.approx([2 * per_step, 4 * per_step])
    assert 0 < rows[0]["wall_s"] < rows[1]["wall_s"]


def test_shipped_r32_feature_net_loads_and_separates_classes() -> None:
    """The 32x32 embedded feature network (validity_r32 suite) is shipped, checksummed and accurate."""
    from pfbench.assets import load_tensors
    from pfbench.data.embedded import EmbeddedSpec, generate
    from pfbench.encoders import embedded as emb
    from pfbench.types import quantize

    net = emb.load_feature_net(32)
    assert net.resolution == 32 and net.asset_sha256 == load_tensors(emb.asset_name(32))[2]
    batch = generate(EmbeddedSpec(resolution=32, split="test", size=200, seed=0))
    _, logits = net(emb.to_input(quantize(batch.images)))
    assert float((logits.argmax(1) == batch.labels).float().mean()) > 0.95
