"""Analytic forward FLOPs of the DiT/SiT network (multiply-add = 2 FLOPs, matmuls only).

Counts what ``torch.utils.flop_counter`` counts (linear/conv/attention matmuls), with the modulation
counted as executed: ``conds_per_sample`` conditioning rows per sample (1 for a global timestep or a
deduplicated constant row, the number of distinct timesteps with dedup, T for the naive per-token path).
"""

from __future__ import annotations

from torch import Tensor

from pfbench.nets.base import FREQ_DIM
from pfbench.nets.dit import DiTConfig
from pfbench.nets.t2i import T2IConfig


def forward_flops(cfg: DiTConfig | T2IConfig, conds_per_sample: float = 1.0, include_repa: bool = False) -> float:
    """FLOPs per sample of one forward pass.

    Args:
        cfg: network config (a text-to-image config is counted by ``t2i_forward_flops``).
        conds_per_sample: conditioning rows computed per sample (see module docstring).
        include_repa: count the REPA projector (training only; samplers never run it).
    """
    if isinstance(cfg, T2IConfig):
        return t2i_forward_flops(cfg, conds_per_sample)
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


def text_flops(cfg: T2IConfig) -> float:
    """FLOPs per sample of the text path (input projection, refiner blocks, pooling) at the padded text length."""
    d, m = cfg.width, cfg.context_len
    hidden = int(d * cfg.mlp_ratio)
    total = 2.0 * cfg.text_len * cfg.text_dim * d  # input projection (the register token is a parameter)
    per_block = 2.0 * m * d * 3 * d + 2.0 * 2 * m * m * d + 2.0 * m * d * d + 2.0 * 2 * m * d * hidden
    return total + cfg.refiner_depth * per_block + 2.0 * d * d  # + pooling linear


def t2i_forward_flops(cfg: T2IConfig, conds_per_sample: float = 1.0, include_text: bool = True) -> float:
    """FLOPs per sample of one text-to-image forward: text path, blocks with cross-attention, final layer.

    Cross-attention attends to every one of the ``context_len`` padded text positions (masked keys are computed
    too), and its keys/values are projected in every block on every call. ``include_text=False`` leaves out the
    text path (``text_flops``), for a caller that refines each prompt once and reuses it over its calls. The text
    encoder is never counted here: it runs once per sample, not per call (``pfbench.adapters.t2i``).
    """
    d, n, p, m = cfg.width, cfg.tokens, cfg.patch, cfg.context_len
    hidden = int(d * cfg.mlp_ratio)
    cond = conds_per_sample
    total = 2.0 * n * (cfg.in_channels * p * p) * d + (text_flops(cfg) if include_text else 0.0)
    total += 2.0 * cond * (FREQ_DIM * d + d * d)  # timestep MLP (the pooled text is added, not multiplied)
    per_block = (
        2.0 * cond * d * 9 * d  # adaLN modulation (9 per block)
        + 2.0 * n * d * 3 * d + 2.0 * 2 * n * n * d + 2.0 * n * d * d  # self-attention
        + 2.0 * n * d * d + 2.0 * m * d * 2 * d + 2.0 * 2 * n * m * d + 2.0 * n * d * d  # cross-attention
        + 2.0 * 2 * n * d * hidden  # MLP
    )
    total += cfg.depth * per_block
    return total + 2.0 * cond * d * 2 * d + 2.0 * n * d * p * p * cfg.out_channels  # final layer


def train_flops(cfg: DiTConfig | T2IConfig) -> float:
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


def executed_conds(t: Tensor, per_token_t: bool, dedup: bool) -> float:
    """Conditioning rows per sample a forward at timesteps t (B, T) computes: 1 for a global-t network, the
    distinct timesteps per sample with dedup, T without (what adapters pass to ``forward_flops``)."""
    if not per_token_t:
        return 1.0
    return distinct_per_sample(t) if dedup else float(t.shape[1])
