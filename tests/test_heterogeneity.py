"""The embedded generator's heterogeneity knob (pfbench.data.heterogeneity): the default is the old generator bit
for bit, non-default levels keep the per-image determinism contract, and the knob reaches every data identity
only when it is not the default."""

from __future__ import annotations

import hashlib

import pytest
import torch

from pfbench import PfbenchError
from pfbench.data.embedded import EmbeddedSpec, generate
from pfbench.data.heterogeneity import DEFAULT_HETEROGENEITY, hard_share_stats, patch_hard_share
from pfbench.evaluate.diagnostics import error_spread, hard_easy_patches
from pfbench.nets import make_net
from pfbench.suite.spec import DataSpec
from pfbench.train.spec import spec_from_dict

# sha256 of (images, labels, hard, captions) computed on main at c27a16c, before the knob existed.
GOLDEN = {
    (16, "train", 3000): "278d5764b89a75b5ea88c4bebeeb725214ba4b94e930b66919ab5fbb27ff30ab",
    (32, "test", 600): "d5e633896cc13253e5ccbedd40caead7edcb6ffaa40561674e38427351a88aed",
}


def _digest(spec: EmbeddedSpec) -> str:
    b = generate(spec)
    h = hashlib.sha256()
    for t in (b.images, b.labels, b.hard):
        h.update(t.numpy().tobytes())
    h.update("\n".join(b.captions).encode())
    return h.hexdigest()


@pytest.mark.parametrize(("resolution", "split", "size"), list(GOLDEN))
def test_default_is_the_old_generator_bit_for_bit(resolution: int, split: str, size: int) -> None:
    spec = EmbeddedSpec(resolution=resolution, split=split, size=size, seed=0)
    assert spec.heterogeneity == DEFAULT_HETEROGENEITY
    assert _digest(spec) == GOLDEN[(resolution, split, size)]
    explicit = EmbeddedSpec(resolution=resolution, split=split, size=size, seed=0, heterogeneity=0.5)
    assert _digest(explicit) == GOLDEN[(resolution, split, size)]


@pytest.mark.parametrize("h", [0.0, 0.3, 1.0])
def test_other_levels_are_deterministic_per_image_and_differ(h: float) -> None:
    spec = EmbeddedSpec(split="test", size=1200, heterogeneity=h)
    whole = generate(spec, 0, 1100)
    part = generate(spec, 1000, 1100)  # crosses the 1024-image parameter block
    assert torch.equal(whole.images[1000:], part.images) and torch.equal(whole.hard[1000:], part.hard)
    assert whole.captions[1000:] == part.captions
    default = generate(EmbeddedSpec(split="test", size=1200), 0, 1100)
    assert torch.equal(whole.labels, default.labels)  # class and the default draws are untouched
    assert not torch.equal(whole.images, default.images)


def test_levels_change_what_the_knob_says() -> None:
    low, mid, high = (generate(EmbeddedSpec(split="test", size=600, heterogeneity=h)) for h in (0.0, 0.5, 1.0))
    assert all(any(w in c.split(" on a ")[1] for w in ("striped", "checkered", "dotted")) for c in low.captions)
    assert all(" on a plain " in c and " solid " not in c for c in high.captions)
    s = {h: hard_share_stats(b.hard) for h, b in ((0.0, low), (0.5, mid), (1.0, high))}
    assert s[0.0]["hard_share_mean"] > 0.8 > s[0.5]["hard_share_mean"]
    assert s[0.0]["hard_share_spread"] < s[0.5]["hard_share_spread"] < s[1.0]["hard_share_spread"]


