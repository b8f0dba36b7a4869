"""Text encoders (encoders/text.py): the interface, the shipped tiny encoder, external encoders from local files."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from pfbench import PfbenchError, assets
from pfbench.data.captions import ATTRIBUTES, attribute_targets
from pfbench.data.embedded import EmbeddedSpec, generate
from pfbench.encoders import text_external as tx
from pfbench.encoders import tiny_text as tt
from pfbench.encoders.text import TextEncoder, encode_in_chunks, load_text_encoder, transformer_gflops
from pfbench.registry import TEXT_ENCODERS


@pytest.fixture(scope="module")
def tiny() -> TextEncoder:
    return load_text_encoder("tiny_text")


@pytest.fixture(scope="module")
def captions() -> list[str]:
    # test split, held out from the encoder's training captions
    return list(generate(EmbeddedSpec(split="test", size=300), 0, 300).captions)


def test_tiny_encoder_shapes_mask_and_empty_prompt(tiny: TextEncoder, captions: list[str]) -> None:
    assert isinstance(tiny, TextEncoder) and tiny.name == "tiny_text" and (tiny.dim, tiny.max_len) == (64, 24)
    h, m = tiny.encode([*captions[:3], "", "a photo of a star.", "zebra " * 40])
    assert h.shape == (6, 24, 64) and h.dtype == torch.float32 and m.shape == (6, 24) and m.dtype == torch.bool
    n_words = [len(tt.words(c)) for c in captions[:3]]
    assert m.sum(1).tolist() == [1 + n for n in n_words] + [1, 6, 24]  # <cls> + words; "" is <cls> alone
    assert bool(m[:, 0].all()) and bool((h[~m] == 0).all()) and bool(h[m].abs().sum(-1).gt(0).all())
    assert torch.isfinite(h).all()
    # a mask is a prefix: real tokens first, padding after
    assert bool((m[:, 1:] <= m[:, :-1]).all())
    with pytest.raises(PfbenchError, match="sequence of strings"):
        tiny.encode("a red disk")  # type: ignore[arg-type]
    assert tiny.encode([])[0].shape == (0, 24, 64)


def test_tiny_encoder_is_batch_invariant_and_deterministic(tiny: TextEncoder, captions: list[str]) -> None:
    h, m = tiny.encode(captions[:100])
    one = torch.cat([tiny.encode([c])[0] for c in captions[:10]])
    assert torch.equal(one, h[:10])
    h2, m2 = tiny.encode(captions[37:90])  # another batching: same rows bit for bit
    assert torch.equal(h2, h[37:90]) and torch.equal(m2, m[37:90])
    assert not torch.equal(h[0], h[1])  # different prompts, different states


def test_tiny_encoder_states_carry_caption_attributes(captions: list[str]) -> None:
    """The shipped probe reads every attribute back from held-out captions' states, and not from shuffled ones."""
    net, probe, tok, _ = tt.load_tiny_text_net()
    ids, mask = tok(captions)
    logits = tt.probe_logits(probe, net(ids, mask), mask)
    y = attribute_targets(captions)
    acc = {a: float((logits[a].argmax(1) == y[a]).float().mean()) for a in ATTRIBUTES}
    shuffled = {a: float((logits[a].argmax(1) == y[a].roll(1)).float().mean()) for a in ATTRIBUTES}
    print("probe accuracy", acc, "vs shuffled captions", shuffled)
    assert min(acc.values()) > 0.97
    assert max(shuffled.values()) < 0.6 and sum(shuffled.values()) / len(shuffled) < 0.35


def test_shipped_asset_checksum_and_metadata() -> None:
    path = assets.asset_path(tt.ASSET)
    assert path.parent == assets.ASSETS_DIR and path.stat().st_size < 1 << 20
    _, meta, sha = assets.load_tensors(tt.ASSET)
    assert sha == assets.CHECKSUMS[tt.ASSET]
    assert meta["format"] == "pfbench-tiny-text-v1" and float(meta["probe_mean"]) > 0.97


def test_corrupt_asset_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / tt.ASSET
    bad.write_bytes(assets.asset_path(tt.ASSET).read_bytes()[:-1] + b"\0")
    monkeypatch.setattr(assets, "ASSETS_DIR", tmp_path)
    monkeypatch.setattr(tt, "_LOADED", {})
    with pytest.raises(PfbenchError, match="tiny_text.safetensors has sha256.*pfbench assets build"):
        load_text_encoder("tiny_text")


