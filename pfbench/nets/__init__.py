"""Plain ``nn.Module`` networks; no I/O."""

from __future__ import annotations

from typing import Any

from pfbench.nets.dit import DiT, DiTConfig
from pfbench.nets.flops import distinct_per_sample, forward_flops
from pfbench.nets.presets import PRESETS, make_net, net_config
from pfbench.nets.t2i import T2IConfig, T2INet, TextContext


def config_from_dict(d: dict[str, Any]) -> DiTConfig | T2IConfig:
    """A stored network config (a checkpoint's ``net_config``): text-to-image when it has ``text_dim``."""
    return T2IConfig(**d) if "text_dim" in d else DiTConfig(**d)


def build_net(cfg: DiTConfig | T2IConfig) -> DiT | T2INet:
    """A freshly initialised network of either config."""
    return T2INet(cfg) if isinstance(cfg, T2IConfig) else DiT(cfg)


__all__ = [
    "PRESETS", "DiT", "DiTConfig", "T2IConfig", "T2INet", "TextContext", "build_net", "config_from_dict",
    "distinct_per_sample", "forward_flops", "make_net", "net_config",
]
