"""REPA (docs/protocol.md §5): the loss, token resampling, target encoders, and training PF / SiT with REPA on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from pfbench import PfbenchError
from pfbench.data.embedded import EmbeddedSpec, generate
from pfbench.nets import forward_flops, make_net
from pfbench.nets.dit import DiT
from pfbench.train.checkpoints import build_model_from_checkpoint, load_checkpoint
from pfbench.train.draws import Dist
from pfbench.train.loop import run_steps, spec_from_dict, train
from pfbench.train.losses import repa_loss
from pfbench.train.repa import ENCODER_DIMS, load_encoder, tokens_for_grid
from pfbench.train.trainer import Trainer

HERE = Path(__file__).parent
EMB = {"encoder": "embedded", "depth": 1}


Tiny = Callable[..., dict[str, Any]]  # a training config factory: ``tiny(**changes) -> dict``


@pytest.fixture
def tiny(tiny_train: Tiny) -> Tiny:
    """conftest's tiny training run (8 px, patch 2 → 4×4 tokens, the embedded encoder's own grid) + REPA."""
    return lambda **kw: tiny_train(**{"repa": dict(EMB), **kw})


# ---------------------------------------------------------------- loss and resampling


def test_repa_loss_by_hand() -> None:
    g = torch.Generator().manual_seed(0)
    proj, z = torch.randn(2, 3, 5, generator=g), torch.randn(2, 3, 5, generator=g)
    want = -sum(
        float(proj[b, t] @ z[b, t] / (proj[b, t].norm() * z[b, t].norm())) for b in range(2) for t in range(3)
    ) / 6
    assert repa_loss(proj, z).item() == pytest.approx(want, abs=1e-6)
    assert repa_loss(z, 3.0 * z).item() == pytest.approx(-1.0, abs=1e-6)  # scale-blind
    assert repa_loss(proj.bfloat16(), z).dtype == torch.float32
    proj.requires_grad_(True)
    z.requires_grad_(True)
    repa_loss(proj, z).backward()
    assert proj.grad is not None and z.grad is None  # the target is a constant
    with pytest.raises(PfbenchError, match=r"repa_loss: .*\(B, T, D\)"):
        repa_loss(torch.zeros(2, 3, 5), torch.zeros(2, 4, 5))


def test_tokens_for_grid_identity_and_averages() -> None:
    z = torch.randn(2, 16, 7)  # 4×4 grid
    assert tokens_for_grid(z, 4) is z
    down = tokens_for_grid(z, 2)  # (2, 4, 7): each token the mean of a 2×2 block
    grid = z.reshape(2, 4, 4, 7)
    want = grid.reshape(2, 2, 2, 2, 2, 7).mean(dim=(2, 4)).reshape(2, 4, 7)
    torch.testing.assert_close(down, want)
    const = torch.ones(1, 4, 3) * torch.tensor([1.0, -2.0, 5.0])
    torch.testing.assert_close(tokens_for_grid(const, 8), torch.ones(1, 64, 3) * torch.tensor([1.0, -2.0, 5.0]))
    up = tokens_for_grid(z, 8).reshape(2, 8, 8, 7)  # bilinear, align_corners=False
    # Output (1, 1) sits at source (0.25, 0.25): weights 3/4 and 1/4 on each axis.
    want11 = 0.5625 * grid[:, 0, 0] + 0.1875 * (grid[:, 0, 1] + grid[:, 1, 0]) + 0.0625 * grid[:, 1, 1]
    torch.testing.assert_close(up[:, 1, 1], want11)
    torch.testing.assert_close(up[:, 0, 0], grid[:, 0, 0])  # corners clamp to the corner token
    with pytest.raises(PfbenchError, match="square"):
        tokens_for_grid(torch.zeros(1, 15, 3), 4)


# ---------------------------------------------------------------- encoders


def test_embedded_encoder_is_frozen_and_meaningful() -> None:
    enc = load_encoder("embedded")
    assert enc.dim == ENCODER_DIMS["embedded"] == 128
    data = generate(EmbeddedSpec(resolution=8, split="test", size=8, seed=0))
    z = enc(data.images)  # 8 px resized to the net's 16 → 4×4 tokens
    assert z.shape == (8, 16, 128) and z.dtype == torch.float32 and torch.isfinite(z).all()
    assert not z.requires_grad and all(not p.requires_grad for p in enc.net.parameters())  # type: ignore[attr-defined]
    assert z.std(dim=0).mean() > 0.05  # differs between images
    with pytest.raises(PfbenchError, match="shipped asset"):
        load_encoder("embedded", weights="x.pth")
    with pytest.raises(PfbenchError, match="did you mean 'embedded'"):
        load_encoder("embeded")


def test_dinov2_missing_weights_fail_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          tiny: Tiny) -> None:
    (tmp_path / "w").mkdir()
    monkeypatch.setenv("PFBENCH_WEIGHTS", str(tmp_path / "w"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    t0 = time.perf_counter()
    with pytest.raises(PfbenchError) as err:
        load_encoder("dinov2-vitb14")
    assert time.perf_counter() - t0 < 3.0
    msg = str(err.value)
    assert "dinov2_vitb14_pretrain.pth" in msg and str(tmp_path / "w") in msg and "curl" in msg
    spec = spec_from_dict(tiny(repa={"encoder": "dinov2-vitb14", "depth": 1}))  # config needs no weights
    assert spec.net_config().repa_dim == 768
    t0 = time.perf_counter()
    with pytest.raises(PfbenchError, match="dinov2_vitb14_pretrain.pth"):
        train(spec, tmp_path / "run", progress=False)
    assert time.perf_counter() - t0 < 3.0
    assert not (tmp_path / "run" / "last.pt").exists()


def test_dinov2_encoder_tokens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The DINOv2 path on a 1-block ViT-S/14 with random weights in the original layout (no real weights)."""
    timm = pytest.importorskip("timm")
    from pfbench.encoders import dinov2

    monkeypatch.setitem(dinov2.ARCHS, "dinov2-vitb14", dinov2.Arch("vit_small_patch14_dinov2", 384, depth=1))
    monkeypatch.setitem(ENCODER_DIMS, "dinov2-vitb14", 384)
    torch.manual_seed(0)
    net = timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=0, img_size=224, depth=1)
    state = {**net.state_dict(), "mask_token": torch.zeros(1, 384)}
    torch.save(state, tmp_path / "dinov2_vitb14_pretrain.pth")
    enc = load_encoder("dinov2-vitb14", weights=str(tmp_path))
    pixels = torch.rand(2, 3, 32, 32) * 2 - 1
    z = enc(pixels)
    assert z.shape == (2, 256, 384) and z.dtype == torch.float32
    mean, std = torch.tensor(dinov2.IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(dinov2.IMAGENET_STD).view(1, 3, 1, 1)
    x = F.interpolate(((pixels + 1) / 2 - mean) / std, size=224, mode="bicubic", align_corners=False)
    with torch.no_grad():
        want = net.eval().forward_features(x)[:, 1:]  # patch tokens after the final norm, CLS dropped
    torch.testing.assert_close(z, want, rtol=0, atol=1e-4)
    assert tokens_for_grid(z, 8).shape == (2, 64, 384)  # 16×16 → 8×8 by area averaging


# ---------------------------------------------------------------- network


def test_forward_skips_projector_and_flops_agree() -> None:
    net = make_net("cpu-xs", "pf", depth=2, width=32, heads=2, repa_depth=1, repa_dim=128).eval()
    x, t, y = torch.randn(2, 3, 16, 16), torch.rand(2, 64), torch.tensor([1, 2])
    calls: list[int] = []
    assert net.projector is not None
    net.projector.register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        v, logvar = net(x, t, y, dedup=False)
        v2, logvar2, proj = net.forward_all(x, t, y, dedup=False)
    assert calls == [1] and proj is not None and proj.shape == (2, 64, 128)
    assert torch.equal(v, v2) and logvar is not None and logvar2 is not None and torch.equal(logvar, logvar2)
    for repa in (False, True):
        with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter, torch.no_grad():
            net.forward_all(x, t, y, dedup=False, repa=repa)
        counted = counter.get_total_flops() / 2
        assert abs(forward_flops(net.cfg, 64, include_repa=repa) - counted) / counted < 0.02


def test_projector_width_comes_from_repa_hidden(tiny: Tiny) -> None:
    spec = spec_from_dict(tiny(repa={"encoder": "embedded", "depth": 1, "hidden": 96}))
    cfg = spec.net_config()
    assert (cfg.repa_hidden, cfg.repa_dim, cfg.repa_depth) == (96, 128, 1)
    net = DiT(cfg)
    assert net.projector is not None
    assert [m.weight.shape for m in net.projector if isinstance(m, torch.nn.Linear)] == [
        (96, 32), (96, 96), (128, 96)]
    assert spec_from_dict(tiny()).net_config().repa_hidden == 2048  # default of docs/protocol.md §5
    with pytest.raises(PfbenchError, match="repa.hidden=0 must be >= 1"):
        spec_from_dict(tiny(repa={"encoder": "embedded", "depth": 1, "hidden": 0}))


# ---------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("patch", "needle"),
    [
        ({"repa": {"encoder": "embedded", "dept": 1}}, "unknown key repa.'dept'; did you mean repa.'depth'?"),
        ({"repa": {"encoder": "dinov2"}}, "did you mean 'dinov2-vitb14'?"),
        ({"repa": {"encoder": "embedded", "depth": 3}}, "repa.depth=3 must be in 1..2"),
        ({"repa": {"encoder": "embedded", "weight": 0.0}}, "repa.weight=0.0 must be > 0"),
        ({"repa": {"encoder": "embedded", "weights": "a.pth"}}, "shipped asset"),
        ({"repa": None, "model_overrides": {"depth": 2, "repa_depth": 1}}, "set by the `repa:` section"),
        ({"repa": None, "model_overrides": {"depth": 2, "repa_dim": 64}}, "set by the `repa:` section"),
    ],
)
def test_repa_config_errors(patch: dict[str, Any], needle: str, tiny: Tiny) -> None:
    with pytest.raises(PfbenchError) as err:
        spec_from_dict(tiny(**patch))
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_repa_config_roundtrip_and_shorthand(tiny: Tiny) -> None:
    spec = spec_from_dict(tiny())
    assert spec_from_dict(spec.to_dict()) == spec and spec.to_dict()["repa"]["weight"] == 0.5
    cfg = spec.net_config()
    assert (cfg.repa_depth, cfg.repa_dim) == (1, 128)
    short = spec_from_dict(tiny(repa="dinov2-vitb14", model_overrides={"depth": 8, "width": 32, "heads": 2}))
    assert short.repa is not None and (short.repa.depth, short.repa.weight) == (8, 0.5)
    assert spec_from_dict(tiny(repa=None)).net_config().repa_depth is None


