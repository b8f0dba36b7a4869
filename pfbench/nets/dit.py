"""DiT/SiT transformer with per-token (Patch Forcing) or global timestep conditioning (SPEC §2).

One network class serves both models:
- ``per_token_t=True`` (PF): every token carries its own timestep; every adaLN modulation is per token,
  (B, T, 6D). With ``difficulty_head=True`` the final layer emits one extra channel, ``logvar``.
- ``per_token_t=False`` (SiT baseline): one timestep per sample, modulation (B, 6D).

Exact inference speed-up: modulation depends on (t_i, y) only, so with ``dedup=True`` it is computed once
per distinct timestep of each sample and gathered back to tokens. Samplers produce 1–3 distinct timesteps
per sample, so this removes almost all of the per-token modulation cost while matching the naive result.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from pfbench import PfbenchError

FREQ_DIM = 256  # sinusoidal timestep features (SPEC §2)


@dataclass(frozen=True)
class DiTConfig:
    """Architecture of a DiT/SiT network; plain data, stored in checkpoints."""

    input_size: int = 32
    in_channels: int = 4
    patch: int = 2
    depth: int = 12
    width: int = 384
    heads: int = 6
    mlp_ratio: float = 4.0
    num_classes: int = 1000
    per_token_t: bool = True
    difficulty_head: bool = True
    repa_depth: int | None = None
    repa_dim: int = 768
    repa_hidden: int = 2048  # projector MLP width (SPEC §4: D→2048→2048→D_enc); narrower for CPU-sized nets

    def __post_init__(self) -> None:
        if self.input_size % self.patch:
            raise PfbenchError(f"input_size {self.input_size} is not a multiple of patch {self.patch}")
        if self.width % self.heads:
            raise PfbenchError(f"width {self.width} is not a multiple of heads {self.heads}")
        if self.difficulty_head and not self.per_token_t:
            raise PfbenchError("difficulty_head=True needs per_token_t=True (the PF model)")
        if self.repa_depth is not None and not 1 <= self.repa_depth <= self.depth:
            raise PfbenchError(f"repa_depth {self.repa_depth} outside 1..depth={self.depth}")

    @property
    def grid(self) -> int:
        return self.input_size // self.patch

    @property
    def tokens(self) -> int:
        return self.grid**2

    @property
    def out_channels(self) -> int:
        return self.in_channels + (1 if self.difficulty_head else 0)


def timestep_features(t: Tensor, dim: int = FREQ_DIM, max_period: float = 1e4) -> Tensor:
    """Sinusoidal features of t in [0, 1] (unscaled), (N,) -> (N, dim), computed in float32."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]  # (N, half)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def sincos_pos_embed(width: int, grid: int) -> Tensor:
    """Fixed 2-D sin-cos position embedding, (grid*grid, width), row-major token order."""
    def one_dim(d: int, pos: Tensor) -> Tensor:
        omega = 1.0 / 10000 ** (torch.arange(d // 2, dtype=torch.float64) / (d / 2.0))
        out = pos.reshape(-1)[:, None].double() * omega[None]  # (M, d/2)
        return torch.cat([torch.sin(out), torch.cos(out)], dim=1)

    ys, xs = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    emb = torch.cat([one_dim(width // 2, ys), one_dim(width // 2, xs)], dim=1)
    return emb.float()


class CondEmbed(nn.Module):
    """c = temb(t) + yemb(y): timestep MLP 256→D→D plus a class table with a null row."""

    def __init__(self, width: int, num_classes: int) -> None:
        super().__init__()
        self.t_mlp = nn.Sequential(nn.Linear(FREQ_DIM, width), nn.SiLU(), nn.Linear(width, width))
        self.y_table = nn.Embedding(num_classes + 1, width)  # index num_classes = null (CFG)

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        return self.t_mlp(timestep_features(t)) + self.y_table(y)  # (N, D)


@dataclass
class Modulation:
    """Conditioning vectors plus how they map to tokens.

    ``c`` is (B, D) when each sample has one timestep (broadcast), (B, T, D) for the naive per-token path,
    or (K, D) distinct (sample, t) pairs with ``index`` (B, T) gathering them back to tokens.
    """

    c: Tensor
    index: Tensor | None = None

    def apply(self, layer: nn.Module) -> Tensor:
        """Runs an adaLN linear on the conditioning; returns (B, 1, M) or (B, T, M)."""
        mod = layer(self.c)
        if self.index is not None:
            return mod[self.index]  # (K, M) -> (B, T, M)
        return mod[:, None] if mod.dim() == 2 else mod

    def rows_per_sample(self, batch: int) -> float:
        """How many conditioning rows each sample costs (1 = global, T = naive per-token)."""
        return self.c.shape[0] / batch if self.c.dim() == 2 else float(self.c.shape[1])


def build_modulation(
    cond: Callable[[Tensor, Tensor], Tensor], t: Tensor, y: Tensor, per_token_t: bool, dedup: bool
) -> Modulation:
    """The conditioning rows ``cond(t_values (N,), y_rows (N,)) -> (N, D)`` of timesteps t (B, T), gathered to tokens.

    ``y`` (B,) is whatever ``cond`` reads per sample besides t (class labels for the DiT, sample rows for the
    text-to-image net). A global-t network gets one row per sample; a per-token one gets one row per token
    (``dedup=False``, training) or one per distinct (sample, t) pair (``dedup=True``, exact; SPEC §2).
    """
    b, n = t.shape
    if not per_token_t:
        # One host sync: cheap next to a forward, and it catches a per-patch sampler on a SiT model.
        if not bool((t == t[:, :1]).all()):
            raise PfbenchError("the global-timestep (SiT) network got different timesteps within a sample")
        return Modulation(cond(t[:, 0], y))  # (B, D)
    if not dedup:  # training: LTG times are all distinct, so skip the dedup bookkeeping (and its sync)
        c = cond(t.reshape(-1), y.repeat_interleave(n))  # (B*T, D), every token computed
        return Modulation(c.view(b, n, -1))  # (B, T, D)
    if bool((t == t[:, :1]).all()):
        return Modulation(cond(t[:, 0], y))  # (B, D): one row per sample
    # Distinct timesteps per row via a sort (much cheaper than unique over (row, t) pairs).
    ts, order = t.sort(dim=1)  # (B, T)
    first = torch.ones_like(ts, dtype=torch.bool)
    first[:, 1:] = ts[:, 1:] != ts[:, :-1]  # (B, T): first token of each distinct value
    counts = first.sum(dim=1)  # (B,) distinct values per sample
    offsets = counts.cumsum(0) - counts  # (B,) first row of each sample in the (K, D) table
    ids = first.cumsum(dim=1) - 1 + offsets[:, None]  # (B, T) table row of each sorted token
    index = torch.empty_like(ids).scatter_(1, order, ids)  # (B, T) table row of each token
    rows = torch.repeat_interleave(torch.arange(b, device=t.device), counts)  # (K,)
    c = cond(ts[first], y[rows])  # (K, D): rows in sample order, values ascending
    return Modulation(c, index)


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return x * (1 + scale) + shift


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
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (B, heads, T, d_head)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))

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


class FinalLayer(nn.Module):
    def __init__(self, width: int, patch: int, out_channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(width, patch * patch * out_channels)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))

    def forward(self, x: Tensor, mod: Modulation) -> Tensor:
        shift, scale = mod.apply(self.ada).chunk(2, dim=-1)
        return self.linear(modulate(self.norm(x), shift, scale))  # (B, T, p*p*C_out)


class DiT(nn.Module):
    """DiT/SiT velocity network; see the module docstring for the PF and SiT variants."""

    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.width
        self.patch_embed = nn.Conv2d(cfg.in_channels, d, kernel_size=cfg.patch, stride=cfg.patch)
        self.register_buffer("pos", sincos_pos_embed(d, cfg.grid)[None], persistent=False)  # (1, T, D)
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
        """DiT initialisation: Xavier linears, N(0, .02) embeddings, zeroed adaLN and output layers."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        w = self.patch_embed.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.patch_embed.bias)  # type: ignore[arg-type]
        nn.init.normal_(self.cond.y_table.weight, std=0.02)
        for lin in (self.cond.t_mlp[0], self.cond.t_mlp[2]):
            nn.init.normal_(lin.weight, std=0.02)  # type: ignore[arg-type]
        zeroed: list[object] = [blk.ada[1] for blk in self.blocks]  # type: ignore[index]
        for layer in [*zeroed, self.final.ada[1], self.final.linear]:
            assert isinstance(layer, nn.Linear)
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

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
        b = x.shape[0]
        if t.dim() == 1:
            t = t[:, None].expand(b, cfg.tokens)
        if t.shape != (b, cfg.tokens):
            raise PfbenchError(f"timesteps of shape {tuple(t.shape)} do not match (B, T) = ({b}, {cfg.tokens})")
        mod = self.modulation(t, y, dedup)
        h = self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos  # (B, T, D)
        proj = None
        for i, block in enumerate(self.blocks):
            if self.checkpointing and torch.is_grad_enabled():
                h = checkpoint(_run_block, block, h, mod, use_reentrant=False)  # (B, T, D)
            else:
                h = _run_block(block, h, mod)  # (B, T, D)
            if repa and self.projector is not None and i + 1 == cfg.repa_depth:
                proj = self.projector(h)  # (B, T, D_enc)
        out = self.unpatchify(self.final(h, mod))  # (B, C_out, H, W)
        if cfg.difficulty_head:
            return out[:, :-1], out[:, -1:], proj
        return out, None, proj

    def forward(self, x: Tensor, t: Tensor, y: Tensor, *, dedup: bool = True) -> tuple[Tensor, Tensor | None]:
        """Velocity and optional logvar for x (B, C, H, W), t (B, T) or (B,), labels y (B,); never runs the
        REPA projector (what samplers call; ``forward_flops`` counts it the same way)."""
        v, logvar, _ = self.forward_all(x, t, y, dedup, repa=False)
        return v, logvar

    def unpatchify(self, tokens: Tensor) -> Tensor:
        """(B, T, p*p*C) -> (B, C, H, W), inverse of the patch embedding's row-major token order."""
        cfg = self.cfg
        b, g, p, c = tokens.shape[0], cfg.grid, cfg.patch, cfg.out_channels
        x = tokens.reshape(b, g, g, p, p, c)
        return torch.einsum("bhwpqc->bchpwq", x).reshape(b, c, g * p, g * p)
