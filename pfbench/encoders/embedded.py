"""The embedded feature network (docs/protocol.md §9): a small CNN trained by pfbench on the embedded dataset.

No downloads: the network's weights ship in ``pfbench/assets`` (``embedded_net_r16.safetensors``,
checksummed) and can be rebuilt on CPU with ``build_assets`` (`pfbench assets build`), bit-identically
on the same torch build and CPU instruction set. Its pooled features give the embedded metrics'
``fd_embedded`` (a Fréchet distance — never call it FID) and precision/recall, its softmax ``is_embedded``
and ``class_acc`` (``pfbench.metrics.embedded``); its last conv block is a REPA target
(``pfbench.train.repa``). GroupNorm (no batch statistics) keeps every image's features independent of
what else is in its batch.

Network (``FeatureNet``, width w = 32, input (B, 3, R, R) in [-1, 1]):
``[conv3×3 3→w] [conv3×3 s2 w→2w] [conv3×3 s2 2w→4w] [conv3×3 4w→4w]`` each followed by
GroupNorm(8) + ReLU, then global average pooling → 128-d "pool" features → linear → 10 logits.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pfbench import PfbenchError
from pfbench.assets import load_tensors, save_tensors
from pfbench.data.embedded import NUM_CLASSES, EmbeddedSpec, generate
from pfbench.encoders.base import FeatureContext, check_images, deterministic
from pfbench.types import quantize

_FORMAT = "pfbench-embedded-net-v1"
_WIDTH = 32
_TRAIN_SIZE = 32_768  # train-split images (data seed 0); fresh images beat more epochs
_EPOCHS = 3
_BATCH = 128
_LR = 3e-3
_TEST_SIZE = 10_000  # held-out test-split images for the accuracy stored with the weights


def asset_name(resolution: int) -> str:
    """File name of the feature network for ``resolution``."""
    return f"embedded_net_r{resolution}.safetensors"


def _rebuild_hint(resolution: int) -> str:
    return f"pfbench assets build --resolution {resolution}"


def to_input(images: Tensor) -> Tensor:
    """uint8 (B, 3, H, W) → float32 network input in [-1, 1]."""
    return images.float() / 127.5 - 1.0


def _block(c_in: int, c_out: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.GroupNorm(8, c_out), nn.ReLU()]


class FeatureNet(nn.Module):
    """Small CNN classifier whose pooled activations are the embedded metrics' features.

    Args:
        num_classes: number of logits.
        width: channels of the first block; features have ``4·width`` dims.
    """

    def __init__(self, num_classes: int = NUM_CLASSES, width: int = _WIDTH) -> None:
        super().__init__()
        w = width
        self.body = nn.Sequential(
            *_block(3, w, 1), *_block(w, 2 * w, 2), *_block(2 * w, 4 * w, 2), *_block(4 * w, 4 * w, 1)
        )
        self.head = nn.Linear(4 * w, num_classes)
        self.feat_dim = 4 * w
        self.resolution: int | None = None  # set by the loader: the resolution it was trained at
        self.asset_sha256 = ""  # set by the loader: identifies the weights in cache keys

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x (B, 3, R, R) float in [-1, 1] → (features (B, 4w), logits (B, num_classes))."""
        h = self.body(x)  # (B, 4w, R/4, R/4)
        feats = h.mean(dim=(2, 3))  # (B, 4w)
        return feats, self.head(feats)


@torch.no_grad()
def _accuracy(net: FeatureNet, x: Tensor, y: Tensor) -> float:
    net.eval()
    correct = sum(
        int((net(x[i : i + 1000])[1].argmax(1) == y[i : i + 1000]).sum()) for i in range(0, len(x), 1000)
    )
    net.train()
    return correct / len(x)


