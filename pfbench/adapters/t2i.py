"""Adapter for pfbench's text-to-image networks (SPEC §2b): prompts in ``Cond.text``, per-token t, logvar.

Every PF sampler runs on it unchanged: a sampler passes ``cond`` to every call, the adapter turns its prompts
into text tokens. The text encoder is frozen and a prompt's encoding never changes, so each distinct prompt is
encoded **once** and reused by every later call (every step of the sampler, and both halves of a CFG pair: the
empty prompt of the unconditional branch is encoded once for the whole run). ``encoded`` counts the prompts the
encoder has run on, which tests check against the number of samples.

Cost: ``gflops(t)`` is one network call (refiner, blocks with cross-attention, modulation as executed);
``gflops_once()`` is what each sample pays once, outside the calls: the text encoder on its prompt. The sample
stage (``pfbench.sample.generate``) adds it once per sample.

Classifier-free guidance is the ``cfg`` wrapper (``pfbench.adapters.cfg``): its unconditional rows carry the
empty prompt ``""``, which is what text dropout trained (``pfbench.train``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from pfbench import PfbenchError
from pfbench.encoders.text import TextEncoder
from pfbench.nets import T2INet, forward_flops
from pfbench.nets.flops import executed_conds
from pfbench.types import Cond, ModelOut

CACHE_LIMIT = 8192  # prompts kept encoded; beyond it the cache keeps only the current call's prompts


class TextCache:
    """Encodings of distinct prompts, computed once each: ``(states (L, dim), mask (L,))`` per prompt string.

    Args:
        encoder: the frozen text encoder.
        limit: prompts kept; when a call brings new prompts beyond it, prompts that call does not use are dropped.
    """

    def __init__(self, encoder: TextEncoder, limit: int = CACHE_LIMIT) -> None:
        self.encoder, self.limit = encoder, limit
        self.cache: dict[str, tuple[Tensor, Tensor]] = {}
        self.encoded = 0  # prompts the encoder has run on so far

    def __call__(self, prompts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Token states (B, L, dim) float32 and mask (B, L) bool of ``prompts``, encoding only unseen ones."""
        new = [p for p in dict.fromkeys(prompts) if p not in self.cache]
        if new:
            if len(self.cache) + len(new) > self.limit:
                keep = set(prompts)
                self.cache = {p: v for p, v in self.cache.items() if p in keep}
            with torch.no_grad():
                states, mask = self.encoder.encode(new)  # (N, L, dim), (N, L)
            self.encoded += len(new)
            self.cache.update({p: (states[i], mask[i]) for i, p in enumerate(new)})
        rows = [self.cache[p] for p in prompts]
        return torch.stack([r[0] for r in rows]), torch.stack([r[1] for r in rows])


class T2IAdapter:
    """Wraps a ``T2INet`` (PF or its global-t baseline) and a text encoder behind the ``Adapter`` protocol.

    Args:
        net: the network (put in eval mode here).
        encoder: the frozen text encoder the network was trained with (same ``dim`` and ``max_len``).
        dedup: compute each sample's modulation once per distinct timestep (exact; SPEC §2).
    """

    def __init__(self, net: T2INet, encoder: TextEncoder, dedup: bool = True) -> None:
        cfg = net.cfg
        if (encoder.dim, encoder.max_len) != (cfg.text_dim, cfg.text_len):
            raise PfbenchError(f"text encoder {encoder.name!r} gives {encoder.max_len} tokens of width {encoder.dim}, "
                               f"the network was trained on {cfg.text_len} of width {cfg.text_dim}; use the "
                               "encoder it was trained with")
        self.net = net.eval()
        self.encoder = encoder
        self.text = TextCache(encoder)
        self.dedup = dedup
        self.patch_size = cfg.patch
        self.num_classes = cfg.num_classes
        self.has_difficulty = cfg.difficulty_head
        self.input_shape = (cfg.in_channels, cfg.input_size, cfg.input_size)  # (C, H, W)
        self.per_token = cfg.per_token_t

    @property
    def encoded(self) -> int:
        """Prompts the text encoder has run on (each distinct prompt once)."""
        return self.text.encoded

    @torch.no_grad()
    def __call__(self, x: Tensor, t: Tensor, cond: Cond) -> ModelOut:
        if cond.text is None:
            raise PfbenchError("a text-to-image model needs prompts (cond.text); give the suite prompts or captions")
        if len(cond.text) != x.shape[0]:
            raise PfbenchError(f"{len(cond.text)} prompts for a batch of {x.shape[0]} images")
        if not self.per_token and not bool((t == t[:, :1]).all()):
            raise PfbenchError(
                "this sampler moves patches at different times, but the model is a global-timestep (SiT) "
                "model; use euler/heun/euler_maruyama for it"
            )
        states, mask = self.text(cond.text)  # (B, L, dim), (B, L)
        dev = x.device
        v, logvar = self.net(x, t, states.to(dev), mask.to(dev), dedup=self.dedup)
        return ModelOut(v.float(), None if logvar is None else logvar.float())

    def forwards_per_call(self, t: Tensor) -> int:
        """One network pass per call."""
        return 1

    def gflops(self, t: Tensor) -> float:
        """GFLOPs per sample of one pass at t (B, T): text refiner, blocks with cross-attention, modulation as
        executed (with dedup once per distinct timestep)."""
        return forward_flops(self.net.cfg, executed_conds(t, self.per_token, self.dedup)) / 1e9

    def gflops_once(self) -> float:
        """GFLOPs each sample pays once, outside the calls: the text encoder on its prompt."""
        return float(self.encoder.gflops_per_prompt)


def t2i_adapter(net: T2INet, encoder: TextEncoder, dedup: bool = True) -> T2IAdapter:
    """Registered factory of the ``t2i`` adapter (see ``T2IAdapter``)."""
    return T2IAdapter(net, encoder, dedup)


__all__ = ["CACHE_LIMIT", "T2IAdapter", "TextCache", "t2i_adapter"]
