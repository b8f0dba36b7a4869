"""Sample stage (docs/protocol.md §8): seeds → noise → sampler → uint8 images (shards + manifest: ``pfbench.sample.shards``).

Sample i's label, noise and sampler randomness depend only on ``(seed, i)``: never on batch size,
shard size, start offset, rank or device count. Writing samples to disk (atomic ``.npz`` shards, the
manifest, resume) lives in ``pfbench.sample.shards``, and from many processes (torchrun) in
``pfbench.sample.distributed``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from pfbench import PfbenchError
from pfbench.adapters.base import Adapter, gflops_once
from pfbench.io import content_hash
from pfbench.samplers.base import Sampler
from pfbench.samplers.masks import mix_seed, sample_generator
from pfbench.types import Cond, quantize

__all__ = [
    "Decode",
    "Generated",
    "Prompts",
    "balanced_labels",
    "generate",
    "sample_noise",
    "sampler_keys",
]

Decode = Callable[[Tensor], Tensor]  # model space (B, C, h, w) -> images (B, 3, H, W) in [-1, 1]


def balanced_labels(seed: int, n: int, num_classes: int, start: int = 0) -> Tensor:
    """Balanced class labels for samples start..start+n−1, (n,) int64.

    Samples are cut into blocks of ``num_classes``; block b holds a permutation of all classes seeded
    from (seed, b). So label i depends only on (seed, i), every full block is exactly balanced, and any
    n samples have class counts within one of each other per partial block.
    """
    if num_classes < 1 or n < 0 or start < 0:
        raise PfbenchError(
            f"balanced_labels needs num_classes >= 1, n >= 0, start >= 0; got {num_classes}, {n}, {start}"
        )
    perms: dict[int, Tensor] = {}
    out = torch.empty(n, dtype=torch.int64)
    for j, i in enumerate(range(start, start + n)):
        block = i // num_classes
        if block not in perms:
            perms[block] = torch.randperm(num_classes, generator=sample_generator(seed, "labels", block))
        out[j] = perms[block][i % num_classes]
    return out


def sample_noise(seed: int, indices: Sequence[int] | Tensor, shape: Sequence[int]) -> Tensor:
    """Initial noise for the given sample indices, (len(indices), *shape) float32 on CPU.

    One generator per sample seeded from a hash of (seed, i): sample i's noise depends only on (seed, i).
    """
    idx = indices.tolist() if isinstance(indices, Tensor) else list(indices)
    out = torch.empty(len(idx), *shape, dtype=torch.float32)
    for j, i in enumerate(idx):
        out[j] = torch.randn(*shape, generator=sample_generator(seed, "noise", int(i)), dtype=torch.float32)
    return out


def sampler_keys(seed: int, indices: Sequence[int] | Tensor) -> Tensor:
    """Per-sample keys for sampler randomness (random masks, SDE noise), (len(indices),) int64."""
    idx = indices.tolist() if isinstance(indices, Tensor) else list(indices)
    return torch.tensor([mix_seed(seed, "sampler", int(i)) for i in idx], dtype=torch.int64)


@dataclass(frozen=True)
class Generated:
    """Images of samples start..start+n−1 plus what producing them cost.

    Attributes:
        images: (N, 3, H, W) uint8.
        labels: (N,) int64.
        indices: (N,) int64 global sample indices.
        nfe: model calls per sample (max over batches; equal for all pfbench samplers).
        forwards: network passes per sample (mean).
        gflops: analytic GFLOPs per sample (mean), the model's once-per-sample cost (a text encoder) included.
        seconds: wall time of sampling and decoding.
        prompts: the N prompts (text-to-image), else None.
    """

    images: Tensor
    labels: Tensor
    indices: Tensor
    nfe: int
    forwards: float
    gflops: float
    seconds: float
    prompts: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Prompts:
    """What text-to-image samples are conditioned on: sample i gets ``texts[i % len(texts)]``.

    Attributes:
        texts: the prompt list (held-out captions, a prompt file).
        labels: (len(texts),) int64 class of each prompt (the embedded captions' shapes), or None: balanced labels.
    """

    texts: tuple[str, ...]
    labels: Tensor | None = None

    def __post_init__(self) -> None:
        if not self.texts:
            raise PfbenchError("text-to-image sampling needs at least one prompt")
        if self.labels is not None and self.labels.shape != (len(self.texts),):
            raise PfbenchError(f"{len(self.texts)} prompts but labels of shape {tuple(self.labels.shape)}")

    def id(self) -> str:
        """Content hash of the prompt list and labels (16 hex digits): part of a text-to-image run's identity."""
        labels = None if self.labels is None else self.labels.tolist()
        return content_hash([list(self.texts), labels])[:16]

    def take(self, indices: Tensor) -> tuple[tuple[str, ...], Tensor | None]:
        """Prompts (and labels, or None) of sample indices (N,): depend on the index only."""
        rows = (indices % len(self.texts)).tolist()
        labels = None if self.labels is None else self.labels[rows]
        return tuple(self.texts[r] for r in rows), labels


def generate(
    model: Adapter,
    sampler: Sampler,
    *,
    n: int,
    seed: int,
    batch_size: int,
    start: int = 0,
    progress: bool = False,
    decode: Decode | None = None,
    shape: tuple[int, int, int] | None = None,
    device: torch.device | str = "cpu",
    prompts: Prompts | None = None,
) -> Generated:
    """Samples n images with indices start..start+n−1.

    Args:
        model: adapter (possibly CFG-wrapped).
        sampler: a configured sampler.
        n: number of samples.
        seed: run seed; sample i depends only on (seed, i).
        batch_size: samples per sampler call (does not change the images).
        start: index of the first sample.
        progress: show a progress bar.
        decode: optional model space -> [-1, 1] image decoder (e.g. a VAE); None for pixel models.
        shape: (C, H, W) of the noise; default ``model.input_shape``.
        device: where noise and labels go.
        prompts: text-to-image prompts (``Cond.text``); sample i's prompt and label depend only on i.
    """
    if n < 0 or batch_size < 1 or start < 0:
        raise PfbenchError(
            f"generate needs n >= 0, batch_size >= 1, start >= 0; got {n}, {batch_size}, {start}"
        )
    shape = shape or model.input_shape
    labels = balanced_labels(seed, n, model.num_classes, start)
    indices = torch.arange(start, start + n, dtype=torch.int64)
    texts: tuple[str, ...] | None = None
    if prompts is not None:
        texts, prompt_labels = prompts.take(indices)
        labels = labels if prompt_labels is None else prompt_labels
    once = gflops_once(model)  # per sample, outside the calls (a text encoder runs once per prompt)
    chunks: list[Tensor] = []
    nfe, forwards, gflops = 0, 0.0, 0.0
    began = time.perf_counter()
    bounds = list(range(0, n, batch_size))
    for lo in _track(bounds, progress, f"sampling {n}"):
        idx = indices[lo : lo + batch_size]
        noise = sample_noise(seed, idx, shape).to(device)
        cond = Cond(y=labels[lo : lo + batch_size].to(device),
                    text=None if texts is None else texts[lo : lo + batch_size])
        with torch.no_grad():
            out = sampler(model, noise, cond, sampler_keys(seed, idx))
            x = out.x if decode is None else decode(out.x)
        chunks.append(quantize(x).cpu())
        nfe = max(nfe, out.nfe)
        forwards += out.forwards * len(idx)
        gflops += (out.gflops + once) * len(idx)
    seconds = time.perf_counter() - began
    images = torch.cat(chunks) if chunks else torch.empty(0, 3, *shape[1:], dtype=torch.uint8)
    return Generated(images, labels, indices, nfe, forwards / max(n, 1), gflops / max(n, 1), seconds, texts)


def _track(items: list[int], progress: bool, what: str) -> Iterator[int]:
    if not progress:
        yield from items
        return
    from rich.progress import track

    yield from track(items, description=what)
