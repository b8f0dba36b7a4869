"""Named network sizes (docs/protocol.md §2) and the CPU-sized configs of the embedded default."""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

from pfbench import PfbenchError
from pfbench.nets.dit import DiT, DiTConfig
from pfbench.nets.t2i import T2IConfig

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


def _check_fields(cls: type[DiTConfig | T2IConfig], overrides: dict[str, Any]) -> None:
    """Every override names a field of ``cls``; otherwise a one-line error with the nearest field name."""
    fields = [f.name for f in dataclasses.fields(cls)]
    for key in overrides:
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise PfbenchError(f"unknown network field {key!r}{hint}")


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
    _check_fields(DiTConfig, overrides)
    pf = kind == "pf"
    base = dataclasses.replace(PRESETS[preset], per_token_t=pf, difficulty_head=pf)
    return dataclasses.replace(base, **overrides)


T2I_KINDS = ("pf_t2i", "sit_t2i")  # text-to-image PF and its global-timestep baseline (docs/protocol.md §3)


def t2i_config(preset: str, kind: str = "pf_t2i", **overrides: Any) -> T2IConfig:
    """A text-to-image config with a preset's (depth, width, heads) plus ``T2IConfig`` field overrides.

    Args:
        preset: one of ``PRESETS`` (its depth, width and heads; its data-bound fields too, unless overridden).
        kind: ``"pf_t2i"`` (per-token t + difficulty head) or ``"sit_t2i"`` (global t).
        **overrides: ``T2IConfig`` fields, e.g. ``text_dim=64``; unknown names are errors.
    """
    if kind not in T2I_KINDS:
        raise PfbenchError(f"unknown text-to-image kind {kind!r}; use {' or '.join(map(repr, T2I_KINDS))}")
    base = net_config(preset, "pf")  # validates the preset name
    _check_fields(T2IConfig, overrides)
    pf = kind == "pf_t2i"
    same = {f: getattr(base, f) for f in ("input_size", "in_channels", "patch", "depth", "width", "heads",
                                           "mlp_ratio", "num_classes")}
    return T2IConfig(**{**same, "per_token_t": pf, "difficulty_head": pf, **overrides})


def make_net(preset: str, kind: str = "pf", **overrides: Any) -> DiT:
    """Builds a freshly initialised network from a preset (see ``net_config``)."""
    return DiT(net_config(preset, kind, **overrides))
