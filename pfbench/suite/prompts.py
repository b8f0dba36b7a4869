"""What a suite's text-to-image models are conditioned on, and the shuffled-prompt baseline of their scores.

Prompts: on the embedded default, the held-out (test) split's captions with their shapes as labels, so class
accuracy and the caption-attribute metrics judge each image against what its prompt asked for; for real data, a
prompt file (``SuiteSpec.prompts``). Sample i of every cell gets prompt i mod len.

Shuffled baseline: the same images scored against a fixed permutation of their prompts (and labels), for every
metric that reads prompts or labels. A model that follows its prompt scores well above it; one that ignores the
prompt scores the same.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from pfbench import PfbenchError
from pfbench.data.embedded import EmbeddedSpec
from pfbench.data.embedded import generate as embedded_images
from pfbench.nets import T2INet
from pfbench.registry import METRICS
from pfbench.sample.generate import Prompts
from pfbench.samplers.masks import sample_generator
from pfbench.suite.spec import SuiteSpec

SHUFFLED = "_shuffled"  # suffix of the metric keys scored against shuffled prompts


@functools.lru_cache(maxsize=4)
def _embedded_captions(resolution: int, size: int, seed: int, heterogeneity: float) -> tuple[tuple[str, ...], Tensor]:
    test = embedded_images(EmbeddedSpec(resolution=resolution, split="test", size=size, seed=seed,
                                        heterogeneity=heterogeneity))
    return test.captions, test.labels


def suite_prompts(spec: SuiteSpec) -> Prompts:
    """The prompts of a suite's text-to-image cells (see the module docstring).

    Raises:
        PfbenchError: no prompt file for a non-embedded dataset, or an unreadable prompt file.
    """
    if spec.prompts is None:
        d = spec.data
        if d.name != "embedded":
            raise PfbenchError(f"prompts: data.name = {d.name!r} has no built-in captions; give a prompt file "
                               "(prompts: path/to/prompts.txt or .jsonl)")
        texts, labels = _embedded_captions(d.resolution, d.test_size, d.seed, d.heterogeneity)
        return Prompts(texts, labels)
    from pfbench.data.prompts import read_prompts  # the prompt-file reader (txt / JSONL)

    return Prompts(tuple(read_prompts(spec.prompts)))


def prompts_id(prompts: Prompts) -> str:
    """Content hash of the prompt list (and labels): part of a text-to-image cell's key (``Prompts.id``)."""
    return prompts.id()


def cond_metrics(metrics: Sequence[str]) -> list[str]:
    """The metrics whose values depend on the prompts or labels (``Metric.needs`` has text or labels)."""
    return [m for m in metrics if set(getattr(METRICS.get(m), "needs", ())) & {"text", "labels"}]


def shuffle(texts: Sequence[str], labels: Tensor, seed: int) -> tuple[tuple[str, ...], Tensor]:
    """A fixed permutation (seeded by ``seed``) of prompts and labels together, for the shuffled baseline."""
    perm = torch.randperm(len(texts), generator=sample_generator(seed, "shuffled_prompts", 0))
    return tuple(texts[i] for i in perm.tolist()), labels[perm]


class CaptionedNet(nn.Module):
    """A text-to-image network called like a class-conditional one, ``net(x, t, rows)``: row r reads caption r of a
    fixed list (through the frozen text encoder), so the held-out difficulty diagnostics
    (``pfbench.evaluate.diagnostics``) run on it unchanged.

    Args:
        net: the text-to-image network. encoder: its text encoder. captions: the captions rows index.
    """

    def __init__(self, net: T2INet, encoder: Any, captions: Sequence[str]) -> None:
        super().__init__()
        self.net, self.encoder, self.captions = net, encoder, tuple(captions)
        self.cfg = net.cfg

    def forward(self, x: Tensor, t: Tensor, rows: Tensor) -> tuple[Tensor, Tensor | None]:
        states, mask = self.encoder.encode([self.captions[r] for r in rows.tolist()])  # (b, L, dim), (b, L)
        return self.net(x, t, states.to(x.device), mask.to(x.device))  # type: ignore[no-any-return]


__all__ = ["CaptionedNet", "SHUFFLED", "cond_metrics", "prompts_id", "shuffle", "suite_prompts"]
