"""Text-to-image Patch Forcing network and its global-timestep baseline (docs/protocol.md §3).

The image path is the DiT of ``pfbench.nets.dit`` (patch embedding, fixed 2-D sin-cos positions, adaLN-Zero,
per-token timesteps, difficulty head), with one more sub-layer per block: **cross-attention** from the image
tokens to text tokens. The text path: encoder token embeddings (B, L, text_dim) → linear → a learned
"register" token prepended → learned 1-D positions → ``refiner_depth`` plain pre-norm transformer blocks with a
key-padding mask → keys/values of every cross-attention. The register token is always visible, so the empty
prompt (every encoder token masked, CFG's unconditional branch) still has a key to attend to.

Conditioning of the adaptive norms: ``c_i = temb(t_i) + pool(text)`` per token (PF) or per sample (baseline),
where ``pool`` is a linear map of the masked mean of the refined text tokens. Modulation depends on (t_i, text)
only, so it is deduplicated per distinct timestep of each sample exactly as in the DiT (``build_modulation``).
Each block has 9 modulations: shift/scale/gate for self-attention, cross-attention and the MLP.

The text context depends on the prompt only, so a caller that runs many steps on the same prompts may compute
it once (``encode_text``) and pass it to every ``forward_context`` call; ``forward`` does both.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

import pfbench.nets.base as base
from pfbench import PfbenchError


@dataclass(frozen=True)
class T2IConfig(base.PatchNetConfig):
    """Architecture of the text-conditioned network; plain data, stored in checkpoints.

    ``num_classes`` is not an input of the network: it is the dataset's, kept so that samples carry labels
    (class accuracy of the embedded dataset) the way class-conditional models do. ``text_dim`` / ``text_len``
    are the text encoder's token width and (padded) token count. ``repa_depth`` is always None (REPA is not
    wired for text-to-image); it exists because training code reads it on every network config. The sizes and PF
    switches, their defaults and their checks are ``PatchNetConfig``'s (``presets.t2i_config`` sets them from a
    preset and the dataset); the fields here follow them in the stored dict.
    """

    text_dim: int = 64
    text_len: int = 32
    refiner_depth: int = 2
    pooled_text: bool = True
    repa_depth: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.text_dim < 1 or self.text_len < 1 or self.refiner_depth < 0:
            raise PfbenchError(f"text_dim {self.text_dim} and text_len {self.text_len} must be >= 1, "
                               f"refiner_depth {self.refiner_depth} >= 0")
        if self.repa_depth is not None:
            raise PfbenchError("the text-to-image network has no REPA projector (repa_depth must be None)")

    @property
    def context_len(self) -> int:
        """Text positions the blocks attend to: the register token plus ``text_len``."""
        return self.text_len + 1


@dataclass(frozen=True)
class TextContext:
    """Refined text of a batch: what every block's cross-attention reads.

    Attributes:
        tokens: (B, 1 + L, D) refined tokens (register token first).
        mask: (B, 1 + L) bool, True where a key may be attended (the register token always).
        pooled: (B, D) pooled text added to the timestep embedding (zeros when ``pooled_text`` is off).
    """

    tokens: Tensor
    mask: Tensor
    pooled: Tensor

    def repeat(self, index: Tensor) -> TextContext:
        """The rows ``index`` (N,) of this context (e.g. one row per sample of a doubled CFG batch)."""
        return TextContext(self.tokens[index], self.mask[index], self.pooled[index])


class RefinerBlock(nn.Module):
    """Pre-norm transformer block over the text tokens (self-attention with a key-padding mask, MLP)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width, eps=1e-6)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width, eps=1e-6)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        q, k, v = self.qkv(self.norm1(x)).chunk(3, dim=-1)  # (B, L, D) each
        x = x + self.proj(base.attend(q, k, v, self.heads, mask))
        return x + self.mlp(self.norm2(x))


