"""Analytic forward FLOPs of the DiT/SiT network (multiply-add = 2 FLOPs, matmuls only).

Counts what ``torch.utils.flop_counter`` counts (linear/conv/attention matmuls), with the modulation
counted as executed: ``conds_per_sample`` conditioning rows per sample (1 for a global timestep or a
deduplicated constant row, the number of distinct timesteps with dedup, T for the naive per-token path).
"""

from __future__ import annotations

from torch import Tensor

from pfbench.nets.dit import FREQ_DIM, DiTConfig


def forward_flops(cfg: DiTConfig, conds_per_sample: float = 1.0, include_repa: bool = False) -> float:
    """FLOPs per sample of one forward pass.

    Args:
        cfg: network config.
        conds_per_sample: conditioning rows computed per sample (see module docstring).
        include_repa: count the REPA projector (training only; samplers never run it).
    """
    d, n, p = cfg.width, cfg.tokens, cfg.patch
    hidden = int(d * cfg.mlp_ratio)
    cond = conds_per_sample
    total = 2.0 * n * (cfg.in_channels * p * p) * d  # patch embedding
    total += 2.0 * cond * (FREQ_DIM * d + d * d)  # timestep MLP
    per_block = (
        2.0 * cond * d * 6 * d  # adaLN modulation
        + 2.0 * n * d * 3 * d  # qkv
        + 2.0 * 2 * n * n * d  # QK^T and attention·V
        + 2.0 * n * d * d  # output projection
        + 2.0 * 2 * n * d * hidden  # MLP
    )
    total += cfg.depth * per_block
    total += 2.0 * cond * d * 2 * d + 2.0 * n * d * p * p * cfg.out_channels  # final layer
    if include_repa and cfg.repa_depth is not None:
        h = cfg.repa_hidden
        total += 2.0 * n * (d * h + h * h + h * cfg.repa_dim)
    return total


def train_flops(cfg: DiTConfig) -> float:
    """Analytic FLOPs per training sample of one optimiser step: forward + backward ≈ 3 × forward.

    Training never deduplicates the modulation: PF draws a distinct t per token, so it computes T conditioning
    rows per sample (a global-t model: 1). The REPA projector counts when the network has one; the frozen REPA
    encoder does not.
    """
    return 3.0 * forward_flops(cfg, float(cfg.tokens) if cfg.per_token_t else 1.0, include_repa=True)


def distinct_per_sample(t: Tensor) -> float:
    """Mean number of distinct timesteps per row of a (B, T) tensor (the dedup conditioning rows)."""
    if t.dim() == 1:
        return 1.0
    s, _ = t.sort(dim=1)
    distinct = 1 + (s[:, 1:] != s[:, :-1]).sum(dim=1)
    return float(distinct.double().mean())
