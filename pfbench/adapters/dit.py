"""Adapters for pfbench's own DiT/SiT networks: PF (per-token t) and the global-timestep baseline."""

from __future__ import annotations

import torch
from torch import Tensor

from pfbench import PfbenchError
from pfbench.nets import DiT, T2INet, forward_flops
from pfbench.nets.flops import executed_conds
from pfbench.types import Cond, ModelOut


class DiTAdapter:
    """Wraps a ``DiT`` network (PF or SiT) behind the ``Adapter`` protocol.

    Args:
        net: the network (put in eval mode by the caller or here).
        dedup: compute each sample's modulation once per distinct timestep (exact; docs/protocol.md §2).
    """

    def __init__(self, net: DiT, dedup: bool = True) -> None:
        if isinstance(net, T2INet):
            raise PfbenchError("this checkpoint is a text-to-image network: it samples from prompts through the "
                               "'t2i' adapter; sample it with `pfbench sample CKPT OUT --prompt TEXT` or in a suite "
                               "(see suites/t2i_smoke.yaml, `prompts:`)")
        self.net = net.eval()
        self.dedup = dedup
        self.patch_size = net.cfg.patch
        self.num_classes = net.cfg.num_classes
        self.has_difficulty = net.cfg.difficulty_head
        self.input_shape = (net.cfg.in_channels, net.cfg.input_size, net.cfg.input_size)  # (C, H, W)
        self.per_token = net.cfg.per_token_t

    @torch.no_grad()
    def __call__(self, x: Tensor, t: Tensor, cond: Cond) -> ModelOut:
        if not self.per_token and not bool((t == t[:, :1]).all()):
            raise PfbenchError(
                "this sampler moves patches at different times, but the model is a global-timestep (SiT) "
                "model; use euler/heun/euler_maruyama for it"
            )
        v, logvar = self.net(x, t, cond.y, dedup=self.dedup)
        return ModelOut(v.float(), None if logvar is None else logvar.float())

    def forwards_per_call(self, t: Tensor) -> int:
        """One network pass per call."""
        return 1

    def gflops(self, t: Tensor) -> float:
        """GFLOPs per sample of one pass at t (B, T); with dedup, modulation once per distinct timestep."""
        return forward_flops(self.net.cfg, executed_conds(t, self.per_token, self.dedup)) / 1e9