def test_gflops_per_prompt_is_the_analytic_transformer_cost(tiny: TextEncoder) -> None:
    # 2 blocks at 24 tokens, width 64, MLP 256: qkv + attention + projection + MLP, multiply-add = 2 FLOPs
    per_block = 2 * 24 * 64 * 192 + 4 * 24 * 24 * 64 + 2 * 24 * 64 * 64 + 4 * 24 * 64 * 256
    assert tiny.gflops_per_prompt == pytest.approx(2 * per_block / 1e9)
    assert transformer_gflops(10, 8, 1, 16, gated=True, attn_inner=8, kv_inner=4) == pytest.approx(
        (2 * 10 * 8 * 16 + 4 * 100 * 8 + 2 * 10 * 8 * 8 + 6 * 10 * 8 * 16) / 1e9
    )


def test_registry_names_and_unknown_name() -> None:
    assert {"tiny_text", "clip_l14", "clip_b32", "t5", "qwen", "hf"} <= set(TEXT_ENCODERS.names())
    with pytest.raises(PfbenchError, match="unknown text encoder 'tiny_txt'; did you mean 'tiny_text'"):
        load_text_encoder("tiny_txt")
    with pytest.raises(PfbenchError, match="takes no weights"):
        load_text_encoder("tiny_text", weights="x.pt")


