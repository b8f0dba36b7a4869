"""Attribute judge of the embedded default (text-to-image): what an image shows, per caption attribute.

The "embedded_attrs" feature network returns, for uint8 images (B, 3, R, R), logits per attribute of
``pfbench.data.captions.ATTRIBUTES``: ``class`` from the embedded classifier (``pfbench.encoders.embedded``, the
network behind ``class_acc``), and colour, texture, size, position, background colour and background kind from
``AttrNet``, a small CNN trained by pfbench on the embedded train split with the attributes its captions name
(deterministic on one CPU thread, ~2 CPU-minutes, shipped checksummed as ``embedded_attrs_r16.safetensors``).
Held-out accuracies are stored with the weights; texture, size and position are the least sure (at 16×16 a 1-px
checker equals 2-px diagonal stripes, and the size and position words switch at sub-pixel thresholds).

``AttrNet``: ``[conv3×3 3→w] [conv3×3 s2 w→2w] [conv3×3 s2 2w→4w]``, each with ReLU (no normalisation: the
absolute colour is what it judges), then the (4w, R/4, R/4) map flattened (not pooled: position and size need
where things are) → linear 128 → ReLU → one linear head per attribute.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pfbench import PfbenchError
from pfbench.assets import load_tensors, save_tensors
from pfbench.data.captions import ATTRIBUTES, attribute_targets
from pfbench.data.embedded import EmbeddedSpec, generate
from pfbench.encoders.base import FeatureContext, check_images, deterministic
from pfbench.encoders.embedded import EmbeddedFeatures, to_input
from pfbench.types import quantize

_FORMAT = "pfbench-embedded-attrs-v1"
HEADS = tuple(a for a in ATTRIBUTES if a != "class")  # the class comes from the embedded classifier
_WIDTH = 16
_TRAIN_SIZE = 65_536  # fresh images and more epochs help texture, size and position most
_EPOCHS = 12
_BATCH = 128
_LR = 3e-3
_TEST_SIZE = 5_000


def asset_name(resolution: int) -> str:
    """File name of the attribute network for ``resolution``."""
    return f"embedded_attrs_r{resolution}.safetensors"


def _rebuild_hint(resolution: int) -> str:
    return f"pfbench assets build --resolution {resolution}"


class AttrNet(nn.Module):
    """Small CNN with one head per non-class caption attribute.

    Args:
        resolution: image side (the flattened map has ``4·width·(resolution/4)²`` entries).
        width: channels of the first conv.
    """

    def __init__(self, resolution: int, width: int = _WIDTH) -> None:
        super().__init__()
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(3, w, 3, 1, 1), nn.ReLU(), nn.Conv2d(w, 2 * w, 3, 2, 1), nn.ReLU(),
            nn.Conv2d(2 * w, 4 * w, 3, 2, 1), nn.ReLU(), nn.Flatten(),
            nn.Linear(4 * w * (resolution // 4) ** 2, 128), nn.ReLU(),
        )  # fmt: skip
        self.heads = nn.ModuleDict({a: nn.Linear(128, len(ATTRIBUTES[a])) for a in HEADS})

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """x (B, 3, R, R) float in [-1, 1] → {attribute: logits (B, K)}."""
        h = self.body(x)  # (B, 128)
        return {a: head(h) for a, head in self.heads.items()}


@torch.no_grad()
def _accuracy(net: AttrNet, resolution: int, size: int) -> dict[str, float]:
    test = generate(EmbeddedSpec(resolution=resolution, split="test", size=size, seed=0))
    logits = net(to_input(quantize(test.images)))
    y = attribute_targets(test.captions)
    return {f"test_acc_{a}": float((logits[a].argmax(1) == y[a]).float().mean()) for a in HEADS}


def train_attr_net(resolution: int = 16, seed: int = 0, *, train_size: int = _TRAIN_SIZE,
                   epochs: int = _EPOCHS) -> tuple[AttrNet, dict[str, str]]:  # fmt: skip
    """Trains ``AttrNet`` on the embedded train split (data seed 0), deterministically on one CPU thread.

    Returns:
        (network in eval mode, metadata with held-out per-attribute test accuracies).
    """
    with deterministic(threads=1), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        data = generate(EmbeddedSpec(resolution=resolution, split="train", size=train_size, seed=0))
        x = to_input(quantize(data.images))  # (N, 3, R, R): exactly what the judge sees
        y = attribute_targets(data.captions)
        net = AttrNet(resolution)
        gen = torch.Generator().manual_seed(seed)
        steps = train_size // _BATCH
        opt = torch.optim.AdamW(net.parameters(), lr=_LR, weight_decay=0.01)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, _LR, total_steps=epochs * steps, pct_start=0.1)
        net.train()
        for _ in range(epochs):
            perm = torch.randperm(train_size, generator=gen)
            for i in range(steps):
                idx = perm[i * _BATCH : (i + 1) * _BATCH]
                out = net(x[idx])
                loss = sum(F.cross_entropy(out[a], y[a][idx]) for a in HEADS)
                opt.zero_grad(set_to_none=True)
                loss.backward()  # type: ignore[union-attr]
                opt.step()
                sched.step()
        net.eval().requires_grad_(False)
        acc = _accuracy(net, resolution, _TEST_SIZE)
    meta = {
        "format": _FORMAT,
        "resolution": str(resolution),
        "config": json.dumps({"width": _WIDTH, "heads": list(HEADS)}),
        "seed": str(seed),
        "train": f"{train_size} train images x {epochs} epochs, batch {_BATCH}, AdamW {_LR} one-cycle; labels "
        "parsed from the captions",
        **{k: f"{v:.4f}" for k, v in acc.items()},
    }
    return net, meta


def build_attr_net(out_dir: str | Path, resolution: int = 16, seed: int = 0) -> dict[str, str]:
    """Trains ``AttrNet`` and writes ``embedded_attrs_r{resolution}.safetensors``; returns {name: sha256}."""
    net, meta = train_attr_net(resolution, seed)
    name = asset_name(resolution)
    return {name: save_tensors(net.state_dict(), meta, Path(out_dir) / name)}


def load_attr_net(resolution: int = 16) -> tuple[AttrNet, str]:
    """(verified ``AttrNet`` in eval mode on the CPU, its sha256)."""
    tensors, meta, sha = load_tensors(asset_name(resolution), _rebuild_hint(resolution))
    if meta.get("format") != _FORMAT or meta.get("resolution") != str(resolution):
        raise PfbenchError(f"asset {asset_name(resolution)}: unexpected metadata {meta}; "
                           f"rebuild with `{_rebuild_hint(resolution)}`")  # fmt: skip
    net = AttrNet(resolution, json.loads(meta["config"])["width"])
    net.load_state_dict(tensors)
    return net.eval().requires_grad_(False), sha


class AttributeJudge:
    """The "embedded_attrs" feature network: ``{attribute: logits (B, K)}`` for every caption attribute."""

    def __init__(self, resolution: int, device: str | torch.device = "cpu") -> None:
        self.resolution = resolution
        self.device = torch.device(device)
        self.classifier = EmbeddedFeatures(resolution, device=device)  # class logits, as class_acc reads them
        net, self.sha256 = load_attr_net(resolution)
        self.net = net.to(self.device)
        self.keys: tuple[str, ...] = tuple(ATTRIBUTES)

    def fingerprint(self) -> dict[str, str]:
        return {"extractor": "embedded attributes", "attrs_sha256": self.sha256,
                "classifier_sha256": self.classifier.net.asset_sha256, "resolution": str(self.resolution)}  # fmt: skip

    @torch.no_grad()
    def __call__(self, images: Tensor) -> dict[str, Tensor]:
        """uint8 (B, 3, R, R) → {attribute: logits (B, K) float32 on the CPU}."""
        check_images(images, "embedded_attrs", self.resolution)
        logits = self.net(to_input(images.to(self.device)))  # {attribute: (B, K)}
        return {"class": self.classifier(images)["logits"], **{a: v.float().cpu() for a, v in logits.items()}}


def from_context(ctx: FeatureContext) -> AttributeJudge:
    """Registry builder ("embedded_attrs") at ``ctx.resolution``."""
    return AttributeJudge(ctx.resolution, ctx.device)


if __name__ == "__main__":  # python -m pfbench.encoders.attributes OUT_DIR [RESOLUTION] [SEED]
    import sys

    args = sys.argv[1:]
    for file, sha in build_attr_net(args[0], *(int(a) for a in args[1:3])).items():
        print(f"{sha}  {file}")
