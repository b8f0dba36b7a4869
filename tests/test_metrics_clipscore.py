"""CLIP score on a tiny random open_clip model: agreement with torchmetrics' CLIPScore definition."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from torch import Tensor

from pfbench import PfbenchError
from pfbench.encoders.clip import CLIPNetwork, load_openclip
from pfbench.metrics.clipscore import CLIPScore
from pfbench.types import Cond

os.environ.setdefault("HF_HUB_OFFLINE", "1")
open_clip = pytest.importorskip("open_clip")
ARCH = "pfbench-test-tiny-clip"
CLASSES = ("disk", "square", "triangle", "ring")


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any, Any]:
    """A tiny randomly initialised CLIP from a custom open_clip config (no download)."""
    cfg = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
    }
    d = tmp_path_factory.mktemp("clipcfg")
    (d / f"{ARCH}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(d)
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms(ARCH, pretrained=None)
    return model.eval(), open_clip.get_tokenizer(ARCH), preprocess


def _images(n: int, seed: int = 0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.randint(0, 256, (n, 3, 1, 1), generator=g).expand(n, 3, 32, 32)
    noise = torch.randint(-40, 40, (n, 3, 32, 32), generator=g)
    return (base + noise).clamp(0, 255).to(torch.uint8)  # (n, 3, 32, 32), varied colours


class _HFModel:
    """The HF ``CLIPModel`` surface torchmetrics calls, over an open_clip model."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.config = object()  # no text_config: torchmetrics skips its HF-specific truncation

    def to(self, device: Any) -> _HFModel:
        return self

    def get_image_features(self, pixel_values: Tensor) -> Tensor:
        return self.model.encode_image(pixel_values)

    def get_text_features(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.model.encode_text(input_ids)


class _HFProcessor:
    """The HF ``CLIPProcessor`` surface torchmetrics calls, over open_clip's tokenizer/preprocess."""

    def __init__(self, tokenizer: Any, preprocess: Any) -> None:
        self.tokenizer, self.preprocess = tokenizer, preprocess

    def __call__(self, images: Any = None, text: Any = None, **kwargs: Any) -> dict[str, Tensor]:
        if images is not None:
            pil = [Image.fromarray(im.permute(1, 2, 0).numpy()) for im in images]
            return {"pixel_values": torch.stack([self.preprocess(p) for p in pil])}
        ids = self.tokenizer(list(text))
        return {"input_ids": ids, "attention_mask": (ids != 0).long()}


def test_matches_torchmetrics_clip_score(clip: tuple[Any, Any, Any]) -> None:
    tm = pytest.importorskip("torchmetrics.functional.multimodal.clip_score")
    from torchmetrics.multimodal.clip_score import CLIPScore as TMCLIPScore

    model, tokenizer, preprocess = clip
    x, y = _images(24), torch.arange(24) % len(CLASSES)
    prompts = [f"a photo of a {CLASSES[int(i)]}." for i in y]
    net = CLIPNetwork(model, tokenizer, preprocess)
    ours = CLIPScore(net, class_names=CLASSES)
    for i in range(0, 24, 10):  # uneven batches
        ours.update(net(x[i : i + 10]), Cond(y[i : i + 10]))
    with torch.no_grad():
        per_sample, n = tm._clip_score_update(
            list(x), prompts, _HFModel(model), _HFProcessor(tokenizer, preprocess)
        )
    assert n == 24 and per_sample.abs().min() > 0  # a non-degenerate random CLIP
    # torchmetrics' per-sample score is 100·cos; the CLIP score clamps each at 0, then averages
    expected = float(per_sample.double().clamp_min(0).mean())
    print(f"clip_score vs torchmetrics: {ours.compute()['clip_score']:.6g} vs {expected:.6g}, "
          f"rel {abs(ours.compute()['clip_score'] / expected - 1):.1e}")
    assert ours.compute()["clip_score"] == pytest.approx(expected, rel=1e-5)
    # torchmetrics' CLIPScore class averages first, then clamps: same number on positive-cosine samples
    pos = per_sample > 0
    assert 0 < int(pos.sum()) < 24
    tmc = TMCLIPScore(model_name_or_path=lambda: (_HFModel(model), _HFProcessor(tokenizer, preprocess)))
    with torch.no_grad():
        tmc.update(list(x[pos]), [p for p, k in zip(prompts, pos, strict=True) if k])
    sub = CLIPScore(net, class_names=CLASSES)
    sub.update(net(x[pos]), Cond(y[pos]))
    assert sub.compute()["clip_score"] == pytest.approx(float(tmc.compute()), rel=1e-5)


def test_captions_prompts_and_errors(clip: tuple[Any, Any, Any]) -> None:
    model, tokenizer, preprocess = clip
    x, y = _images(6, seed=1), torch.tensor([0, 1, 2, 3, 0, 1])
    net = CLIPNetwork(model, tokenizer, preprocess)
    feats = net(x)  # {"image": (6, E)}
    by_class = CLIPScore(net, class_names=CLASSES).scores(feats, Cond(y))
    texts = tuple(f"a photo of a {CLASSES[int(i)]}." for i in y)
    by_text = CLIPScore(net).scores(feats, Cond(y, text=texts))
    torch.testing.assert_close(by_class, by_text)  # captions path == class-prompt path
    other = CLIPScore(net).scores(feats, Cond(y, text=("a red ring",) * 6))
    assert not torch.allclose(other, by_text)
    assert (by_class >= 0).all()
    with pytest.raises(PfbenchError, match="no class_names"):
        CLIPScore(net).update(feats, Cond(y))
    with pytest.raises(PfbenchError, match=r"labels must be"):
        CLIPScore(net, class_names=CLASSES).update(feats, Cond(y + 3))
    with pytest.raises(PfbenchError, match="uint8"):
        net(x.float())


def test_load_openclip_from_local_file(clip: tuple[Any, Any, Any], tmp_path: Path) -> None:
    model, tokenizer, _ = clip
    path = tmp_path / "tiny.pt"
    torch.save(model.state_dict(), path)
    loaded, tok, pre = load_openclip(ARCH, path, quick_gelu=False, verify=False)
    ids = tok(["a photo of a disk."])
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.encode_text(ids), model.encode_text(tokenizer(["a photo of a disk."]))
        )
    with pytest.raises(PfbenchError, match="sha256"):  # the default key's checksum refuses a wrong file
        load_openclip(ARCH, path, quick_gelu=False)


def test_formula_rederived_without_torchmetrics(clip: tuple[Any, Any, Any]) -> None:
    # torchmetrics (functional/multimodal/clip_score.py, `_clip_score_update`): features are L2-normalised and
    # score = 100 · Σ(src · tgt); CLIP-S (Hessel et al. 2021) clamps each sample at 0 before averaging.
    model, tokenizer, preprocess = clip
    x, y = _images(8, seed=2), torch.arange(8) % len(CLASSES)
    with torch.no_grad():
        img = model.encode_image(
            torch.stack([preprocess(Image.fromarray(i.permute(1, 2, 0).numpy())) for i in x])
        )
        txt = model.encode_text(tokenizer([f"a photo of a {CLASSES[int(i)]}." for i in y]))
    cos = torch.nn.functional.cosine_similarity(img, txt, dim=-1)
    net = CLIPNetwork(model, tokenizer, preprocess)
    m = CLIPScore(net, class_names=CLASSES)
    m.update(net(x), Cond(y))
    assert m.compute()["clip_score"] == pytest.approx(float((100 * cos).clamp_min(0).mean()), rel=1e-5)