def test_chunks_refuse_an_encoder_that_drops_the_empty_prompt() -> None:
    def forward(prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        m = torch.tensor([[bool(p), False] for p in prompts])
        return torch.ones(len(prompts), 2, 3), m

    with pytest.raises(PfbenchError, match="no valid first token"):
        encode_in_chunks(forward, ["a", ""], 4, "test")


# ---------------------------------------------------------------- external encoders: missing weights


@pytest.fixture
def no_heavy_imports(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """open_clip / transformers cannot be imported, and no weights exist anywhere pfbench looks."""
    monkeypatch.setitem(sys.modules, "open_clip", None)  # `import open_clip` now raises ImportError
    monkeypatch.setitem(sys.modules, "transformers", None)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("PFBENCH_WEIGHTS", raising=False)


@pytest.mark.parametrize(
    ("name", "weights", "expect"),
    [
        ("t5", None, r"t5: model google/flan-t5-base not found .*hf download google/flan-t5-base"),
        ("qwen", None, r"qwen: model Qwen/Qwen3-0.6B not found .*never downloads"),
        ("t5", "google/t5-v1_1-xl", r"model google/t5-v1_1-xl not found .*models--google--t5-v1_1-xl"),
        ("hf", "/does/not/exist", r"hf: model /does/not/exist not found \(no config.json in /does/not/exist\)"),
        ("hf", None, r"hf: pass weights"),
        ("clip_l14", None, r"clip-vit-l-14-openai weights file ViT-L-14.pt not found .*curl"),
        ("clip_b32", "/does/not/ViT-B-32.pt", r"ViT-B-32.pt not found \(looked in argument: /does/not/ViT-B-32.pt"),
    ],
)
@pytest.mark.usefixtures("no_heavy_imports")
def test_missing_external_weights_fail_in_one_line_before_any_heavy_import(name: str, weights: str | None,
                                                                           expect: str) -> None:  # fmt: skip
    # open_clip/transformers are unimportable here: reaching an import (or a hub download) would raise
    # ImportError instead, so the PfbenchError proves the check happens first.
    with pytest.raises(PfbenchError, match=expect) as err:
        load_text_encoder(name, weights=weights)
    assert "\n" not in str(err.value)


def test_pfbench_weights_folder_is_searched_for_hub_ids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "w" / "flan-t5-base").mkdir(parents=True)
    (tmp_path / "w" / "flan-t5-base" / "config.json").write_text("{}")
    monkeypatch.setenv("PFBENCH_WEIGHTS", str(tmp_path / "w"))
    assert tx.resolve_hf_folder("t5", None, tx.T5_DEFAULT) == tmp_path / "w" / "flan-t5-base"
    snap = tmp_path / "hf" / "models--Qwen--Qwen3-0.6B" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text("{}")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    assert tx.resolve_hf_folder("qwen", None, tx.QWEN_DEFAULT) == snap


# ---------------------------------------------------------------- external encoders: tiny local models


def _word_tokenizer(folder: Path, words: list[str], **special: str) -> None:
    """A word-level fast tokenizer saved as a Hugging Face tokenizer folder (no download)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate([*dict.fromkeys([*special.values(), "<unk>", *words])])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", **special).save_pretrained(folder)


def _check_external(enc: Any, dim: int, max_len: int) -> None:
    assert isinstance(enc, TextEncoder) and (enc.dim, enc.max_len) == (dim, max_len)
    h, m = enc.encode(["a red disk", "", "a large blue striped star on the left"])
    assert h.shape == (3, max_len, dim) and m.dtype == torch.bool and bool(m[:, 0].all())
    assert bool((h[~m] == 0).all()) and torch.isfinite(h).all()
    h1, _ = enc.encode(["", "a red disk"])
    assert torch.equal(h1[1], h[0]) and torch.equal(h1[0], h[1])  # independent of the batch
    assert enc.gflops_per_prompt > 0


def test_hf_t5_encoder_from_a_local_folder(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    words = "a red blue disk large striped star on the left".split()
    _word_tokenizer(tmp_path, words, pad_token="<pad>", eos_token="</s>")
    cfg = transformers.T5Config(vocab_size=16, d_model=32, d_kv=8, num_heads=4, d_ff=48, num_layers=2,
                                num_decoder_layers=1, feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1)  # fmt: skip
    torch.manual_seed(0)
    transformers.T5EncoderModel(cfg).save_pretrained(tmp_path)
    enc = load_text_encoder("hf", weights=str(tmp_path))
    _check_external(enc, 32, tx.HF_MAX_LEN)
    assert enc.gflops_per_prompt == pytest.approx(transformer_gflops(tx.HF_MAX_LEN, 32, 2, 48, gated=True))


def test_hf_decoder_only_encoder_keeps_one_token_for_the_empty_prompt(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    _word_tokenizer(tmp_path, "a red blue disk large striped star on the left".split(), eos_token="<eos>")
    cfg = transformers.Qwen2Config(vocab_size=16, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)  # fmt: skip
    torch.manual_seed(0)
    transformers.Qwen2Model(cfg).save_pretrained(tmp_path)
    enc = load_text_encoder("qwen", weights=str(tmp_path))  # a path, so the default hub id is not looked up
    _check_external(enc, 32, tx.HF_MAX_LEN)
    _, m = enc.encode([""])
    assert m.sum().item() == 1


def test_open_clip_text_tower_token_states(tmp_path: Path) -> None:
    """The clip loader's token states, on a small random open_clip CLIP saved to a local file."""
    from open_clip.tokenizer import SimpleTokenizer

    from pfbench.encoders.tiny_clip import _make_model, model_config

    torch.manual_seed(0)
    model = _make_model(model_config(16, 49408))  # the tiny CLIP's shapes with open_clip's full BPE vocabulary
    tok = SimpleTokenizer(context_length=24)
    enc = tx.OpenCLIPText("clip_test", model, tok, "cpu", {"weights": "random"})
    h, m = enc.encode(["a red disk", ""])
    assert h.shape == (2, 24, 64) and m.sum(1).tolist() == [5, 2]  # start, 3 words, end; "" keeps start/end
    # the states before pooling: the end token's state, projected, is open_clip's text embedding
    ids = tok(["a red disk"])
    pooled = h[0, 4] @ model.text_projection
    assert torch.allclose(pooled, model.encode_text(ids)[0], atol=1e-5)


def test_training_is_deterministic_from_its_seed() -> None:
    def train(seed: int) -> dict[str, torch.Tensor]:
        net, probe, _, _ = tt.train_tiny_text(seed, train_size=512, epochs=1, sanity_size=50)
        return {**net.state_dict(), **{f"probe.{k}": v for k, v in probe.state_dict().items()}}

    a, b, c = train(0), train(0), train(1)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["embed.weight"], c["embed.weight"])


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("PFBENCH_SLOW"), reason="~1.5 CPU-minute build; set PFBENCH_SLOW=1")
def test_rebuild_is_bit_identical_to_shipped(tmp_path: Path) -> None:
    # Holds on the same torch/oneDNN build and CPU ISA as the machine that produced the file.
    assert tt.build_tiny_text(tmp_path, 0) == {tt.ASSET: assets.CHECKSUMS[tt.ASSET]}


def test_truncated_prompts_are_said_once_and_counted(tiny: TextEncoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from open_clip.tokenizer import SimpleTokenizer

    from pfbench.encoders import text
    from pfbench.encoders.tiny_clip import _make_model, model_config

    monkeypatch.setattr(text, "TRUNCATED", {})
    long = "a red disk " * 3400  # a 10,000-character prompt
    tiny.encode(["a red disk", long, long[:60]])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "tiny_text: 1 of 3 prompts are longer than 24 tokens and were truncated to 24" in err[0]
    tiny.encode([long])
    assert capsys.readouterr().err == "" and text.TRUNCATED == {"tiny_text": 2}  # said once, counted every time
    torch.manual_seed(0)
    clip = tx.OpenCLIPText("clip_test", _make_model(model_config(16, 49408)), SimpleTokenizer(context_length=24), "cpu",
                           {"weights": "random"})
    clip.encode([long, "a red disk"])
    assert "clip_test: 1 of 2 prompts are longer than 24 tokens" in capsys.readouterr().err
