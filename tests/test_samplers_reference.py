"""Adaptive samplers against the reference's semantics (docs/protocol.md §6, issue 9): easy-mask size, warm-up, updates.

The reference integrators (github.com/CompVis/patch-forcing, ``patch_flow/integrators.py``) are
re-implemented here from their description, independently of pfbench's code: a float32 schedule
``torch.linspace(0, 1, N + 1)``, per-pixel time and step maps, the easy mask from the quantile of the
pixel-resolution difficulty map, and the warm-up test ``mean_tokens(t_k) <= 0.05`` in float32 on the
schedule broadcast over the tokens (a stride-0 view on CPU, as the reference's ``einops.repeat`` gives).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from pfbench.samplers.dual_loop import DualLoop
from pfbench.samplers.look_ahead import LookAhead
from pfbench.samplers.look_ahead_random import LookAheadRandom
from pfbench.samplers.masks import difficulty_mask, easy_count, patch_difficulty, random_mask
from pfbench.types import Cond, ModelOut

TOKENS = (4, 9, 16, 49, 64, 144, 256, 1024)
LEVELS = (0.2, 0.4, 0.5, 0.7)
# Easy patches per sample for distinct difficulties, patch 2: the p-quantile over the T values each
# repeated 4 times (rows: TOKENS, columns: LEVELS). The old rule (quantile of the T values once, i.e.
# ⌈p·(T − 1)⌉) differs wherever p·(4T − 1) is an integer: e.g. T = 64, p = 0.4 gives 26 there.
EASY = {
    4: (0, 1, 2, 2),
    9: (1, 3, 4, 6),
    16: (3, 6, 8, 11),
    49: (9, 19, 24, 34),
    64: (12, 25, 32, 44),
    144: (28, 57, 72, 100),
    256: (51, 102, 128, 179),
    1024: (204, 409, 512, 716),
}


# ---------------------------------------------------------------- the reference's rules, re-derived


def _ref_pixel_mask(logvar: Tensor, p: float, patch: int) -> Tensor:
    """Reference easy mask at pixel resolution (B, 1, H, W) bool from a logvar map (B, 1, H, W)."""
    u = F.avg_pool2d(logvar.exp(), patch)  # per-patch mean difficulty in the map's dtype
    u = u.repeat_interleave(patch, dim=2).repeat_interleave(patch, dim=3)  # back to (B, 1, H, W)
    q = torch.quantile(u.flatten(1).double(), p, dim=1)  # (B,) over all H·W pixels
    return u < q.view(-1, 1, 1, 1)


def _pool_tokens(m: Tensor, patch: int) -> Tensor:
    """(B, 1, H, W) per-pixel map, constant on patches -> (B, T) row-major."""
    return F.avg_pool2d(m.float(), patch).flatten(1)


def _ref_warm(t_k: Tensor, tokens: int, t_warm: float) -> bool:
    """The reference's warm-up test: the float32 mean of the step's per-token times, ``<=`` t_warm."""
    return bool(t_k.expand(tokens).mean() <= t_warm)


def _distinct_logvar(b: int, side: int, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 1, side, side, generator=g)  # distinct per-patch means almost surely


# ---------------------------------------------------------------- (a) easy-mask size


@pytest.mark.parametrize("tokens", TOKENS)
def test_easy_count_table_matches_quantile_over_pixel_map(tokens: int) -> None:
    side = 2 * math.isqrt(tokens)  # a square grid of 2×2 patches
    logvar = _distinct_logvar(3, side, seed=tokens)
    d = patch_difficulty(logvar, 2)  # (3, T)
    for j, p in enumerate(LEVELS):
        # the count computed here from torch.quantile over the repeated map (the reference's rule)
        q = torch.quantile(d.repeat_interleave(4, dim=1), p, dim=1, keepdim=True)  # (3, 1)
        expected = (d < q).sum(1)
        assert (expected == EASY[tokens][j]).all(), (tokens, p, expected.tolist())
        mask = difficulty_mask(d, p, 2)
        assert torch.equal(mask, d < q)
        assert easy_count(tokens, p, 2) == EASY[tokens][j]
        # the reference computes the map from exp(logvar) pooled in float32: the same patches
        assert torch.equal(mask, _pool_tokens(_ref_pixel_mask(logvar, p, 2), 2).bool())
        keys = [1, 2]
        rnd = random_mask(keys, 0, tokens, p, 2, "x", torch.device("cpu"))
        assert (rnd.sum(1) == EASY[tokens][j]).all()  # the random ablation uses the same size


def test_easy_count_edges_and_patch_one() -> None:
    assert easy_count(64, 0.0, 2) == 0 and easy_count(64, 1.0, 2) == 63  # p = 1 leaves out the max
    assert easy_count(64, 0.4, 1) == 26  # patch 1: the map is the T values once
    d = torch.rand(2, 64, dtype=torch.float64)
    assert (difficulty_mask(d, 0.4, 1).sum(1) == 26).all() and (difficulty_mask(d, 0.4, 2).sum(1) == 25).all()


# ---------------------------------------------------------------- (b) agreement with the reference integrators


class _Field:
    """A deterministic model: velocity from x and each pixel's token time; logvar a time-dependent map.

    Returns a guided call's output (guided v, conditional ``v_cond``) so the look-ahead's use of v_c is checked.
    The logvar depends only on the time, not on x, so the easy masks cannot flip on float rounding.
    """

    def __init__(self, channels: int, side: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.mu = torch.randn(1, channels, side, side, generator=g)
        self.a = torch.randn(1, 1, side, side, generator=g)
        self.b = torch.randn(1, 1, side, side, generator=g)
        self.patch_size = 2
        self.num_classes = 10
        self.has_difficulty = True
        self.input_shape = (channels, side, side)
        self.calls: list[Tensor] = []

    def __call__(self, x: Tensor, t: Tensor, cond: Cond) -> ModelOut:
        self.calls.append(t.clone())
        side = x.shape[-1]
        grid = t.float().reshape(t.shape[0], 1, side // 2, side // 2)
        tp = grid.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)  # (B, 1, H, W)
        v_c = self.mu - x + 0.5 * tp * torch.tanh(x)
        v_u = 0.3 * (self.mu.flip(-1) - x)
        logvar = (self.a + 2.0 * tp * self.b).expand(x.shape[0], 1, side, side)
        return ModelOut(v=v_u + 1.5 * (v_c - v_u), logvar=logvar, v_cond=v_c)

    def forwards_per_call(self, t: Tensor) -> int:
        return 1

    def gflops(self, t: Tensor) -> float:
        return 1.0


def _ref_steps(x: Tensor, steps: int) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """The reference loops' outer steps on the float32 grid ``linspace(0, 1, steps + 1)``: (t_k, t_k at every token
    (B, T) of 2×2 patches, dt = t_{k+1} - t_k)."""
    b, _, h, w = x.shape
    sched = torch.linspace(0, 1, steps + 1)  # float32
    for k in range(steps):
        yield sched[k], sched[k].expand(b, (h // 2) * (w // 2)), (sched[k + 1] - sched[k]).clamp(min=0.0)


def _ref_dual_loop(model: _Field, x: Tensor, cond: Cond, steps: int, p: float, n: int) -> Tensor:
    b, _, h, w = x.shape
    for _, t, dt in _ref_steps(x, steps):
        out = model(x, t, cond)
        easy = _ref_pixel_mask(out.logvar, p, 2)  # type: ignore[arg-type]
        x = x + dt * out.v * easy + (dt / n) * out.v * ~easy
        t_px = t[:, :1, None, None].expand(b, 1, h, w) + dt * easy + (dt / n) * ~easy  # (B, 1, H, W)
        for _ in range(n - 1):
            v = model(x, _pool_tokens(t_px, 2), cond).v
            x = x + (dt / n) * v * ~easy
            t_px = t_px + (dt / n) * ~easy
    return x


def _ref_look_ahead(model: _Field, x: Tensor, cond: Cond, steps: int, p: float, r: float) -> Tensor:
    for t_k, t, dt in _ref_steps(x, steps):
        out = model(x, t, cond)
        if _ref_warm(t_k, t.shape[1], 0.05):
            x = x + dt * out.v_cond
            continue
        easy = _ref_pixel_mask(out.logvar, p, 2)  # type: ignore[arg-type]
        jump = (t_k * r).clamp(max=1.0) - t_k
        x_ctx = x + jump * (out.v_cond * easy)
        t_ctx = t + jump * _pool_tokens(easy, 2)
        v_ctx = model(x_ctx, t_ctx, cond).v
        x = x + dt * out.v * easy + dt * v_ctx * ~easy
    return x


def _inputs(tokens: int) -> tuple[Tensor, Cond, int]:
    side = 2 * math.isqrt(tokens)
    noise = torch.randn(2, 2, side, side, generator=torch.Generator().manual_seed(tokens))
    return noise, Cond(y=torch.zeros(2, dtype=torch.int64)), side


def _agree(ours: _Field, ref: _Field, x_ours: Tensor, x_ref: Tensor) -> None:
    assert len(ours.calls) == len(ref.calls)
    for a, b in zip(ours.calls, ref.calls, strict=True):  # per-token times of every call: the masks
        assert torch.allclose(a, b, atol=1e-6)
    assert torch.allclose(x_ours, x_ref, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("tokens", [64, 256])
@pytest.mark.parametrize("p", [0.4, 0.7])
def test_dual_loop_agrees_with_reference(tokens: int, p: float) -> None:
    noise, cond, side = _inputs(tokens)
    ours, ref = _Field(2, side), _Field(2, side)
    out = DualLoop(steps=5, p=p, n_inner=4)(ours, noise, cond)
    x_ref = _ref_dual_loop(ref, noise, cond, steps=5, p=p, n=4)
    assert out.nfe == len(ref.calls) == 20
    _agree(ours, ref, out.x, x_ref)


@pytest.mark.parametrize("tokens", [64, 256])
@pytest.mark.parametrize("steps", [20, 40, 100])
def test_look_ahead_agrees_with_reference(tokens: int, steps: int) -> None:
    noise, cond, side = _inputs(tokens)
    ours, ref = _Field(2, side), _Field(2, side)
    out = LookAhead(steps=steps, p=0.4, r=1.4)(ours, noise, cond)
    x_ref = _ref_look_ahead(ref, noise, cond, steps=steps, p=0.4, r=1.4)
    assert out.nfe == len(ref.calls) == {20: 39, 40: 78, 100: 195}[steps]
    _agree(ours, ref, out.x, x_ref)


# ---------------------------------------------------------------- (c) warm-up boundary, cost and budgets


def test_warm_up_is_strict_at_t_warm() -> None:
    la = LookAhead(steps=20)
    assert la.cost(20) == 39 and LookAheadRandom(steps=20).cost(20) == 39
    assert la.warm(20)[:2] == [True, False] and la.warm_steps(20) == 1
    assert la.cost(40) == 78  # t_2 = 0.05 is a look-ahead step
    assert la.cost(100) == 195  # t_5 = 0.05 is a look-ahead step too
    assert la.with_budget(38).steps == 19 and la.with_budget(39).steps == 20
    assert la.with_budget(40).steps == 21  # t_1 = 1/21 < 0.05: two warm steps, 42 − 2
    model = _Field(2, 8)
    noise = torch.randn(1, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    out = la(model, noise, Cond(y=torch.zeros(1, dtype=torch.int64)))
    assert out.nfe == len(model.calls) == 39
    # step 1 (t = 0.05) makes a second, look-ahead call: easy tokens at 1.4·0.05, the rest at 0.05
    assert torch.allclose(model.calls[1], torch.tensor(0.05))
    assert model.calls[2].unique().tolist() == pytest.approx([0.05, 0.07])


@pytest.mark.parametrize("tokens", [64, 256, 1024])
def test_warm_steps_equal_reference_float32_test(tokens: int) -> None:
    la = LookAhead(steps=1)
    for steps in range(1, 201):
        sched = torch.linspace(0, 1, steps + 1)
        head = min(steps, steps // 20 + 2)  # every warm step and the first one after
        expected = [_ref_warm(sched[k], tokens, 0.05) for k in range(head)]
        assert la.warm(steps)[:head] == expected, steps
        assert la.warm_steps(steps) == sum(expected)
