"""Text-to-image adapter: empty-prompt CFG, the text encoder run once per sample, cost accounting, batch-size
invariance, and every PF sampler running on it unchanged."""

from __future__ import annotations

import pytest
import torch
from _text_stub import StubTextEncoder  # pytest puts tests/ on sys.path

from pfbench import PfbenchError
from pfbench.adapters.cfg import CFG
from pfbench.adapters.t2i import T2IAdapter
from pfbench.nets import T2INet, forward_flops
from pfbench.nets.flops import t2i_forward_flops, text_flops
from pfbench.nets.presets import t2i_config
from pfbench.registry import SAMPLERS
from pfbench.sample.generate import Prompts, generate
from pfbench.samplers.dual_loop import DualLoop
from pfbench.samplers.euler import Euler
from pfbench.types import Cond

PROMPTS = ("a small red striped disk on the left", "a large blue solid square in the center",
           "a green dotted star at the top right", "a yellow ring on a plain black background",
           "a pink cross", "a small white checkered crescent at the bottom")  # fmt: skip


def adapter(kind: str = "pf_t2i", encoder: StubTextEncoder | None = None) -> T2IAdapter:
    torch.manual_seed(0)
    net = T2INet(t2i_config("cpu-xs", kind, text_dim=8, text_len=6))
    with torch.no_grad():
        for p in net.parameters():  # zero-initialised layers must not make outputs trivial
            p.add_(0.1 * torch.randn_like(p))
    return T2IAdapter(net, encoder or StubTextEncoder())


def test_cfg_unconditional_branch_is_the_empty_prompt() -> None:
    """CFG at w = 0 is the model on "" prompts, at w = 1 the model on the prompts; w = 3 extrapolates the two."""
    model = adapter()
    x, t = torch.randn(3, 3, 16, 16), torch.full((3, 64), 0.4)
    cond = Cond(torch.zeros(3, dtype=torch.int64), PROMPTS[:3])
    uncond = model(x, t, Cond(cond.y, ("", "", "")))
    c = model(x, t, cond)
    assert (uncond.v - c.v).abs().max() > 1e-3  # the prompt matters
    torch.testing.assert_close(CFG(model, 0.0)(x, t, cond).v, uncond.v, rtol=1e-5, atol=1e-5)
    guided = CFG(model, 3.0)(x, t, cond)
    torch.testing.assert_close(guided.v, uncond.v + 3.0 * (c.v - uncond.v), rtol=1e-4, atol=1e-5)
    assert guided.logvar is not None and guided.v_cond is not None
    torch.testing.assert_close(guided.v_cond, c.v, rtol=1e-5, atol=1e-5)
    with pytest.raises(PfbenchError, match="needs prompts"):
        model(x, t, Cond(cond.y))


@pytest.mark.parametrize("scale,interval", [(1.0, None), (3.0, None), (3.0, (0.2, 0.7))])
def test_text_encoder_runs_once_per_sample(scale: float, interval: tuple[float, float] | None) -> None:
    """Every call of every step (and both CFG branches) reuses the encodings: each prompt is encoded once,
    the empty prompt once for the whole run; the cost counts the encoder once per sample."""
    enc = StubTextEncoder()
    model = adapter(encoder=enc)
    guided = model if scale == 1.0 else CFG(model, scale, interval)
    sampler = DualLoop(steps=3, n_inner=2)
    gen = generate(guided, sampler, n=6, seed=0, batch_size=4, prompts=Prompts(PROMPTS))
    want = list(PROMPTS) + ([""] if scale != 1.0 else [])
    assert sorted(enc.prompts) == sorted(want) and model.encoded == len(want)
    assert gen.prompts == PROMPTS and gen.nfe == sampler.cost(3) == 6
    # per-sample cost: the calls' GFLOPs (guided pairs doubled) plus the encoder once
    cfg = model.net.cfg
    per_call = t2i_forward_flops(cfg, 1.0, include_text=False) / 1e9  # the refined text is reused
    once = enc.gflops_per_prompt + text_flops(cfg) / 1e9  # encoder + refiner, once per sample
    assert gen.gflops > once + 6 * per_call * 0.99
    plain = generate(adapter(), Euler(steps=4), n=2, seed=0, batch_size=2, prompts=Prompts(PROMPTS))
    assert plain.gflops == pytest.approx(4 * per_call + once, rel=1e-9)
    assert forward_flops(cfg, 1.0) / 1e9 == pytest.approx(per_call + text_flops(cfg) / 1e9, rel=1e-12)


def test_samples_identical_across_batch_sizes() -> None:
    """Prompts, labels and noise depend only on the sample index; the network adds BLAS rounding at most."""
    labels = torch.arange(len(PROMPTS)) % 10
    runs = [generate(CFG(adapter(), 2.0), DualLoop(steps=2, n_inner=2), n=9, seed=3, batch_size=b,
                     prompts=Prompts(PROMPTS, labels)) for b in (1, 4, 16)]  # fmt: skip
    for run in runs[1:]:
        assert run.prompts == runs[0].prompts and torch.equal(run.labels, runs[0].labels)
        diff = (run.images.int() - runs[0].images.int()).abs()
        assert int(diff.max()) <= 1 and float((diff > 0).float().mean()) < 0.01
    assert runs[0].prompts == PROMPTS + PROMPTS[:3]  # sample i gets prompt i mod len
    assert torch.equal(runs[0].labels, labels[torch.arange(9) % len(PROMPTS)])
    assert runs[0].images.float().std() > 10


@pytest.mark.parametrize("name", sorted(SAMPLERS.names()))
def test_every_sampler_runs_on_the_t2i_adapter(name: str) -> None:
    """The samplers are unchanged: PF samplers on the PF net, global-t samplers on the baseline too."""
    cls = SAMPLERS.get(name)
    sampler = cls.from_budget({}, 8)
    pf = adapter()
    gen = generate(CFG(pf, 2.0), sampler, n=2, seed=0, batch_size=2, prompts=Prompts(PROMPTS))
    assert gen.images.shape == (2, 3, 16, 16) and gen.nfe == sampler.cost(sampler.steps)
    if name in ("euler", "heun", "euler_maruyama"):
        base = adapter("sit_t2i")
        out = generate(base, sampler, n=2, seed=0, batch_size=2, prompts=Prompts(PROMPTS))
        assert out.images.shape == (2, 3, 16, 16)


def test_encoder_must_fit_the_network() -> None:
    net = T2INet(t2i_config("cpu-xs", "pf_t2i", text_dim=8, text_len=6))
    with pytest.raises(PfbenchError, match="use the encoder it was trained with"):
        T2IAdapter(net, StubTextEncoder(dim=16))
