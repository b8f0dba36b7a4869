"""Tiny CLIP for the embedded default's CLIP score (docs/protocol.md §9): open_clip, trained by pfbench, no downloads.

The model is open_clip's own ``CLIP`` class built from a custom config: a ModifiedResNet image
tower (``layers=(1, 1, 1, 1)``, width 8, attention pooling; input side ``max(32, resolution)``, so
16×16 images are upsampled by the same open_clip preprocessing the metric uses) and a 2-layer,
64-wide text transformer with a 24-token context. It is trained with open_clip's ``ClipLoss`` on the
embedded train split's (image, caption) pairs, with 30% of captions replaced by the class prompt
"a photo of a {class name}." so class-conditional prompts are in distribution. Training is
deterministic on one CPU thread from a seed (~2 minutes): ``build_tiny_clip`` rewrites the shipped
``tiny_clip_r16.safetensors`` bit for bit on the same torch build and CPU instruction set.

Tokenizer: open_clip's ``SimpleTokenizer`` (its BPE vocabulary ships inside the open_clip package:
works offline) followed by a lookup from the BPE ids seen in training to a compact vocabulary
(stored in the asset), so the token table has ~55 rows instead of 49,408. Pad stays 0, unseen BPE
ids map to one unknown id (1), and end-of-text keeps the largest id, so open_clip's argmax pooling
still picks it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from pfbench import PfbenchError
from pfbench.assets import load_tensors, save_tensors
from pfbench.data.embedded import CLASS_NAMES, EmbeddedSpec, generate
from pfbench.encoders.base import FeatureContext, deterministic
from pfbench.encoders.clip import PROMPT, CLIPNetwork
from pfbench.types import quantize

_FORMAT = "pfbench-tiny-clip-v1"
_CONTEXT = 24  # longest embedded caption is 20 tokens with start/end
_TRAIN_SIZE = 32_768
_EPOCHS = 4
_BATCH = 128
_LR = 5e-3
_WD = 0.1
_PROMPT_P = 0.3  # fraction of training captions replaced by the class prompt
_SANITY_SIZE = 1_000  # test-split images for the sanity numbers stored in the metadata
_UNK = 1
_BPE_IDS = "tokenizer.bpe_ids"  # tensor name of the kept BPE ids inside the asset


def asset_name(resolution: int) -> str:
    """File name of the tiny CLIP for ``resolution``."""
    return f"tiny_clip_r{resolution}.safetensors"


def _rebuild_hint(resolution: int) -> str:
    return f"pfbench assets build --resolution {resolution}"


def model_config(resolution: int, vocab_size: int) -> dict[str, Any]:
    """open_clip ``CLIP`` arguments (``embed_dim``, ``vision_cfg``, ``text_cfg``) for the tiny CLIP."""
    return {
        "embed_dim": 64,
        "vision_cfg": {
            "layers": [1, 1, 1, 1],
            "width": 8,
            "head_width": 32,
            "image_size": max(32, resolution),
        },
        "text_cfg": {
            "context_length": _CONTEXT,
            "vocab_size": vocab_size,
            "width": 64,
            "heads": 2,
            "layers": 2,
        },
    }


def _make_model(config: dict[str, Any]) -> Any:
    import open_clip

    return open_clip.CLIP(config["embed_dim"], config["vision_cfg"], config["text_cfg"], output_dict=True)


def make_preprocess(config: dict[str, Any]) -> Callable[[Image.Image], Tensor]:
    """open_clip's eval transform (bicubic resize, centre crop, OpenAI mean/std) at the tower's input side."""
    import open_clip

    return open_clip.image_transform(config["vision_cfg"]["image_size"], is_train=False)


class CompactTokenizer:
    """open_clip's ``SimpleTokenizer`` followed by a map onto a compact vocabulary.

    Args:
        bpe_ids: the kept BPE ids, ascending, without 0 (must include start/end of text).
        context_length: tokens per text (longer texts are truncated, ending in end-of-text).
    """

    def __init__(self, bpe_ids: Tensor, context_length: int = _CONTEXT) -> None:
        from open_clip.tokenizer import SimpleTokenizer

        self.bpe = SimpleTokenizer(context_length=context_length)
        self.bpe_ids = bpe_ids.long()
        if bool((self.bpe_ids[1:] <= self.bpe_ids[:-1]).any()) or self.bpe_ids[-1] != self.bpe.eot_token_id:
            raise PfbenchError("tiny CLIP tokenizer: kept BPE ids must ascend and end with end-of-text")
        self.lut = torch.full((self.bpe.vocab_size,), _UNK, dtype=torch.long)  # BPE id -> compact id
        self.lut[0] = 0
        self.lut[self.bpe_ids] = torch.arange(2, 2 + len(self.bpe_ids))
        self.vocab_size = 2 + len(self.bpe_ids)
        self.context_length = context_length

    def __call__(self, texts: str | Sequence[str]) -> Tensor:
        """Texts → (B, context_length) int64 compact token ids."""
        return self.lut[self.bpe(list(texts) if not isinstance(texts, str) else texts)]

    @staticmethod
    def vocabulary(texts: Sequence[str]) -> Tensor:
        """Ascending BPE ids used by ``texts`` plus start/end of text, (V,) int64 (0 excluded)."""
        from open_clip.tokenizer import SimpleTokenizer

        bpe = SimpleTokenizer(context_length=None)
        ids = {bpe.sot_token_id, bpe.eot_token_id}
        for t in dict.fromkeys(texts):  # unique, in order
            ids.update(bpe.encode(t))
        ids.discard(0)
        return torch.tensor(sorted(ids), dtype=torch.long)


def _prep_all(images: Tensor, preprocess: Callable[[Image.Image], Tensor]) -> Tensor:
    """uint8 (N, 3, H, W) → (N, 3, S, S) float through the metric's own PIL preprocessing."""
    return torch.stack([preprocess(Image.fromarray(im.permute(1, 2, 0).numpy())) for im in images])


