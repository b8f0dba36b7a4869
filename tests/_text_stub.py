"""A stand-in text encoder for tests of the text-to-image model side: hashed words -> a seeded embedding table.

It follows ``pfbench.encoders.text.TextEncoder`` (fixed ``max_len`` padding, a valid first token for every prompt,
``""`` included) and counts what it encodes, so tests can check that a sampler runs it once per sample.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from torch import Tensor


class StubTextEncoder:
    """Word-hash embedding encoder: token 0 is a ``<cls>`` state, word j gets row crc32(word) % 63 + 1."""

    name = "stub"

    def __init__(self, dim: int = 8, max_len: int = 6, seed: int = 0) -> None:
        self.dim, self.max_len = dim, max_len
        self.gflops_per_prompt = 0.25
        self.table = torch.randn(64, dim, generator=torch.Generator().manual_seed(seed))  # (64, dim)
        self.calls = 0  # encode() calls
        self.prompts: list[str] = []  # every prompt encoded, in order

    def encode(self, prompts: Sequence[str]) -> tuple[Tensor, Tensor]:
        self.calls += 1
        self.prompts += list(prompts)
        ids = torch.zeros(len(prompts), self.max_len, dtype=torch.int64)
        mask = torch.zeros(len(prompts), self.max_len, dtype=torch.bool)
        for i, p in enumerate(prompts):
            words = p.lower().split()[: self.max_len - 1]
            mask[i, : len(words) + 1] = True
            for j, w in enumerate(words):
                ids[i, j + 1] = zlib.crc32(w.encode()) % 63 + 1
        return self.table[ids] * mask[..., None], mask  # (B, L, dim), (B, L)

    def fingerprint(self) -> dict[str, str]:
        return {"name": self.name, "max_len": str(self.max_len)}


def install_stub(monkeypatch: pytest.MonkeyPatch) -> StubTextEncoder:
    """Makes every text encoder name load one shared stub (the shipped tiny encoder is not needed) and forgets
    the encoder shapes ``TrainSpec.net_config`` cached; returns the stub."""
    import pfbench.encoders.text as text_mod
    from pfbench.train.spec import text_shape

    enc = StubTextEncoder()
    monkeypatch.setattr(text_mod, "load_text_encoder", lambda name, device="cpu", weights=None: enc)
    text_shape.cache_clear()
    return enc


def t2i_checkpoint(path: Path, kind: str = "pf_t2i") -> Path:
    """A random tiny text-to-image network (16x16 RGB, the stub's text shape) saved as a pfbench checkpoint whose
    training config names the ``stub`` text encoder (``install_stub`` makes every name load the stub)."""
    import dataclasses

    from pfbench.nets import T2INet
    from pfbench.nets.presets import t2i_config
    from pfbench.train.checkpoints import save_checkpoint

    cfg = t2i_config("cpu-xs", kind, depth=1, width=32, heads=2, text_dim=8, text_len=6, in_channels=3,
                     input_size=16)
    state = T2INet(cfg).state_dict()
    return save_checkpoint(path, step=0, config={"text": {"encoder": "stub"}}, net_config=dataclasses.asdict(cfg),
                           model=state, ema=state, optimizer=None)
