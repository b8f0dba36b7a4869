"""Adapter for pfbench's text-to-image networks (docs/protocol.md §3): prompts in ``Cond.text``, per-token t, logvar.

Every PF sampler runs on it unchanged: a sampler passes ``cond`` to every call, the adapter turns its prompts
into text context. The text encoder is frozen and the network's text refiner depends on the prompt only, so each
distinct prompt is encoded and refined **once** and reused by every later call (every step of the sampler, and
both halves of a CFG pair: the empty prompt of the unconditional branch is encoded once for the whole run); this
is exact. ``encoded`` counts the prompts the encoder has run on, which tests check against the number of samples.

Cost: ``gflops(t)`` is one network call (blocks with cross-attention, modulation as executed); ``gflops_once()``
is what each sample pays once, outside the calls: the text encoder and the refiner on its prompt. The sample
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
from pfbench.nets import T2INet, TextContext
from pfbench.nets.flops import executed_conds, t2i_forward_flops, text_flops
from pfbench.types import Cond, ModelOut

CACHE_LIMIT = 8192  # prompts kept encoded; beyond it the cache keeps only the current call's prompts


class TextCache:
    """Refined text context of distinct prompts, computed once each (encoder, then the network's refiner).

    Args:
        encoder: the frozen text encoder.
        net: the network whose ``encode_text`` refines the encoder's tokens.
        limit: prompts kept; when a call brings new prompts beyond it, prompts that call does not use are dropped.
    """

    def __init__(self, encoder: TextEncoder, net: T2INet, limit: int = CACHE_LIMIT) -> None:
        self.encoder, self.net, self.limit = encoder, net, limit
        self.cache: dict[str, TextContext] = {}  # prompt -> its context, batch of one
        self.encoded = 0  # prompts the encoder has run on so far

    @torch.no_grad()
    def __call__(self, prompts: Sequence[str], device: torch.device) -> TextContext:
        """The text context of ``prompts`` (B rows) on ``device``, encoding and refining only unseen prompts."""
        new = [p for p in dict.fromkeys(prompts) if p not in self.cache]
        if new:
            if len(self.cache) + len(new) > self.limit:
                keep = set(prompts)
                self.cache = {p: v for p, v in self.cache.items() if p in keep}
            states, mask = self.encoder.encode(new)  # (N, L, dim), (N, L)
            self.encoded += len(new)
            ctx = self.net.encode_text(states.to(device), mask.to(device))  # (N, 1 + L, D), ...
            self.cache.update({p: ctx.repeat(torch.tensor([i], device=device)) for i, p in enumerate(new)})
        rows = [self.cache[p] for p in prompts]
        return TextContext(torch.cat([r.tokens for r in rows]), torch.cat([r.mask for r in rows]),
                           torch.cat([r.pooled for r in rows]))


class T2IAdapter:
    """Wraps a ``T2INet`` (PF or its global-t baseline) and a text encoder behind the ``Adapter`` protocol.

    Args:
        net: the network (put in eval mode here).
        encoder: the frozen text encoder the network was trained with (same ``dim`` and ``max_len``).
        dedup: compute each sample's modulation once per distinct timestep (exact; docs/protocol.md §2).
    """

    def __init__(self, net: T2INet, encoder: TextEncoder, dedup: bool = True) -> None:
        cfg = net.cfg
        if (encoder.dim, encoder.max_len) != (cfg.text_dim, cfg.text_len):
            raise PfbenchError(f"text encoder {encoder.name!r} gives {encoder.max_len} tokens of width {encoder.dim}, "
                               f"the network was trained on {cfg.text_len} of width {cfg.text_dim}; use the "
                               "encoder it was trained with")
        self.net = net.eval()
        self.encoder = encoder
        self.text = TextCache(encoder, self.net)
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
        context = self.text(cond.text, x.device)  # (B, 1 + L, D) refined tokens, once per distinct prompt
        v, logvar = self.net(x, t, context, dedup=self.dedup)
        return ModelOut(v.float(), None if logvar is None else logvar.float())

    def forwards_per_call(self, t: Tensor) -> int:
        """One network pass per call."""
        return 1

    def gflops(self, t: Tensor) -> float:
        """GFLOPs per sample of one pass at t (B, T): blocks with cross-attention (keys/values projected on every
        call), modulation as executed (with dedup once per distinct timestep); the refined text is reused."""
        rows = executed_conds(t, self.per_token, self.dedup)
        return t2i_forward_flops(self.net.cfg, rows, include_text=False) / 1e9

    def gflops_once(self) -> float:
        """GFLOPs each sample pays once, outside the calls: the text encoder and the refiner on its prompt."""
        return float(self.encoder.gflops_per_prompt) + text_flops(self.net.cfg) / 1e9


def t2i_adapter(net: T2INet, encoder: TextEncoder, dedup: bool = True) -> T2IAdapter:
    """Registered factory of the ``t2i`` adapter (see ``T2IAdapter``)."""
    return T2IAdapter(net, encoder, dedup)


__all__ = ["CACHE_LIMIT", "T2IAdapter", "TextCache", "t2i_adapter"]
