"""Named network sizes (SPEC §2) and the CPU-sized configs of the embedded default."""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

from pfbench import PfbenchError
from pfbench.nets.dit import DiT, DiTConfig

# (depth, width, heads); ImageNet-256 latents: 4×32×32, patch 2 -> 256 tokens.
_PAPER = {"S/2": (12, 384, 6), "B/2": (12, 768, 12), "L/2": (24, 1024, 16), "XL/2": (28, 1152, 16)}
# Embedded default: RGB pixels, 10 classes; 16×16 at patch 2 -> 64 tokens (32×32 -> 256 tokens).
_CPU = {"cpu-xs": (4, 64, 4), "cpu-s": (6, 128, 4), "cpu-m": (8, 192, 6)}

PRESETS: dict[str, DiTConfig] = {
    **{k: DiTConfig(depth=d, width=w, heads=h) for k, (d, w, h) in _PAPER.items()},
    **{
        k: DiTConfig(input_size=16, in_channels=3, num_classes=10, depth=d, width=w, heads=h)
        for k, (d, w, h) in _CPU.items()
    },
}


def net_config(preset: str, kind: str = "pf", **overrides: Any) -> DiTConfig:
    """Resolves a preset name plus field overrides into a config.

    Args:
        preset: one of ``PRESETS``.
        kind: ``"pf"`` (per-token t + difficulty head) or ``"sit"`` (global t, no extra channel).
        **overrides: ``DiTConfig`` fields, e.g. ``input_size=32``; unknown names are errors.
    """
    if preset not in PRESETS:
        close = difflib.get_close_matches(preset, list(PRESETS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise PfbenchError(f"unknown network preset {preset!r}{hint} (known: {', '.join(PRESETS)})")
    if kind not in ("pf", "sit"):
        raise PfbenchError(f"unknown model kind {kind!r}; use 'pf' or 'sit'")
    fields = {f.name for f in dataclasses.fields(DiTConfig)}
    for key in overrides:
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise PfbenchError(f"unknown network field {key!r}{hint}")
    pf = kind == "pf"
    base = dataclasses.replace(PRESETS[preset], per_token_t=pf, difficulty_head=pf)
    return dataclasses.replace(base, **overrides)


def make_net(preset: str, kind: str = "pf", **overrides: Any) -> DiT:
    """Builds a freshly initialised network from a preset (see ``net_config``)."""
    return DiT(net_config(preset, kind, **overrides))