@torch.no_grad()
def sanity(model: Any, tokenizer: CompactTokenizer, preprocess: Callable[[Image.Image], Tensor],
           resolution: int, size: int = _SANITY_SIZE) -> dict[str, float]:  # fmt: skip
    """Checks on the first ``size`` test-split images (held out from training).

    Returns:
        ``clip_match``/``clip_shuffled``: CLIP score of images vs their own / a rolled caption;
        ``clip_class_right``/``clip_class_wrong``: vs their class prompt / the next class's prompt;
        ``retrieval_at_100``: image → caption top-1 accuracy among blocks of 100 (chance 0.01);
        ``zero_shot_acc``: argmax over the class prompts (chance 1/num_classes).
    """
    test = generate(EmbeddedSpec(resolution=resolution, split="test", size=size, seed=0))
    img = model.encode_image(_prep_all(quantize(test.images), preprocess), normalize=True)  # (N, E)
    cap = model.encode_text(tokenizer(test.captions), normalize=True)  # (N, E)
    cls = model.encode_text(tokenizer([PROMPT.format(c) for c in CLASS_NAMES]), normalize=True)  # (K, E)
    y, k = test.labels, len(CLASS_NAMES)

    def score(a: Tensor, b: Tensor) -> float:
        return float((100 * (a * b).sum(-1)).clamp_min(0).mean())

    hits = [(img[i : i + 100] @ cap[i : i + 100].T).argmax(1) == torch.arange(min(100, size - i))
            for i in range(0, size, 100)]  # fmt: skip
    return {
        "clip_match": score(img, cap),
        "clip_shuffled": score(img, cap.roll(1, 0)),
        "clip_class_right": score(img, cls[y]),
        "clip_class_wrong": score(img, cls[(y + 1) % k]),
        "retrieval_at_100": float(torch.cat(hits).float().mean()),
        "zero_shot_acc": float(((img @ cls.T).argmax(1) == y).float().mean()),
    }