def test_patch_hard_share() -> None:
    hard = torch.zeros(2, 1, 4, 4, dtype=torch.bool)
    hard[0, 0, 0, 0] = True
    hard[1, 0, 2:, 2:] = True
    assert patch_hard_share(hard).tolist() == [[0.25, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
    st = hard_share_stats(hard)
    assert st["hard_share_mean"] == pytest.approx(1.25 / 8)
    assert st["hard_share_easy"] == pytest.approx(6 / 8)
    assert st["hard_share_spread"] == pytest.approx((0.25 * 3**0.5 / 4 + 3**0.5 / 4) / 2)
    with pytest.raises(PfbenchError, match="multiples of 2"):
        patch_hard_share(torch.zeros(1, 1, 3, 4, dtype=torch.bool))


@pytest.mark.parametrize("h", [-0.1, 1.5, float("nan"), "high", True])
def test_invalid_level_raises(h: object) -> None:
    with pytest.raises(PfbenchError, match="heterogeneity"):
        generate(EmbeddedSpec(size=4, heterogeneity=h), 0, 4)  # type: ignore[arg-type]


def test_identities_name_the_level_only_off_the_default() -> None:
    base = {"kind": "pf", "model": "cpu-xs", "data": {"name": "embedded", "resolution": 16}}
    d = spec_from_dict(base).to_dict()
    assert "heterogeneity" not in d["data"]
    assert spec_from_dict({**base, "data": {**base["data"], "heterogeneity": 0.5}}).to_dict() == d
    assert spec_from_dict({**base, "data": {**base["data"], "heterogeneity": 0.0}}).to_dict()["data"][
        "heterogeneity"] == 0.0
    with pytest.raises(PfbenchError, match="heterogeneity"):
        spec_from_dict({**base, "data": {**base["data"], "heterogeneity": 2.0}})
    assert "heterogeneity" not in DataSpec().key()
    assert DataSpec(heterogeneity=1.0).key()["heterogeneity"] == 1.0


def test_error_spread_matches_a_direct_computation() -> None:
    torch.manual_seed(0)
    net = make_net("cpu-xs", "pf").eval()
    for p in net.final.parameters():  # adaLN-Zero init: make the output vary
        torch.nn.init.normal_(p, std=0.2)
    b = generate(EmbeddedSpec(split="test", size=12, heterogeneity=1.0))
    (got,) = error_spread(net, b.images, b.labels, b.hard, [0.6], seed=3, batch=5)
    x0 = torch.randn(b.images.shape, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        v, _ = net(0.6 * b.images + 0.4 * x0, torch.full((12, 64), 0.6), b.labels)
    err = ((b.images - x0) - v).pow(2).mean(1).reshape(12, 8, 2, 8, 2).mean(dim=(2, 4)).flatten(1).double()
    cv = (err.std(dim=1, correction=0) / err.mean(dim=1)).mean()
    hard, easy = hard_easy_patches(b.hard, 2)
    assert got.t == 0.6 and got.n == 12 and float(cv) > 0
    assert got.cv == pytest.approx(float(cv), rel=1e-5)
    assert got.hard_easy == pytest.approx(float(err[hard].mean() / err[easy].mean()), rel=1e-5)


def test_hetero_suites_differ_only_in_the_level() -> None:
    from pathlib import Path

    from pfbench.suite.parse import load_suite
    from pfbench.suite.spec import plan
    from pfbench.suite.validate import validate

    root = Path(__file__).resolve().parents[1] / "suites"
    specs = {n: load_suite(root / f"validity_hetero_{n}.yaml") for n in ("low", "mid", "high")}
    assert {n: s.data.heterogeneity for n, s in specs.items()} == {"low": 0.0, "mid": 0.5, "high": 1.0}
    recipes = {}
    for n, s in specs.items():
        assert len(plan(s)) == 48 and s.eval.patch_spread
        train = spec_from_dict(s.models["pf@s0"].train)
        assert train.data.heterogeneity == s.data.heterogeneity
        recipes[n] = {**train.to_dict(), "data": {k: v for k, v in train.to_dict()["data"].items()
                                                  if k != "heterogeneity"}}
    assert recipes["low"] == recipes["mid"] == recipes["high"]
    with pytest.raises(PfbenchError, match="train at the level the suite evaluates"):
        validate(load_suite(root / "validity_hetero_low.yaml", ["data.heterogeneity=0.5"]))
