"""What the class-conditional and the text-conditioned Patch Forcing networks share (docs/protocol.md §2, §3).

Both are DiTs over a p×p patch grid: the same config core (``PatchNetConfig``: sizes, PF switches and their
checks), the same image path in and out (``PatchNet``: patch embedding, fixed 2-D sin-cos positions, unpatchify,
DiT initialisation), the same sinusoidal timestep features, the same per-token adaLN modulation with exact
deduplication (``build_modulation``), and the same final layer with the optional difficulty channel. What differs
lives in ``dit.py`` (class embedding, 6-modulation blocks, REPA projector) and ``t2i.py`` (text path,
cross-attention blocks).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pfbench import PfbenchError

FREQ_DIM = 256  # sinusoidal timestep features (docs/protocol.md §2)


@dataclass(frozen=True)
class PatchNetConfig:
    """Sizes and switches every Patch Forcing network has; subclasses add their own fields after these.

    Both subclasses keep these fields and defaults as they are (none re-declares one), so the stored dict
    (``dataclasses.asdict``, field order included) of each starts with these fields in this order.
    """

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

    def __post_init__(self) -> None:
        if self.input_size % self.patch:
            raise PfbenchError(f"input_size {self.input_size} is not a multiple of patch {self.patch}")
        if self.width % self.heads:
            raise PfbenchError(f"width {self.width} is not a multiple of heads {self.heads}")
        if self.difficulty_head and not self.per_token_t:
            raise PfbenchError("difficulty_head=True needs per_token_t=True (the PF model)")

    @property
    def grid(self) -> int:
        return self.input_size // self.patch

    @property
    def tokens(self) -> int:
        return self.grid**2

    @property
    def out_channels(self) -> int:
        return self.in_channels + (1 if self.difficulty_head else 0)


def timestep_mlp(width: int) -> nn.Sequential:
    """The timestep MLP both networks embed ``timestep_features`` with: 256 → D → D (SiLU between)."""
    return nn.Sequential(nn.Linear(FREQ_DIM, width), nn.SiLU(), nn.Linear(width, width))


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
    (``dedup=False``, training) or one per distinct (sample, t) pair (``dedup=True``, exact; docs/protocol.md §2).
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


def attend(q: Tensor, k: Tensor, v: Tensor, heads: int, mask: Tensor | None = None) -> Tensor:
    """Multi-head attention of q (B, N, D) over k, v (B, M, D); mask (B, M) bool (True = visible) or None."""
    b, n, d = q.shape
    m = k.shape[1]

    def split(x: Tensor, length: int) -> Tensor:
        return x.reshape(b, length, heads, d // heads).transpose(1, 2)  # (B, heads, len, d_head)

    attn_mask = None if mask is None else mask[:, None, None, :]  # (B, 1, 1, M), broadcast over heads/queries
    out = F.scaled_dot_product_attention(split(q, n), split(k, m), split(v, m), attn_mask=attn_mask)
    return out.transpose(1, 2).reshape(b, n, d)  # (B, N, D)


class FinalLayer(nn.Module):
    def __init__(self, width: int, patch: int, out_channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(width, patch * patch * out_channels)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))

    def forward(self, x: Tensor, mod: Modulation) -> Tensor:
        shift, scale = mod.apply(self.ada).chunk(2, dim=-1)
        return self.linear(modulate(self.norm(x), shift, scale))  # (B, T, p*p*C_out)


class PatchNet(nn.Module):
    """The image path both networks share: patch embedding + fixed positions in, unpatchify out, DiT init.

    A subclass calls ``_embed_init(cfg)`` first in its ``__init__`` (so ``patch_embed`` is its first module, as in
    every checkpoint) and builds its own conditioning, blocks and ``final`` (a ``FinalLayer``) after it.
    """

    cfg: PatchNetConfig
    blocks: nn.ModuleList
    final: FinalLayer

    def _embed_init(self, cfg: PatchNetConfig) -> None:
        self.cfg = cfg
        self.patch_embed = nn.Conv2d(cfg.in_channels, cfg.width, kernel_size=cfg.patch, stride=cfg.patch)
        self.register_buffer("pos", sincos_pos_embed(cfg.width, cfg.grid)[None], persistent=False)  # (1, T, D)

    def embed(self, x: Tensor) -> Tensor:
        """Image (B, C, H, W) -> patch tokens with positions (B, T, D)."""
        return self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos  # type: ignore[no-any-return]

    def _dit_init(self, t_mlp: nn.Sequential, embeddings: Sequence[Tensor]) -> None:
        """DiT initialisation: Xavier linears and patch embedding, N(0, .02) for ``embeddings`` (in that order,
        then the timestep MLP: the RNG order every shipped checkpoint was made with), zeroed adaLN and output."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        w = self.patch_embed.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.patch_embed.bias)  # type: ignore[arg-type]
        for emb in embeddings:
            nn.init.normal_(emb, std=0.02)
        for lin in (t_mlp[0], t_mlp[2]):
            nn.init.normal_(lin.weight, std=0.02)  # type: ignore[arg-type]
        zeroed: list[object] = [blk.ada[1] for blk in self.blocks]  # type: ignore[index]
        for layer in [*zeroed, self.final.ada[1], self.final.linear]:
            assert isinstance(layer, nn.Linear)
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def token_times(self, t: Tensor, batch: int) -> Tensor:
        """Timesteps as (B, T): a per-sample t (B,) is broadcast to every token; any other shape is an error."""
        tokens = self.cfg.tokens
        if t.dim() == 1:
            t = t[:, None].expand(batch, tokens)
        if t.shape != (batch, tokens):
            raise PfbenchError(f"timesteps of shape {tuple(t.shape)} do not match (B, T) = ({batch}, {tokens})")
        return t

    def head(self, h: Tensor, mod: Modulation) -> tuple[Tensor, Tensor | None]:
        """Final layer and unpatchify of tokens h (B, T, D): velocity (B, C, H, W) and logvar (B, 1, H, W) | None."""
        out = self.unpatchify(self.final(h, mod))  # (B, C_out, H, W)
        if self.cfg.difficulty_head:
            return out[:, :-1], out[:, -1:]
        return out, None

    def unpatchify(self, tokens: Tensor) -> Tensor:
        """(B, T, p*p*C) -> (B, C, H, W), inverse of the patch embedding's row-major token order."""
        cfg = self.cfg
        b, g, p, c = tokens.shape[0], cfg.grid, cfg.patch, cfg.out_channels
        x = tokens.reshape(b, g, g, p, p, c)
        return torch.einsum("bhwpqc->bchpwq", x).reshape(b, c, g * p, g * p)
