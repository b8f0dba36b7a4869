"""Text-to-image training (docs/protocol.md §3): text dropout to the empty prompt, LTG with m = 0.5, the frozen encoder run on
each batch's captions, checkpoints that load back into the text-to-image network."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from _text_stub import StubTextEncoder, install_stub  # pytest puts tests/ on sys.path

from pfbench import PfbenchError
from pfbench.nets import T2IConfig, T2INet
from pfbench.train.checkpoints import build_model_from_checkpoint, load_checkpoint
from pfbench.train.draws import Dist
from pfbench.train.loop import spec_from_dict, train
from pfbench.train.spec import TextSpec, text_shape
from pfbench.train.trainer import Trainer


@pytest.fixture(autouse=True)
def stub_encoder(monkeypatch: pytest.MonkeyPatch) -> StubTextEncoder:
    return install_stub(monkeypatch)


def tiny(**kw: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"model": "cpu-xs", "model_overrides": {"depth": 2, "width": 32, "heads": 2},
                         "kind": "pf_t2i", "data": {"resolution": 8, "size": 40}, "steps": 6, "batch_size": 8,
                         "lr": 1e-3, "warmup": 0, "log_every": 3, "ckpt_every": 3, "device": "cpu", "threads": 1}
    return d | kw


def test_defaults_ltg_m05_text_dropout_and_hash_stability() -> None:
    spec = spec_from_dict(tiny())
    assert spec.timesteps is not None and (spec.timesteps.name, spec.timesteps.params) == ("ltg", {"m": 0.5})
    assert spec.text == TextSpec("tiny_text", None, 0.1) and spec.nll_weight == 0.01
    cfg = spec.net_config()
    assert isinstance(cfg, T2IConfig) and (cfg.text_dim, cfg.text_len, cfg.per_token_t) == (8, 6, True)
    sit = spec_from_dict(tiny(kind="sit_t2i"))
    assert sit.timesteps is not None and sit.timesteps.name == "global_uniform" and not sit.net_config().per_token_t
    # class-conditional specs keep their plain-data form (run folders are keyed by its hash)
    assert "text" not in spec_from_dict(tiny(kind="pf")).to_dict() and "text" in spec.to_dict()
    assert spec_from_dict(tiny(text="clip_l14")).text == TextSpec("clip_l14")
    with pytest.raises(PfbenchError, match="text is for the text-to-image kinds"):
        spec_from_dict(tiny(kind="pf", text={"encoder": "tiny_text"}))
    with pytest.raises(PfbenchError, match="text.dropout"):
        spec_from_dict(tiny(text={"dropout": 1.5}))
    with pytest.raises(PfbenchError, match="needs a global one"):
        spec_from_dict(tiny(kind="sit_t2i", timesteps="ltg"))


def test_text_dropout_gives_the_empty_prompt(stub_encoder: StubTextEncoder) -> None:
    """Dropped rows (rate text.dropout) are encoded as "", the rest as their own captions."""
    spec = spec_from_dict(tiny(text={"dropout": 0.3}, data={"resolution": 8, "size": 400}, batch_size=100))
    tr = Trainer(spec, Path("unused"), Dist(0, 1, torch.device("cpu"), False))
    drops = 0
    for k in range(4):
        idx, _, _, drop, _ = tr.draws(k)
        stub_encoder.prompts.clear()
        states, mask = tr._text(idx, drop)
        assert states.shape == (100, 6, 8) and mask.shape == (100, 6)
        caps = tr.data.captions(idx)  # type: ignore[attr-defined]
        empty = [i for i in range(100) if bool(drop[i])]
        assert set(stub_encoder.prompts) == {caps[i] for i in range(100) if not drop[i]} | ({""} if empty else set())
        assert len(stub_encoder.prompts) == len(set(stub_encoder.prompts))  # each string once per batch
        for i in empty:
            assert int(mask[i].sum()) == 1  # "" is the one <cls> token
        drops += len(empty)
    assert 0.2 < drops / 400 < 0.4


def test_train_and_load_back(tmp_path: Path) -> None:
    res = train(spec_from_dict(tiny()), tmp_path / "pf", progress=False)
    assert res.steps == 6 and set(res.losses) == {"loss", "fm", "nll"}
    net = build_model_from_checkpoint(load_checkpoint(res.checkpoint))
    assert isinstance(net, T2INet) and net.cfg.difficulty_head
    again = train(spec_from_dict(tiny(steps=9)), tmp_path / "pf", progress=False)  # resumes
    assert again.steps == 9
    sit = train(spec_from_dict(tiny(kind="sit_t2i")), tmp_path / "sit", progress=False)
    assert set(sit.losses) == {"loss", "fm"}
    with pytest.raises(PfbenchError, match="different network|trained with kind"):
        train(spec_from_dict(tiny(kind="sit_t2i", steps=9)), tmp_path / "pf", progress=False)


def test_missing_external_encoder_weights_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A T2I config naming an external encoder whose weights are absent fails while parsing, in one line."""
    monkeypatch.undo()  # the real loader, not the stub
    text_shape.cache_clear()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PfbenchError) as err:
        spec_from_dict(tiny(text={"encoder": "t5", "weights": str(tmp_path / "no-such-t5")}))
    assert "\n" not in str(err.value) and "no-such-t5" in str(err.value)