def train_tiny_clip(resolution: int = 16, seed: int = 0, *, train_size: int = _TRAIN_SIZE, epochs: int = _EPOCHS,
                    sanity_size: int = _SANITY_SIZE) -> tuple[Any, CompactTokenizer, dict[str, str]]:  # fmt: skip
    """Trains the tiny CLIP on the embedded train split, deterministically on one CPU thread.

    Args:
        resolution: image side of the embedded data.
        seed: seeds initialisation, minibatch order and prompt replacement (the data is data seed 0).
        train_size: train-split images used (the shipped asset uses the default).
        epochs: passes over them.
        sanity_size: held-out images for the sanity numbers in the metadata (multiple of 100).

    Returns:
        (model in eval mode, tokenizer, metadata with the config and held-out sanity numbers).
    """
    import open_clip

    with deterministic(threads=1), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        data = generate(EmbeddedSpec(resolution=resolution, split="train", size=train_size, seed=0))
        prompts = [PROMPT.format(c) for c in CLASS_NAMES]
        tokenizer = CompactTokenizer(CompactTokenizer.vocabulary([*data.captions, *prompts]))
        config = model_config(resolution, tokenizer.vocab_size)
        model = _make_model(config)
        preprocess = make_preprocess(config)
        x = _prep_all(quantize(data.images), preprocess)  # (N, 3, S, S): exactly what the metric sees
        text, prompt_text = tokenizer(data.captions), tokenizer(prompts)  # (N, L), (K, L)
        loss_fn = open_clip.ClipLoss()
        gen = torch.Generator().manual_seed(seed)
        steps = train_size // _BATCH
        opt = torch.optim.AdamW(model.parameters(), lr=_LR, weight_decay=_WD)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, _LR, total_steps=epochs * steps, pct_start=0.1)
        model.train()
        for _ in range(epochs):
            perm = torch.randperm(train_size, generator=gen)
            swap = torch.rand(train_size, generator=gen) < _PROMPT_P  # (N,) use the class prompt
            for i in range(steps):
                idx = perm[i * _BATCH : (i + 1) * _BATCH]
                t = torch.where(swap[idx, None], prompt_text[data.labels[idx]], text[idx])  # (B, L)
                out = model(x[idx], t)
                loss = loss_fn(out["image_features"], out["text_features"], out["logit_scale"])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
        model.eval().requires_grad_(False)
        checks = sanity(model, tokenizer, preprocess, resolution, sanity_size)
    meta = {
        "format": _FORMAT,
        "resolution": str(resolution),
        "config": json.dumps(config, sort_keys=True),
        "seed": str(seed),
        "train": f"{train_size} train images x {epochs} epochs, batch {_BATCH}, AdamW {_LR} wd {_WD} one-cycle, "
        f"open_clip.ClipLoss, class prompt for {_PROMPT_P:.0%} of captions",
        **{k: f"{v:.4f}" for k, v in checks.items()},
    }
    return model, tokenizer, meta


def build_tiny_clip(out_dir: str | Path, resolution: int = 16, seed: int = 0) -> dict[str, str]:
    """Trains the tiny CLIP and writes ``tiny_clip_r{resolution}.safetensors`` (atomic, with a sidecar).

    Args:
        out_dir: ``pfbench/assets`` to refresh the shipped file, or ``<cache root>/assets``.
        resolution: image side.
        seed: training seed.

    Returns:
        ``{file name: sha256}`` (put it in ``pfbench.assets.CHECKSUMS`` when refreshing a shipped file).
    """
    model, tokenizer, meta = train_tiny_clip(resolution, seed)
    tensors = {**model.state_dict(), _BPE_IDS: tokenizer.bpe_ids}
    name = asset_name(resolution)
    return {name: save_tensors(tensors, meta, Path(out_dir) / name)}


_LOADED: dict[int, tuple[dict[str, Tensor], dict[str, str]]] = {}


def load_tiny_clip(resolution: int = 16) -> tuple[Any, CompactTokenizer, Callable[[Image.Image], Tensor]]:
    """(model, tokenizer, preprocess) of the verified tiny CLIP (``CLIPNetwork`` takes them).

    Each call builds a fresh model (eval mode, frozen, on the CPU) from weights read once per process,
    so moving one caller's model to a GPU never affects another's.

    Raises:
        PfbenchError: weights missing (says how to rebuild), checksum mismatch, or wrong format.
    """
    if resolution not in _LOADED:
        tensors, meta, _ = load_tensors(asset_name(resolution), _rebuild_hint(resolution))
        if (
            meta.get("format") != _FORMAT
            or meta.get("resolution") != str(resolution)
            or _BPE_IDS not in tensors
        ):
            raise PfbenchError(
                f"asset {asset_name(resolution)}: unexpected metadata {meta}; "
                f"rebuild with `{_rebuild_hint(resolution)}`"
            )
        _LOADED[resolution] = tensors, meta
    tensors, meta = _LOADED[resolution]
    config = json.loads(meta["config"])
    tokenizer = CompactTokenizer(tensors[_BPE_IDS], config["text_cfg"]["context_length"])
    model = _make_model(config)
    model.load_state_dict({k: v for k, v in tensors.items() if k != _BPE_IDS})
    return model.eval().requires_grad_(False), tokenizer, make_preprocess(config)


def from_context(ctx: FeatureContext) -> CLIPNetwork:
    """Registry builder ("tiny_clip"): the tiny CLIP trained at ``ctx.resolution``."""
    model, tokenizer, preprocess = load_tiny_clip(ctx.resolution)
    return CLIPNetwork(model, tokenizer, preprocess, device=ctx.device, resolution=ctx.resolution,
                       fingerprint={"model": _FORMAT, "resolution": str(ctx.resolution)})  # fmt: skip


if __name__ == "__main__":  # python -m pfbench.encoders.tiny_clip OUT_DIR [RESOLUTION] [SEED]
    import sys

    args = sys.argv[1:]
    for file, sha in build_tiny_clip(args[0], *(int(a) for a in args[1:3])).items():
        print(f"{sha}  {file}")
