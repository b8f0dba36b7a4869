"""Sampler traces: the recorded per-patch schedule is the one docs/protocol.md §6 prescribes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pfbench.adapters.base import Adapter
from pfbench.adapters.cfg import CFG
from pfbench.adapters.dit import DiTAdapter
from pfbench.nets import make_net
from pfbench.report.images import sample_difficulty_figure, schedule_figure
from pfbench.sample.trace import Recorder, trace
from pfbench.samplers.dual_loop import DualLoop
from pfbench.samplers.euler import Euler


def tiny_pf() -> DiTAdapter:
    torch.manual_seed(0)
    net = make_net("cpu-xs", "pf", depth=1, width=32, heads=2)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return DiTAdapter(net)


def test_dual_loop_schedule(tmp_path: Path) -> None:
    tr = trace(tiny_pf(), DualLoop(steps=2, p=0.4, n_inner=2), (3, 16, 16), n=2, seed=0)
    assert tr.times.shape == (4, 2, 64)  # N·n calls
    assert np.all(tr.times[0] == 0.0)
    # outer step 0: easy patches jumped to t_1 = 0.5 and wait; hard ones moved Δ/n = 0.25
    for b in range(2):
        values = set(np.unique(tr.times[1, b]).tolist())
        assert values == {0.25, 0.5}
        easy = tr.times[1, b] == 0.5
        assert easy.sum() == 25  # 40% quantile of the pixel map (64 values, each 4 times): 25 patches below
    assert np.all(tr.times[2] == 0.5)  # all patches meet at t_1
    assert np.isfinite(tr.difficulty).all() and tr.images.dtype == np.uint8
    assert schedule_figure(tmp_path / "s.png", tr.times[:, 0], tr.images[0], tr.difficulty[0], "t").is_file()
    assert sample_difficulty_figure(tmp_path / "d.png", tr.images, tr.difficulty, tr.grid, "t").is_file()


def test_recorder_is_an_adapter_and_passes_the_cost_through() -> None:
    """The recording wrapper declares the whole protocol (no attribute forwarding): shape, passes, GFLOPs."""
    model = CFG(tiny_pf(), 2.0)
    rec = Recorder(model)
    assert isinstance(rec, Adapter) and rec.input_shape == (3, 16, 16)
    t = torch.zeros(1, 64)
    assert rec.forwards_per_call(t) == 2 and rec.gflops(t) == model.gflops(t)
    tr = trace(model, Euler(steps=2), n=1, seed=0)  # shape from model.input_shape
    assert tr.times.shape == (2, 1, 64) and tr.images.shape == (1, 16, 16, 3)
