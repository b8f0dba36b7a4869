"""Tests for pfbench.train.loop and pfbench.train.checkpoints: config parsing, determinism, resume, DDP, checkpoints."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import pfbench.train.loop as train_mod
import pfbench.train.trainer as trainer_mod
from pfbench import PfbenchError
from pfbench.train.checkpoints import (
    build_model_from_checkpoint,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from pfbench.train.draws import Dist, EpochOrder, expand_tokens
from pfbench.train.loop import TrainSpec, spec_from_dict, train
from pfbench.train.trainer import Trainer

HERE = Path(__file__).parent


Tiny = Callable[..., dict[str, Any]]  # a training config factory: ``tiny(**changes) -> dict``


@pytest.fixture
def tiny(tiny_train: Tiny) -> Tiny:
    """conftest's ``tiny_train``: a config that trains in well under a second per step on one CPU core."""
    return tiny_train


def _tensors(state: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Flattens nested state dicts/lists into {path: tensor}."""
    out: dict[str, torch.Tensor] = {}
    if isinstance(state, torch.Tensor):
        out[prefix] = state
    elif isinstance(state, dict):
        for k, v in state.items():
            out.update(_tensors(v, f"{prefix}/{k}"))
    elif isinstance(state, (list, tuple)):
        for i, v in enumerate(state):
            out.update(_tensors(v, f"{prefix}/{i}"))
    return out


# ---------------------------------------------------------------- config


def test_spec_roundtrip_and_defaults(tiny: Tiny) -> None:
    spec = spec_from_dict(tiny())
    assert spec_from_dict(spec.to_dict()) == spec
    assert spec.timesteps is not None and spec.timesteps.name == "ltg"
    sit = spec_from_dict(tiny(kind="sit"))
    assert sit.timesteps is not None and sit.timesteps.name == "global_uniform"
    cfg = sit.net_config()
    assert (cfg.per_token_t, cfg.difficulty_head, cfg.input_size, cfg.in_channels) == (False, False, 8, 3)
    assert spec_from_dict(tiny(timesteps="srm")).timesteps == train_mod.TimestepSpec("srm")
    assert json.loads(json.dumps(spec.to_dict())) == spec.to_dict()  # plain data


@pytest.mark.parametrize(
    ("patch", "needle"),
    [
        ({"lrr": 1e-4}, "'lr'"),
        ({"data": {"resolutoin": 16}}, "data.'resolution'"),
        ({"timesteps": {"name": "ltg", "param": {}}}, "timesteps.'params'"),
        ({"model_overrides": {"widht": 32}}, "model_overrides.'width'"),
        ({"timesteps": {"name": "ltg", "params": {"mm": 0.5}}}, "'m'"),
        ({"timesteps": {"name": "ltgg"}}, "'ltg'"),
        ({"model": "cpu-xss"}, "'cpu-xs'"),
    ],
)
def test_spec_unknown_keys_name_nearest(patch: dict[str, Any], needle: str, tiny: Tiny) -> None:
    with pytest.raises(PfbenchError) as err:
        spec_from_dict(tiny(**patch))
    assert needle in str(err.value)


@pytest.mark.parametrize(
    ("patch", "needle"),
    [
        ({"steps": "10"}, "steps must be int"),
        ({"steps": 2.5}, "steps must be int"),
        ({"lr": "1e-4"}, "1.0e-4"),
        ({"data": 16}, "data must be a mapping"),
        ({"threads": True}, "threads must be int"),
        ({"kind": "dit"}, "kind='dit'"),
        ({"ema_decay": 1.0}, "ema_decay"),
        ({"amp": "fp16"}, "amp='fp16'"),
        ({"model_overrides": {"input_size": 16}}, "disagrees with the dataset"),
        ({"model_overrides": {"per_token_t": False}}, "set by kind"),
        ({"model_overrides": {"depth": "2"}}, "model_overrides.depth must be int"),
        ({"kind": "sit", "timesteps": "ltg"}, "kind 'sit' needs a global one"),
    ],
)
def test_spec_bad_values(patch: dict[str, Any], needle: str, tiny: Tiny) -> None:
    with pytest.raises(PfbenchError) as err:
        spec_from_dict(tiny(**patch))
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------- helpers and determinism


def test_expand_tokens_follows_patch_order() -> None:
    t = torch.rand(3, 16)  # 4×4 token grid, patch 2 → 8×8 pixels
    px = expand_tokens(t, 2, 8, 8)  # (3, 1, 8, 8)
    assert px.shape == (3, 1, 8, 8)
    assert torch.equal(px[:, 0, 2 * 1, 2 * 3 + 1], t[:, 1 * 4 + 3])  # row 1, col 3
    pooled = torch.nn.functional.avg_pool2d(px, 2).flatten(1)  # (3, 16), row-major like DiT's patchify
    assert torch.allclose(pooled, t)
    assert torch.equal(torch.nn.functional.max_pool2d(px, 2).flatten(1), pooled)  # constant per patch


def test_epoch_order_loops_forever_and_is_seeded() -> None:
    order = EpochOrder(10, seed=3)
    idx = torch.cat([order.batch(k, 4) for k in range(10)])  # 40 positions = 4 epochs
    for e in range(4):
        assert sorted(idx[10 * e : 10 * (e + 1)].tolist()) == list(range(10))
    assert not torch.equal(idx[:10], idx[10:20])  # fresh permutation per epoch
    assert torch.equal(EpochOrder(10, seed=3).batch(7, 4), order.batch(7, 4))
    assert not torch.equal(EpochOrder(10, seed=4).batch(0, 10), order.batch(0, 10))
    assert order.batch(10**6, 4).shape == (4,)


def test_rank_slices_reassemble_the_global_batch(tiny: Tiny) -> None:
    spec = spec_from_dict(tiny())
    cpu = torch.device("cpu")
    whole = Trainer(spec, Path("unused"), Dist(0, 1, cpu, False)).draws(5)
    parts = [Trainer(spec, Path("unused"), Dist(r, 2, cpu, False)).draws(5) for r in range(2)]
    assert whole[4] is None  # pixel data draws no posterior noise
    for i, full in enumerate(whole[:4]):
        assert torch.equal(torch.cat([p[i] for p in parts]), full)
    assert not torch.equal(whole[1], Trainer(spec, Path("unused"), Dist(0, 1, cpu, False)).draws(6)[1])


# ---------------------------------------------------------------- training, resume, faults


def test_speed_switches_keep_run_hashes_and_compile_needs_cuda(tmp_path: Path, tiny: Tiny) -> None:
    """compile/checkpointing are runtime switches: absent from ``to_dict`` at their defaults (suite run folders
    keep their hashes), resumable either way; compile is refused on CPU with one line."""
    spec = spec_from_dict(tiny())
    assert "compile" not in spec.to_dict() and "checkpointing" not in spec.to_dict()
    on = spec_from_dict(tiny(checkpointing=True))
    assert on.to_dict()["checkpointing"] is True and spec_from_dict(on.to_dict()) == on
    with pytest.raises(PfbenchError, match="compile=true needs a CUDA device") as err:
        train(spec_from_dict(tiny(compile=True, device="cpu")), tmp_path / "c", progress=False)
    assert "\n" not in str(err.value)


def test_checkpointed_training_is_bit_identical(tmp_path: Path, tiny: Tiny) -> None:
    plain = train(spec_from_dict(tiny(steps=3)), tmp_path / "a", progress=False)
    ckpt = train(spec_from_dict(tiny(steps=3, checkpointing=True)), tmp_path / "b", progress=False)
    a, b = _tensors(load_checkpoint(plain.checkpoint).model), _tensors(load_checkpoint(ckpt.checkpoint).model)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_is_bit_identical(tmp_path: Path, tiny: Tiny) -> None:
    spec = spec_from_dict(tiny(steps=7))  # 7 steps × 8 > 40 images: crosses an epoch boundary
    straight = train(spec, tmp_path / "a", progress=False)
    stopped = train(spec, tmp_path / "b", progress=False, stop_after=3)
    assert stopped.steps == 3 and load_checkpoint(stopped.checkpoint).step == 3
    resumed = train(spec, tmp_path / "b", progress=False)
    assert resumed.steps == straight.steps == 7
    a, b = load_checkpoint(straight.checkpoint), load_checkpoint(resumed.checkpoint)
    for part in ("model", "ema", "optimizer"):
        ta, tb = _tensors(getattr(a, part)), _tensors(getattr(b, part))
        assert ta.keys() == tb.keys() and ta
        for k in ta:
            assert torch.equal(ta[k], tb[k]), f"{part}{k} differs after resume"
    assert not torch.equal(a.model["final.linear.weight"], a.ema["final.linear.weight"])  # EMA is tracked
    assert straight.losses.keys() == {"loss", "fm", "nll"}
    logged = [json.loads(ln)["step"] for ln in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert logged == sorted(set(logged))  # no duplicated log lines after resume


def test_training_reduces_loss_and_sit_has_no_nll(tmp_path: Path, tiny: Tiny) -> None:
    pf = train(spec_from_dict(tiny(steps=24, lr=3e-3, log_every=4)), tmp_path / "pf", progress=False)
    rows = [json.loads(ln) for ln in (tmp_path / "pf" / "log.jsonl").read_text().splitlines()]
    assert rows[-1]["fm"] < 0.85 * rows[0]["fm"]
    assert pf.img_per_s > 0
    assert not pf.diverged and not any("diverged" in r for r in rows)  # a healthy run is never flagged
    sit = train(spec_from_dict(tiny(kind="sit", steps=2)), tmp_path / "sit", progress=False)
    assert set(sit.losses) == {"loss", "fm"} and sit.losses["loss"] == sit.losses["fm"]
    net = build_model_from_checkpoint(load_checkpoint(sit.checkpoint))
    v, logvar = net(torch.zeros(2, 3, 8, 8), torch.full((2,), 0.5), torch.tensor([0, 10]))
    assert v.shape == (2, 3, 8, 8) and logvar is None


def test_non_finite_loss_stops_and_keeps_last_good(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   tiny: Tiny) -> None:
    real = trainer_mod.pf_loss
    calls = {"n": 0}

    def faulty(*args: Any, **kw: Any) -> Any:
        calls["n"] += 1
        loss, parts = real(*args, **kw)
        return (loss * float("nan"), parts) if calls["n"] == 3 else (loss, parts)

    monkeypatch.setattr(trainer_mod, "pf_loss", faulty)
    with pytest.raises(PfbenchError) as err:
        train(spec_from_dict(tiny(ckpt_every=2)), tmp_path, progress=False)
    msg = str(err.value)
    assert "non-finite loss at step 3" in msg and str(tmp_path / "last.pt") in msg
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt.step == 2
    assert all(torch.isfinite(t).all() for t in _tensors(ckpt.model).values())


def test_lr_3_warns_that_training_diverges_before_it_turns_non_finite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny: Tiny
) -> None:
    with pytest.raises(PfbenchError, match="non-finite loss at step .* after the loss diverged"):
        train(spec_from_dict(tiny(lr=3.0, steps=20)), tmp_path, progress=False)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "training diverges" in err[0] and "lr (3)" in err[0], err
    rows = [json.loads(ln) for ln in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert rows and rows[0].get("diverged") is True  # fm ≈ 190 over steps 1-2 (≈ 1.4 at initialisation)


def test_divergence_without_nan_is_flagged_and_logged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tiny: Tiny
) -> None:
    """The NLL 1.7e10 case: every loss stays finite, so only the divergence check can tell."""
    real = trainer_mod.pf_loss
    calls = {"n": 0}

    def blown(*args: Any, **kw: Any) -> Any:  # logged fm × 1e4 from step 5 on; the gradients stay the same
        calls["n"] += 1
        loss, parts = real(*args, **kw)
        return (loss, {**parts, "fm": parts["fm"] * 1e4}) if calls["n"] >= 5 else (loss, parts)

    monkeypatch.setattr(trainer_mod, "pf_loss", blown)
    result = train(spec_from_dict(tiny(steps=8)), tmp_path, progress=False)
    assert result.steps == 8 and result.diverged
    rows = [json.loads(ln) for ln in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r.get("diverged")] == [6, 8]  # steps 5-6 and 7-8; not 1-4
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "training diverges: fm" in err[0] and "at step 6" in err[0], err
    monkeypatch.setattr(trainer_mod, "pf_loss", real)
    assert train(spec_from_dict(tiny(steps=8)), tmp_path, progress=False).diverged  # sticky: read from the log


def test_resume_refuses_a_different_run(tmp_path: Path, tiny: Tiny) -> None:
    train(spec_from_dict(tiny(steps=2)), tmp_path, progress=False)
    with pytest.raises(PfbenchError, match="lr=0.001") as err:
        train(spec_from_dict(tiny(steps=4, lr=2e-3)), tmp_path, progress=False)
    assert "--no-resume" in str(err.value)  # the CLI flag, not only the Python argument
    more = train(spec_from_dict(tiny(steps=4, ckpt_every=3, keep_every=2)), tmp_path, progress=False)
    assert more.steps == 4  # steps / ckpt cadence may change on resume
    assert load_checkpoint(tmp_path / "step_000004.pt").step == 4
    again = train(spec_from_dict(tiny(steps=4)), tmp_path, progress=False)
    assert again.steps == 4 and "loss" in again.losses  # nothing left to do ...
    last = json.loads((tmp_path / "log.jsonl").read_text().splitlines()[-1])
    batch = spec_from_dict(tiny(steps=4)).batch_size  # ... and its speed is the whole run's, from the log
    assert last["step"] == 4 and again.img_per_s == pytest.approx(4 * batch / last["wall_s"]) and again.img_per_s > 0


def test_checkpoint_written_before_new_config_fields_still_resumes(tmp_path: Path, tiny: Tiny) -> None:
    """Fields added later (data.path, repa, the net's repa_hidden) take their defaults: an older run resumes."""
    from pfbench.train.checkpoints import save_checkpoint

    train(spec_from_dict(tiny(steps=2)), tmp_path, progress=False)
    old = load_checkpoint(tmp_path / "last.pt")
    config = {k: v for k, v in old.config.items() if k != "repa"}
    config["data"] = {k: v for k, v in config["data"].items() if k != "path"}
    net_config = {k: v for k, v in old.net_config.items() if k != "repa_hidden"}
    save_checkpoint(tmp_path / "last.pt", step=old.step, config=config, net_config=net_config, model=old.model,
                    ema=old.ema, optimizer=old.optimizer, rng=old.rng)
    assert train(spec_from_dict(tiny(steps=3)), tmp_path, progress=False).steps == 3


def test_ddp_two_processes_match_one(tmp_path: Path, tiny: Tiny) -> None:
    cfg = tiny(steps=4, threads=1)
    one = train(spec_from_dict(cfg), tmp_path / "one", progress=False)
    (tmp_path / "spec.json").write_text(json.dumps(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--standalone",
        str(HERE / "_ddp_worker.py"),
        str(tmp_path / "spec.json"),
        str(tmp_path / "two"),
    ]
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["last.pt", "log.jsonl"]
    assert len((tmp_path / "two" / "log.jsonl").read_text().splitlines()) == 2  # rank 0 only, steps 2 and 4
    a, b = load_checkpoint(one.checkpoint), load_checkpoint(tmp_path / "two" / "last.pt")
    assert b.step == 4
    for part in ("model", "ema"):
        for k, ta in getattr(a, part).items():
            tb = getattr(b, part)[k]
            assert torch.allclose(ta, tb, rtol=1e-5, atol=1e-6), f"{part}.{k}: {(ta - tb).abs().max()}"


# ---------------------------------------------------------------- checkpoints


def _small_ckpt(tmp_path: Path, tiny: Tiny) -> Path:
    return train(spec_from_dict(tiny(steps=1)), tmp_path / "run", progress=False).checkpoint


def test_build_model_from_checkpoint(tmp_path: Path, tiny: Tiny) -> None:
    ckpt = load_checkpoint(_small_ckpt(tmp_path, tiny))
    assert ckpt.config["kind"] == "pf" and ckpt.version and ckpt.rng
    ema, raw = build_model_from_checkpoint(ckpt), build_model_from_checkpoint(ckpt, use_ema=False)
    assert not ema.training and not any(p.requires_grad for p in ema.parameters())
    for k, t in ckpt.ema.items():
        assert torch.equal(ema.state_dict()[k], t)
    assert any(not torch.equal(raw.state_dict()[k], t) for k, t in ckpt.ema.items())
    v, logvar = ema(torch.zeros(2, 3, 8, 8), torch.rand(2, 16), torch.tensor([1, 2]))
    assert v.shape == (2, 3, 8, 8) and logvar is not None and logvar.shape == (2, 1, 8, 8)


class _NotData:
    pass


@pytest.mark.parametrize(
    ("damage", "needle"),
    [
        ("missing", "not found"),
        ("truncated", "truncated or corrupt"),
        ("garbage", "truncated or corrupt"),
        ("code", "pickled objects"),
        ("foreign", "not a pfbench checkpoint"),
        ("empty", "truncated or corrupt"),
    ],
)
def test_load_checkpoint_errors_name_the_file(tmp_path: Path, damage: str, needle: str, tiny: Tiny) -> None:
    good = _small_ckpt(tmp_path, tiny)
    bad = tmp_path / f"{damage}.pt"
    if damage == "truncated":
        bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif damage == "garbage":
        bad.write_bytes(os.urandom(4096))
    elif damage == "code":
        torch.save({"format": "pfbench-ckpt/1", "x": _NotData()}, bad)
    elif damage == "foreign":
        torch.save({"state_dict": {}}, bad)
    elif damage == "empty":
        bad.write_bytes(b"")
    with pytest.raises(PfbenchError) as err:
        load_checkpoint(bad)
    assert str(bad) in str(err.value) and needle in str(err.value) and "\n" not in str(err.value)


def test_incompatible_state_is_reported(tmp_path: Path, tiny: Tiny) -> None:
    ckpt = load_checkpoint(_small_ckpt(tmp_path, tiny))
    wider = dataclasses.replace(ckpt, net_config={**ckpt.net_config, "width": 64})
    with pytest.raises(PfbenchError, match="shape mismatches"):
        build_model_from_checkpoint(wider)
    ema = dict(ckpt.ema)
    ema.pop("final.linear.bias")
    with pytest.raises(PfbenchError, match="1 missing keys"):
        build_model_from_checkpoint(dataclasses.replace(ckpt, ema=ema))
    with pytest.raises(PfbenchError, match="lacks"):
        build_model_from_checkpoint(dataclasses.replace(ckpt, net_config={**ckpt.net_config, "depht": 3}))


def test_atomic_save_and_rng_roundtrip(tmp_path: Path) -> None:
    path = tmp_path / "x.pt"
    rng = capture_rng_state()
    a = (torch.rand(3), float(torch.rand(1)))
    save_checkpoint(
        path, step=5, config={"a": [1, None]}, net_config={}, model={}, ema={}, optimizer=None, rng=rng
    )
    assert [p.name for p in tmp_path.iterdir()] == ["x.pt"]  # no temp file left behind
    restore_rng_state(load_checkpoint(path).rng)
    assert torch.equal(torch.rand(3), a[0]) and float(torch.rand(1)) == a[1]
    assert load_checkpoint(path).config == {"a": [1, None]}


def test_trainspec_is_frozen() -> None:
    spec = TrainSpec()
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.steps = 3  # type: ignore[misc]


@pytest.mark.parametrize("warmup", [False, True])
def test_ema_update_rule(tmp_path: Path, warmup: bool, tiny: Tiny) -> None:
    """One step: EMA = d·init + (1 − d)·new with d = ema_decay, or (1+0)/(10+0) = 0.1 under EMA warm-up."""
    spec = spec_from_dict(tiny(steps=1, ema_decay=0.9, ema_warmup=warmup))
    init = build_model_from_checkpoint(load_checkpoint(train(spec, tmp_path / "a", progress=False,
                                                             stop_after=0).checkpoint), use_ema=False)
    ckpt = load_checkpoint(train(spec, tmp_path / "b", progress=False).checkpoint)
    d = 0.1 if warmup else 0.9
    for name, p0 in init.state_dict().items():
        if name in ckpt.ema and p0.is_floating_point():
            expected = d * p0 + (1 - d) * ckpt.model[name]
            torch.testing.assert_close(ckpt.ema[name], expected, rtol=1e-5, atol=1e-6)