def test_recipe_parses() -> None:
    d = yaml.safe_load((HERE.parent / "suites" / "recipes" / "embedded_pf_repa.yaml").read_text())
    spec = spec_from_dict(d)
    assert spec.repa is not None and spec.repa.encoder == "embedded" and spec.net_config().repa_dim == 128


# ---------------------------------------------------------------- training


def _alignment(net: DiT, batch: tuple[torch.Tensor, torch.Tensor]) -> float:
    """Mean cos(projection, encoder tokens) on a fixed held-out batch at t = 0.5 (noise seeded)."""
    x1, y = batch
    x0 = torch.randn(x1.shape, generator=torch.Generator().manual_seed(1))
    t = torch.full((x1.shape[0], net.cfg.tokens), 0.5)
    with torch.no_grad():
        _, _, proj = net.forward_all(0.5 * x1 + 0.5 * x0, t, y, dedup=False)
        z = tokens_for_grid(load_encoder("embedded")(x1), net.cfg.grid)
    assert proj is not None
    return -repa_loss(proj, z).item()


def test_pf_repa_trains_and_aligns(tmp_path: Path, tiny: Tiny) -> None:
    spec = spec_from_dict(tiny(steps=60, lr=3e-3, log_every=10))
    held = generate(EmbeddedSpec(resolution=8, split="test", size=64, seed=0))
    batch = (held.images, held.labels)
    # Floor: the best single vector for every token (the training tokens' mean direction).
    train_px = generate(EmbeddedSpec(resolution=8, split="train", size=40, seed=0)).images
    z_train, z_held = (tokens_for_grid(load_encoder("embedded")(x), 4) for x in (train_px, held.images))
    floor = -repa_loss(z_train.mean(dim=(0, 1)).expand_as(z_held), z_held).item()
    train(spec, tmp_path, progress=False, stop_after=0)  # the untrained network
    before = _alignment(build_model_from_checkpoint(load_checkpoint(tmp_path / "last.pt"), use_ema=False), batch)
    result = train(spec, tmp_path, progress=False)
    after = _alignment(build_model_from_checkpoint(load_checkpoint(result.checkpoint), use_ema=False), batch)
    assert set(result.losses) == {"loss", "fm", "nll", "repa"}
    rows = [json.loads(ln) for ln in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert all("repa" in r and -1.0 <= r["repa"] <= 1.0 for r in rows)
    assert after > before + 0.3 and after > floor + 0.03, (before, after, floor)
    print(f"alignment before {before:.3f} after {after:.3f} (constant floor {floor:.3f}); "
          f"img/s {result.img_per_s:.0f}")


def test_resume_with_repa_is_bit_identical(tmp_path: Path, tiny: Tiny) -> None:
    spec = spec_from_dict(tiny(steps=5))  # 5 × 8 = 40: reaches the epoch boundary
    straight = train(spec, tmp_path / "a", progress=False)
    train(spec, tmp_path / "b", progress=False, stop_after=2)
    resumed = train(spec, tmp_path / "b", progress=False)
    a, b = load_checkpoint(straight.checkpoint), load_checkpoint(resumed.checkpoint)
    for part in ("model", "ema"):
        sa, sb = getattr(a, part), getattr(b, part)
        assert sa.keys() == sb.keys() and any(k.startswith("projector.") for k in sa)
        for k in sa:
            assert torch.equal(sa[k], sb[k]), f"{part}.{k} differs after resume"
    assert a.optimizer is not None and b.optimizer is not None
    for i, sa in a.optimizer["state"].items():
        for key, ta in sa.items():
            assert torch.equal(ta, b.optimizer["state"][i][key])
    assert straight.losses == resumed.losses


def test_encoder_is_frozen_and_not_saved(tmp_path: Path, tiny: Tiny) -> None:
    spec = spec_from_dict(tiny(steps=1))
    trainer = Trainer(spec, tmp_path, Dist(0, 1, torch.device("cpu"), False))
    enc = trainer.encoder
    assert enc is not None
    enc_params = list(enc.net.parameters())  # type: ignore[attr-defined]
    assert enc_params and not any(p.requires_grad for p in enc_params) and not enc.net.training  # type: ignore[attr-defined]
    opt_ids = {id(p) for g in trainer.opt.param_groups for p in g["params"]}
    assert not opt_ids & {id(p) for p in enc_params}
    assert opt_ids == {id(p) for p in trainer.net.parameters()}  # projector included, nothing else
    before = [p.clone() for p in enc_params]
    run_steps(trainer, resume=False, progress=False, stop_after=None)
    assert all(p.grad is None for p in enc_params)
    assert all(torch.equal(p, q) for p, q in zip(enc_params, before, strict=True))
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert set(ckpt.model) == set(DiT(spec.net_config()).state_dict())  # no encoder ("body.*") keys
    assert not any(k.startswith("body.") for k in ckpt.model)


def test_sit_with_repa_runs(tmp_path: Path, tiny: Tiny) -> None:
    spec = spec_from_dict(tiny(kind="sit", steps=4, repa={"encoder": "embedded", "depth": 2, "weight": 1.0}))
    result = train(spec, tmp_path, progress=False)
    assert set(result.losses) == {"loss", "fm", "repa"}
    assert result.losses["loss"] == pytest.approx(result.losses["fm"] + result.losses["repa"], abs=1e-5)
    net = build_model_from_checkpoint(load_checkpoint(result.checkpoint))
    v, logvar = net(torch.zeros(2, 3, 8, 8), torch.full((2,), 0.5), torch.tensor([0, 10]))  # sampling path
    assert v.shape == (2, 3, 8, 8) and logvar is None


def test_ddp_two_processes_match_one_with_repa(tmp_path: Path, tiny: Tiny) -> None:
    """The projector is in every step's graph, so plain DDP (no find_unused_parameters) syncs it."""
    cfg = tiny(steps=4, threads=1)
    one = train(spec_from_dict(cfg), tmp_path / "one", progress=False)
    (tmp_path / "spec.json").write_text(json.dumps(cfg))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
           str(HERE / "_ddp_worker.py"), str(tmp_path / "spec.json"), str(tmp_path / "two")]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = load_checkpoint(one.checkpoint), load_checkpoint(tmp_path / "two" / "last.pt")
    for k, ta in a.model.items():  # gradient all-reduce sums in another order: float32 rounding apart
        assert torch.allclose(ta, b.model[k], rtol=1e-4, atol=1e-5), f"model.{k}: {(ta - b.model[k]).abs().max()}"
    rows = [json.loads(ln) for ln in (tmp_path / "two" / "log.jsonl").read_text().splitlines()]
    assert rows[-1]["repa"] == pytest.approx(one.losses["repa"], abs=1e-5)


def test_latents_without_images_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny: Tiny) -> None:
    import pfbench.train.trainer as trainer_mod

    real = trainer_mod.open_train_data

    def no_pixels(*args: Any, **kw: Any) -> Any:
        data = real(*args, **kw)
        data.pixels = lambda idx: None  # type: ignore[method-assign]  # a store encoded without images
        return data

    monkeypatch.setattr(trainer_mod, "open_train_data", no_pixels)
    with pytest.raises(PfbenchError, match="--keep-images"):
        train(spec_from_dict(tiny()), tmp_path, progress=False)