class T2IBlock(nn.Module):
    """adaLN-Zero block with self-attention, cross-attention to the text context and an MLP (9 modulations)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.heads = heads
        norm = lambda: nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)  # noqa: E731
        self.norm1, self.norm2, self.norm3 = norm(), norm(), norm()
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.q_cross = nn.Linear(width, width)
        self.kv_cross = nn.Linear(width, 2 * width)
        self.proj_cross = nn.Linear(width, width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 9 * width))

    def forward(self, x: Tensor, mod: base.Modulation, text: TextContext) -> Tensor:
        sh1, sc1, g1, sh2, sc2, g2, sh3, sc3, g3 = mod.apply(self.ada).chunk(9, dim=-1)  # each (B, 1|T, D)
        q, k, v = self.qkv(base.modulate(self.norm1(x), sh1, sc1)).chunk(3, dim=-1)  # (B, T, D) each
        x = x + g1 * self.proj(base.attend(q, k, v, self.heads, None))
        kt, vt = self.kv_cross(text.tokens).chunk(2, dim=-1)  # (B, 1 + L, D) each
        q = self.q_cross(base.modulate(self.norm2(x), sh2, sc2))  # (B, T, D)
        x = x + g2 * self.proj_cross(base.attend(q, kt, vt, self.heads, text.mask))
        return x + g3 * self.mlp(base.modulate(self.norm3(x), sh3, sc3))


class T2INet(base.PatchNet):
    """Text-conditioned velocity network (PF with per-token t and a difficulty head, or the global-t baseline)."""

    cfg: T2IConfig

    def __init__(self, cfg: T2IConfig) -> None:
        super().__init__()
        self._embed_init(cfg)
        d = cfg.width
        self.t_mlp = base.timestep_mlp(d)
        self.text_in = nn.Linear(cfg.text_dim, d)
        self.register = nn.Parameter(torch.zeros(1, 1, d))  # always-visible first text token
        self.text_pos = nn.Parameter(torch.zeros(1, cfg.context_len, d))  # learned 1-D positions
        self.refiner = nn.ModuleList(RefinerBlock(d, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.refiner_depth))
        self.text_norm = nn.LayerNorm(d, eps=1e-6)
        self.pool = nn.Linear(d, d)
        self.blocks = nn.ModuleList(T2IBlock(d, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.final = base.FinalLayer(d, cfg.patch, cfg.out_channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """DiT initialisation (``PatchNet._dit_init``): N(0, .02) register token, text positions, timestep MLP."""
        self._dit_init(self.t_mlp, [self.register, self.text_pos])

    def encode_text(self, tokens: Tensor, mask: Tensor) -> TextContext:
        """Refines encoder tokens (B, L, text_dim) with mask (B, L) bool (True = real token), L <= text_len."""
        cfg = self.cfg
        b, n = mask.shape
        if tokens.dim() != 3 or tokens.shape[:2] != (b, n) or tokens.shape[2] != cfg.text_dim or n > cfg.text_len:
            raise PfbenchError(f"text tokens {tuple(tokens.shape)} / mask {tuple(mask.shape)} do not fit the network "
                               f"(B, L <= {cfg.text_len}, {cfg.text_dim}); was it trained with this text encoder?")
        h = torch.cat([self.register.expand(b, 1, -1), self.text_in(tokens.to(self.text_in.weight.dtype))], dim=1)
        h = h + self.text_pos[:, : n + 1]  # (B, 1 + L, D)
        keep = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=mask.device), mask.bool()], dim=1)  # (B, 1 + L)
        for block in self.refiner:
            h = block(h, keep)
        h = self.text_norm(h)
        w = keep.to(h.dtype)[..., None]  # (B, 1 + L, 1)
        pooled = self.pool((h * w).sum(1) / w.sum(1)) if cfg.pooled_text else h.new_zeros(b, cfg.width)  # (B, D)
        return TextContext(h, keep, pooled)

    def modulation(self, t: Tensor, text: TextContext, dedup: bool = True) -> base.Modulation:
        """Conditioning ``temb(t) + pooled text`` for timesteps t (B, T), deduplicated as in the DiT."""
        rows = torch.arange(t.shape[0], device=t.device)  # (B,): which sample's pooled text each row reads

        def cond(tv: Tensor, r: Tensor) -> Tensor:
            return self.t_mlp(base.timestep_features(tv)) + text.pooled[r]  # (N, D)

        return base.build_modulation(cond, t, rows, self.cfg.per_token_t, dedup)

    def forward_context(
        self, x: Tensor, t: Tensor, text: TextContext, dedup: bool = True
    ) -> tuple[Tensor, Tensor | None]:
        """Velocity (B, C, H, W) and logvar (B, 1, H, W) | None for x, t (B, T) or (B,), a refined text context."""
        b = x.shape[0]
        t = self.token_times(t, b)
        if text.tokens.shape[0] != b:
            raise PfbenchError(f"{text.tokens.shape[0]} text contexts for a batch of {b} images")
        mod = self.modulation(t, text, dedup)
        h = self.embed(x)  # (B, T, D)
        for block in self.blocks:
            h = block(h, mod, text)
        return self.head(h, mod)

    def forward(
        self, x: Tensor, t: Tensor, text: Tensor | TextContext, mask: Tensor | None = None, *, dedup: bool = True
    ) -> tuple[Tensor, Tensor | None]:
        """Velocity and optional logvar for x (B, C, H, W), t, and either encoder tokens (B, L, text_dim) with their
        mask (B, L) or an already refined ``TextContext`` (``encode_text``; then ``mask`` is None)."""
        if isinstance(text, TextContext):
            return self.forward_context(x, t, text, dedup)
        if mask is None:
            raise PfbenchError("T2INet: encoder tokens need their mask (B, L)")
        return self.forward_context(x, t, self.encode_text(text, mask), dedup)


__all__ = ["T2IBlock", "T2IConfig", "T2INet", "TextContext"]