def train_feature_net(resolution: int = 16, seed: int = 0) -> tuple[FeatureNet, dict[str, str]]:
    """Trains the feature network on the embedded train split, deterministically on CPU.

    One thread and ``torch.use_deterministic_algorithms(True)``, so two builds on the same
    software stack and CPU give identical weights whatever the machine's core count.

    Args:
        resolution: image side the network is trained at.
        seed: seeds initialisation and the minibatch order (the data is always data seed 0).

    Returns:
        (network in eval mode, metadata with the held-out test accuracy).
    """
    with deterministic(threads=1), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = FeatureNet()
        data = generate(EmbeddedSpec(resolution=resolution, split="train", size=_TRAIN_SIZE, seed=0))
        x, y = to_input(quantize(data.images)), data.labels  # train on what metrics will see
        gen = torch.Generator().manual_seed(seed)
        steps_per_epoch = _TRAIN_SIZE // _BATCH
        opt = torch.optim.AdamW(net.parameters(), lr=_LR, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, _LR, total_steps=_EPOCHS * steps_per_epoch, pct_start=0.15
        )
        for _ in range(_EPOCHS):
            perm = torch.randperm(_TRAIN_SIZE, generator=gen)
            for i in range(steps_per_epoch):
                idx = perm[i * _BATCH : (i + 1) * _BATCH]
                loss = F.cross_entropy(net(x[idx])[1], y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
        test = generate(EmbeddedSpec(resolution=resolution, split="test", size=_TEST_SIZE, seed=0))
        acc = _accuracy(net, to_input(quantize(test.images)), test.labels)
    net.eval().requires_grad_(False)
    meta = {
        "format": _FORMAT,
        "resolution": str(resolution),
        "width": str(_WIDTH),
        "num_classes": str(NUM_CLASSES),
        "seed": str(seed),
        "train": f"{_TRAIN_SIZE} train images x {_EPOCHS} epochs, batch {_BATCH}, AdamW {_LR} one-cycle",
        "test_acc": f"{acc:.4f}",
    }
    net.resolution = resolution
    return net, meta


def build_assets(out_dir: str | Path, resolution: int = 16, seed: int = 0) -> dict[str, str]:
    """Trains the embedded feature network and writes it to ``out_dir`` (atomic, with a sidecar).

    Args:
        out_dir: directory to write into (the package's ``pfbench/assets`` to refresh the shipped
            file, or ``<cache root>/assets`` — where the loader also looks).
        resolution: image side.
        seed: training seed.

    Returns:
        ``{file name: sha256}`` of the files written (put it in ``pfbench.assets.CHECKSUMS`` when
        refreshing a shipped file).
    """
    net, meta = train_feature_net(resolution, seed)
    name = asset_name(resolution)
    sha = save_tensors(net.state_dict(), meta, Path(out_dir) / name)
    return {name: sha}


_NETS: dict[int, FeatureNet] = {}


def load_feature_net(resolution: int = 16) -> FeatureNet:
    """The verified feature network for ``resolution`` (eval mode, frozen, cached per process).

    Raises:
        PfbenchError: weights missing (says how to rebuild), checksum mismatch, or wrong format.
    """
    if resolution in _NETS:
        return _NETS[resolution]
    name = asset_name(resolution)
    tensors, meta, sha = load_tensors(name, _rebuild_hint(resolution))
    if meta.get("format") != _FORMAT or meta.get("resolution") != str(resolution):
        raise PfbenchError(
            f"asset {name}: unexpected metadata {meta}; rebuild with `{_rebuild_hint(resolution)}`"
        )
    net = FeatureNet(int(meta["num_classes"]), int(meta["width"]))
    net.load_state_dict(tensors)
    net.eval().requires_grad_(False)
    net.resolution = resolution
    net.asset_sha256 = sha
    _NETS[resolution] = net
    return net


class EmbeddedFeatures:
    """The feature network as a ``FeatureExtractor``: ``{"pool": (B, 4w), "logits": (B, K)}`` float32 on the CPU.

    Args:
        resolution: image side; selects the shipped network trained at it.
        device: where the network runs (a private copy; the process-wide CPU network stays put).
        max_batch: images per forward pass (the features do not depend on it: GroupNorm, no batch statistics).
    """

    keys: tuple[str, ...] = ("pool", "logits")

    def __init__(self, resolution: int, *, device: str | torch.device = "cpu", max_batch: int = 1000) -> None:
        net = load_feature_net(resolution)
        self.net = net if torch.device(device).type == "cpu" else copy.deepcopy(net).to(device)
        self.resolution, self.device, self.max_batch = resolution, torch.device(device), max_batch

    def fingerprint(self) -> dict[str, str]:
        return {"extractor": f"pfbench embedded {_FORMAT} r{self.resolution}", "weights_sha256": self.net.asset_sha256}

    @torch.inference_mode()
    def __call__(self, images: Tensor) -> dict[str, Tensor]:
        """uint8 (B, 3, R, R) → pool (B, 4w) and logits (B, K), float32 on the CPU."""
        check_images(images, "embedded network", self.resolution)
        parts = [self.net(to_input(images[i : i + self.max_batch].to(self.device)))
                 for i in range(0, images.shape[0], self.max_batch)]  # fmt: skip
        if not parts:
            return {"pool": torch.zeros(0, self.net.feat_dim), "logits": torch.zeros(0, self.net.head.out_features)}
        return {"pool": torch.cat([f for f, _ in parts]).float().cpu(),
                "logits": torch.cat([lg for _, lg in parts]).float().cpu()}  # fmt: skip


def from_context(ctx: FeatureContext) -> EmbeddedFeatures:
    """Registry builder ("embedded"): the network trained at ``ctx.resolution``."""
    return EmbeddedFeatures(ctx.resolution, device=ctx.device, max_batch=ctx.batch_size)
