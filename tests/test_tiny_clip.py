"""Tiny CLIP (embedded default): shipped asset, offline tokenizer, sanity of its scores, determinism."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

from pfbench import PfbenchError, assets
from pfbench.data.embedded import CLASS_NAMES, EmbeddedSpec, generate
from pfbench.encoders import tiny_clip as tc
from pfbench.encoders.base import FeatureContext
from pfbench.encoders.clip import CLIPNetwork
from pfbench.metrics.base import Metric
from pfbench.metrics.clipscore import CLIPEmbedded, CLIPScore
from pfbench.registry import FEATURES, METRICS
from pfbench.types import Cond, quantize

N = 300  # held-out images: test split indices [2000, 2300), not used by the asset's own sanity numbers


@pytest.fixture(scope="module")
def clip() -> tuple[Any, Any, Any]:
    return tc.load_tiny_clip(16)


@pytest.fixture(scope="module")
def net() -> CLIPNetwork:
    """The "tiny_clip" feature network as evaluate builds it for 16×16 samples."""
    return FEATURES.get("tiny_clip")(FeatureContext(resolution=16))


@pytest.fixture(scope="module")
def test_batch() -> tuple[Tensor, Tensor, tuple[str, ...]]:
    b = generate(EmbeddedSpec(resolution=16, split="test", size=2300), 2000, 2300)
    return quantize(b.images), b.labels, b.captions


def test_shipped_asset_matches_checksum_and_is_small() -> None:
    name = tc.asset_name(16)
    path = assets.asset_path(name)
    assert path.parent == assets.ASSETS_DIR and path.stat().st_size < 4 << 20
    _, meta, sha = assets.load_tensors(name)
    assert sha == assets.CHECKSUMS[name]
    cfg = json.loads(meta["config"])
    assert cfg["vision_cfg"]["image_size"] == 32 and cfg["text_cfg"]["context_length"] == 24
    assert float(meta["retrieval_at_100"]) > 0.5 and float(meta["zero_shot_acc"]) > 0.5


def test_tokenizer_is_offline_simple_tokenizer_with_compact_ids(clip: tuple[Any, Any, Any]) -> None:
    import open_clip
    from open_clip.tokenizer import SimpleTokenizer, default_bpe

    # the BPE vocabulary ships inside the open_clip package: no network, no HF hub
    assert Path(default_bpe()).is_file() and Path(open_clip.__file__).parent in Path(default_bpe()).parents
    _, tok, _ = clip
    assert isinstance(tok.bpe, SimpleTokenizer)
    ids = tok(["a photo of a disk.", "a photo of a zebra.", "x " * 40])  # (3, 24)
    assert ids.shape == (3, 24) and ids.dtype == torch.int64
    eot = tok.vocab_size - 1
    assert (
        int(ids.max()) == eot and (ids.argmax(1) == torch.tensor([7, 7, 23])).all()
    )  # argmax pooling finds EOT
    assert ids[1, 5] == 1 and ids[0, 5] > 1  # "zebra" never seen in training -> unknown id
    assert (ids[:2, 8:] == 0).all()  # padding
    assert tok.vocab_size < 100  # compact table, not 49,408 rows


def test_matching_captions_beat_shuffled(net: CLIPNetwork, test_batch: tuple[Tensor, Tensor, tuple[str, ...]]) -> None:  # fmt: skip
    x, y, caps = test_batch
    m, feats = CLIPEmbedded(net), net(x)
    match = m.scores(feats, Cond(y, text=caps))
    shuffled = m.scores(feats, Cond(y, text=caps[1:] + caps[:1]))
    print(f"clip_embedded matching {float(match.mean()):.2f} vs shuffled {float(shuffled.mean()):.2f}")
    assert float(match.mean()) > float(shuffled.mean()) + 30
    assert float((match > shuffled).float().mean()) > 0.9


def test_class_prompt_right_beats_wrong(net: CLIPNetwork, test_batch: tuple[Tensor, Tensor, tuple[str, ...]]) -> None:
    x, y, _ = test_batch
    m, feats = CLIPEmbedded(net), net(x)
    right = m.scores(feats, Cond(y))
    wrong = m.scores(feats, Cond((y + 1) % len(CLASS_NAMES)))
    print(f"clip_embedded class prompt right {float(right.mean()):.2f} vs wrong {float(wrong.mean()):.2f}")
    assert float(right.mean()) > float(wrong.mean()) + 15


def test_retrieval_and_zero_shot_well_above_chance(net: CLIPNetwork, test_batch: tuple[Tensor, Tensor, tuple[str, ...]]) -> None:  # fmt: skip
    x, y, caps = test_batch
    img = net(x)["image"]  # (N, E) normalised
    txt = net.encode_text(caps)  # (N, E)
    cls = net.encode_text([f"a photo of a {c}." for c in CLASS_NAMES])  # (K, E)
    hits = torch.cat(
        [(img[i : i + 100] @ txt[i : i + 100].T).argmax(1) == torch.arange(100) for i in range(0, N, 100)]
    )
    zero_shot = float(((img @ cls.T).argmax(1) == y).float().mean())
    print(
        f"retrieval@100 {float(hits.float().mean()):.3f} (chance 0.01), zero-shot {zero_shot:.3f} (chance 0.1)"
    )
    assert float(hits.float().mean()) > 0.6
    assert zero_shot > 0.6


def test_metric_is_registered_and_equals_clip_score(clip: tuple[Any, Any, Any], net: CLIPNetwork, test_batch: tuple[Tensor, Tensor, tuple[str, ...]]) -> None:  # fmt: skip
    cls = METRICS.get("clip_embedded")
    assert cls is CLIPEmbedded and cls.name == "clip_embedded" and cls.higher_is_better
    assert cls.features == "tiny_clip" and cls.needs == {"text"}
    m = cls(net)
    assert isinstance(m, Metric)
    x, y, _ = test_batch
    for i in range(0, 100, 37):  # uneven batches
        m.update(net(x[i : min(i + 37, 100)]), Cond(y[i : min(i + 37, 100)]))
    other = CLIPNetwork(*clip)  # the same model without the resolution check
    ref = CLIPScore(other, class_names=CLASS_NAMES)
    ref.update(other(x[:100]), Cond(y[:100]))
    assert m.compute() == pytest.approx({"clip_embedded": ref.compute()["clip_score"]}, rel=1e-6)
    with pytest.raises(PfbenchError, match="resolution 16"):
        net(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(PfbenchError, match="before any update"):
        cls(net).compute()


def test_loader_returns_independent_models(clip: tuple[Any, Any, Any]) -> None:
    a, _, _ = tc.load_tiny_clip(16)
    a.logit_scale.data.fill_(0.0)  # a caller mutating its copy must not leak into the next one
    b, _, _ = tc.load_tiny_clip(16)
    assert float(b.logit_scale) != 0.0 and not b.training


def test_missing_resolution_says_how_to_rebuild(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PFBENCH_CACHE", str(tmp_path))
    with pytest.raises(PfbenchError, match=r"tiny_clip_r32\.safetensors not found.*--resolution 32"):
        tc.load_tiny_clip(32)


def test_training_is_deterministic_and_seeded() -> None:
    def train(seed: int) -> dict[str, Tensor]:
        model, tok, meta = tc.train_tiny_clip(16, seed, train_size=256, epochs=1, sanity_size=100)
        assert meta["seed"] == str(seed) and "ClipLoss" in meta["train"]
        return {**model.state_dict(), "bpe": tok.bpe_ids}

    a, b, c = train(0), train(0), train(1)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["text_projection"], c["text_projection"])


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("PFBENCH_SLOW"), reason="~2 min CPU build; set PFBENCH_SLOW=1")
def test_rebuild_is_bit_identical_to_shipped(tmp_path: Path) -> None:
    # Holds on the same torch/oneDNN build and CPU ISA as the machine that produced the file.
    assert tc.build_tiny_clip(tmp_path, 16, 0) == {tc.asset_name(16): assets.CHECKSUMS[tc.asset_name(16)]}
