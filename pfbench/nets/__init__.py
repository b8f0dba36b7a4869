"""Plain ``nn.Module`` networks; no I/O."""

from __future__ import annotations

from pfbench.nets.dit import DiT, DiTConfig
from pfbench.nets.flops import distinct_per_sample, forward_flops
from pfbench.nets.presets import PRESETS, make_net, net_config

__all__ = ["PRESETS", "DiT", "DiTConfig", "distinct_per_sample", "forward_flops", "make_net", "net_config"]
