"""DiT/SiT transformer with per-token (Patch Forcing) or global timestep conditioning (docs/protocol.md §2).

One network class serves both models:
- ``per_token_t=True`` (PF): every token carries its own timestep; every adaLN modulation is per token,
  (B, T, 6D). With ``difficulty_head=True`` the final layer emits one extra channel, ``logvar``.
- ``per_token_t=False`` (SiT baseline): one timestep per sample, modulation (B, 6D).

Exact inference speed-up: modulation depends on (t_i, y) only, so with ``dedup=True`` it is computed once
per distinct timestep of each sample and gathered back to tokens. Samplers produce 1–3 distinct timesteps
per sample, so this removes almost all of the per-token modulation cost while matching the naive result.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from pfbench import PfbenchError
from pfbench.nets.base import (
    FinalLayer,
    Modulation,
    PatchNet,
    PatchNetConfig,
    attend,
    build_modulation,
    modulate,
    timestep_features,
    timestep_mlp,
)


@dataclass(frozen=True)
class DiTConfig(PatchNetConfig):
    """Architecture of a class-conditional DiT/SiT network; plain data, stored in checkpoints.

    The sizes and PF switches (and their defaults: the S/2 shape on 4×32×32 latents) are ``PatchNetConfig``'s.
    """

    repa_depth: int | None = None
    repa_dim: int = 768
    repa_hidden: int = 2048  # projector MLP width (docs/protocol.md §5: D→2048→2048→D_enc); narrower for CPU-sized nets

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.repa_depth is not None and not 1 <= self.repa_depth <= self.depth:
            raise PfbenchError(f"repa_depth {self.repa_depth} outside 1..depth={self.depth}")


class CondEmbed(nn.Module):
    """c = temb(t) + yemb(y): timestep MLP 256→D→D plus a class table with a null row."""

    def __init__(self, width: int, num_classes: int) -> None:
        super().__init__()
        self.t_mlp = timestep_mlp(width)
        self.y_table = nn.Embedding(num_classes + 1, width)  # index num_classes = null (CFG)

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        return self.t_mlp(timestep_features(t)) + self.y_table(y)  # (N, D)


class Block(nn.Module):
    """adaLN-Zero transformer block: 6 modulations (shift/scale/gate for attention and MLP)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))

    def attention(self, x: Tensor) -> Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)  # (B, T, D) each
        return self.proj(attend(q, k, v, self.heads))

    def forward(self, x: Tensor, m: Tensor) -> Tensor:
        """x (B, T, D); m (B, 1|T, 6D): this block's adaLN modulation, ``Modulation.apply(self.ada)``, computed
        outside, so a compiled block sees two shapes at most however many distinct timesteps dedup finds."""
        shift1, scale1, gate1, shift2, scale2, gate2 = m.chunk(6, dim=-1)  # each (B, 1|T, D)
        x = x + gate1 * self.attention(modulate(self.norm1(x), shift1, scale1))
        x = x + gate2 * self.mlp(modulate(self.norm2(x), shift2, scale2))
        return x


def _run_block(block: nn.Module, h: Tensor, mod: Modulation) -> Tensor:
    """One ``Block`` with its modulation gathered to tokens (inside a checkpointed region: recomputed, not kept)."""
    return block(h, mod.apply(block.ada))  # type: ignore[arg-type,no-any-return]


class DiT(PatchNet):
    """DiT/SiT velocity network; see the module docstring for the PF and SiT variants."""

    cfg: DiTConfig

    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        self._embed_init(cfg)
        d = cfg.width
        self.cond = CondEmbed(d, cfg.num_classes)
        self.blocks = nn.ModuleList(Block(d, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.final = FinalLayer(d, cfg.patch, cfg.out_channels)
        self.projector: nn.Module | None = None
        if cfg.repa_depth is not None:
            self.projector = nn.Sequential(
                nn.Linear(d, cfg.repa_hidden), nn.SiLU(), nn.Linear(cfg.repa_hidden, cfg.repa_hidden), nn.SiLU(),
                nn.Linear(cfg.repa_hidden, cfg.repa_dim),
            )
        # Activation checkpointing of the blocks while gradients are on (training; ``TrainSpec.checkpointing``):
        # their activations are recomputed in the backward pass instead of kept. Same numbers, less memory.
        self.checkpointing = False
        self.reset_parameters()

    def compile_blocks(self) -> None:
        """``torch.compile`` every block in place (regional compilation: one compiled graph, reused by all blocks,
        per input shape). The modulation table (dedup) stays eager: its row count changes from call to call."""
        for block in self.blocks:
            block.compile(dynamic=False)

    def reset_parameters(self) -> None:
        """DiT initialisation (``PatchNet._dit_init``): N(0, .02) class table and timestep MLP."""
        self._dit_init(self.cond.t_mlp, [self.cond.y_table.weight])

    def modulation(self, t: Tensor, y: Tensor, dedup: bool = True) -> Modulation:
        """Builds the conditioning for timesteps t (B, T) and labels y (B,)."""
        return build_modulation(self.cond, t, y, self.cfg.per_token_t, dedup)

    def forward_all(
        self, x: Tensor, t: Tensor, y: Tensor, dedup: bool = True, repa: bool = True
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """Returns (v, logvar, repa_tokens): v (B, C, H, W), logvar (B, 1, H, W) or None, REPA (B, T, D_enc) or None.

        ``repa=False`` skips the projector (sampling: its output is only a training target, and its
        2048-wide MLP would cost more than a small network's blocks); the REPA output is then None.
        """
        cfg = self.cfg
        mod = self.modulation(self.token_times(t, x.shape[0]), y, dedup)
        h = self.embed(x)  # (B, T, D)
        proj = None
        for i, block in enumerate(self.blocks):
            if self.checkpointing and torch.is_grad_enabled():
                h = checkpoint(_run_block, block, h, mod, use_reentrant=False)  # (B, T, D)
            else:
                h = _run_block(block, h, mod)  # (B, T, D)
            if repa and self.projector is not None and i + 1 == cfg.repa_depth:
                proj = self.projector(h)  # (B, T, D_enc)
        v, logvar = self.head(h, mod)  # (B, C, H, W), (B, 1, H, W) | None
        return v, logvar, proj

    def forward(self, x: Tensor, t: Tensor, y: Tensor, *, dedup: bool = True) -> tuple[Tensor, Tensor | None]:
        """Velocity and optional logvar for x (B, C, H, W), t (B, T) or (B,), labels y (B,); never runs the
        REPA projector (what samplers call; ``forward_flops`` counts it the same way)."""
        v, logvar, _ = self.forward_all(x, t, y, dedup, repa=False)
        return v, logvar
