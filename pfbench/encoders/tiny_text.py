"""Tiny text encoder (embedded default, text-to-image conditioning): trained by pfbench, shipped, no downloads.

A word-level tokenizer over the embedded captions' vocabulary (plus the class prompt "a photo of a {class}.")
and a 2-block, 64-wide pre-norm transformer with a learned position embedding; ``encode`` returns its final
token states (B, 24, 64) and a mask. Position 0 is a ``<cls>`` token, so the empty prompt ``""`` (CFG's
unconditional input) is one valid token; unknown words map to ``<unk>``; prompts longer than 23 words are
truncated (the longest embedded caption has 16).

Training (deterministic on one CPU thread, ~1.5 CPU-minutes): the embedded train split's captions, with 10% replaced
by class prompts, and two objectives that make every token state carry what the caption asks for: from every
token's state, predict the caption's attributes (class, colour, texture, size, position, background colour and
kind; ``pfbench.data.captions``), and masked-word prediction (15% of words). The attribute probe ships with the
weights (``probe.*``), so a test can read the attributes back from the states of held-out captions.

This is a different network from the tiny CLIP (``pfbench.encoders.tiny_clip``) that scores the generated
images: a generator conditioned by its own judge's text tower would be graded on its conditioning.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pfbench import PfbenchError
from pfbench.assets import load_tensors, save_tensors
from pfbench.data.captions import ATTRIBUTES, attribute_targets
from pfbench.data.embedded import CLASS_NAMES, EmbeddedSpec, generate
from pfbench.encoders.base import deterministic
from pfbench.encoders.clip import PROMPT
from pfbench.encoders.text import encode_in_chunks, transformer_gflops

NAME = "tiny_text"
ASSET = "tiny_text.safetensors"
_FORMAT = "pfbench-tiny-text-v1"
_REBUILD = "pfbench assets build"
SPECIALS = ("<pad>", "<unk>", "<cls>", "<mask>")
PAD, UNK, CLS, MASK = range(4)
_CONFIG = {"max_len": 24, "dim": 64, "layers": 2, "heads": 4, "ffn": 256}
_TRAIN_SIZE = 32_768
_EPOCHS = 3
_BATCH = 256
_LR = 3e-3
_PROMPT_P = 0.1  # fraction of training captions replaced by the class prompt
_MLM_P = 0.15
_SANITY_SIZE = 2_000
_CHUNK = 64  # prompts per forward pass (fixed: a prompt's states never depend on its batch)
_WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> list[str]:
    """Lower-case words of a prompt (punctuation dropped)."""
    return _WORD.findall(text.lower())


class WordTokenizer:
    """Words → ids: ``<cls>`` first, then one id per word (``<unk>`` if unseen), padded with ``<pad>`` to ``max_len``.

    Args:
        vocab: words after the four special tokens (id = 4 + index).
        max_len: tokens per prompt, ``<cls>`` included.
    """

    def __init__(self, vocab: Sequence[str], max_len: int) -> None:
        self.vocab = tuple(vocab)
        self.ids = {w: i + len(SPECIALS) for i, w in enumerate(self.vocab)}
        self.max_len = max_len
        self.vocab_size = len(SPECIALS) + len(self.vocab)

    def __call__(self, prompts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Prompts → (ids (B, max_len) int64, mask (B, max_len) bool)."""
        ids = torch.full((len(prompts), self.max_len), PAD, dtype=torch.long)
        for i, p in enumerate(prompts):
            row = [CLS] + [self.ids.get(w, UNK) for w in words(p)][: self.max_len - 1]
            ids[i, : len(row)] = torch.tensor(row)
        return ids, ids != PAD

    @staticmethod
    def vocabulary(texts: Sequence[str]) -> list[str]:
        """Sorted distinct words of ``texts``."""
        return sorted({w for t in dict.fromkeys(texts) for w in words(t)})


class Block(nn.Module):
    """Pre-norm transformer block: self-attention over the valid tokens, then a GELU MLP."""

    def __init__(self, dim: int, heads: int, ffn: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, ffn), nn.GELU(), nn.Linear(ffn, dim))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x (B, L, D), mask (B, L) bool (True = real token) → (B, L, D)."""
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        h = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])  # (B, heads, L, D/heads)
        x = x + self.proj(h.transpose(1, 2).reshape(b, n, d))
        return x + self.mlp(self.norm2(x))


class TinyTextNet(nn.Module):
    """Token embedding + learned positions + ``layers`` blocks + final LayerNorm → token states (B, L, dim)."""

    def __init__(self, vocab_size: int, max_len: int, dim: int, layers: int, heads: int, ffn: int) -> None:
        super().__init__()
        self.dim, self.ffn = dim, ffn
        self.embed = nn.Embedding(vocab_size, dim)
        self.pos = nn.Parameter(torch.randn(max_len, dim) * 0.02)
        self.blocks = nn.ModuleList(Block(dim, heads, ffn) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, ids: Tensor, mask: Tensor) -> Tensor:
        """ids (B, L) int64, mask (B, L) bool → states (B, L, dim)."""
        x = self.embed(ids) + self.pos[: ids.shape[1]]  # (B, L, D)
        for blk in self.blocks:
            x = blk(x, mask)
        return self.norm(x)


def make_probe(dim: int) -> nn.ModuleDict:
    """One linear head per caption attribute on a token state (trained with the encoder, shipped with it)."""
    return nn.ModuleDict({a: nn.Linear(dim, len(names)) for a, names in ATTRIBUTES.items()})


def probe_logits(probe: nn.ModuleDict, states: Tensor, mask: Tensor) -> dict[str, Tensor]:
    """Per attribute, logits of the mask-averaged token states (B, K)."""
    pooled = (states * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)  # (B, D)
    return {a: head(pooled) for a, head in probe.items()}


def _losses(net: TinyTextNet, probe: nn.ModuleDict, mlm: nn.Linear, ids: Tensor, mask: Tensor,
            targets: dict[str, Tensor], gen: torch.Generator) -> Tensor:  # fmt: skip
    states = net(ids, mask)  # (B, L, D)
    loss = states.new_zeros(())
    for a, head in probe.items():  # every valid token predicts the caption's attributes
        y = targets[a][:, None].expand_as(ids).masked_fill(~mask, -1)  # (B, L)
        loss = loss + F.cross_entropy(head(states).flatten(0, 1), y.flatten(), ignore_index=-1)
    hide = (torch.rand(ids.shape, generator=gen) < _MLM_P) & mask & (ids != CLS)  # (B, L)
    masked = net(ids.masked_fill(hide, MASK), mask)
    return loss + F.cross_entropy(mlm(masked[hide]), ids[hide])


def train_tiny_text(seed: int = 0, *, train_size: int = _TRAIN_SIZE, epochs: int = _EPOCHS,
                    sanity_size: int = _SANITY_SIZE) -> tuple[TinyTextNet, nn.ModuleDict, WordTokenizer, dict[str, str]]:  # fmt: skip
    """Trains the tiny text encoder on the embedded train split's captions, deterministically on one CPU thread.

    Returns:
        (network, attribute probe, tokenizer, metadata with the config and held-out sanity numbers).
    """
    with deterministic(threads=1), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        captions = generate(EmbeddedSpec(split="train", size=train_size, seed=0)).captions
        prompts = [PROMPT.format(c) for c in CLASS_NAMES]
        tok = WordTokenizer(WordTokenizer.vocabulary([*captions, *prompts]), _CONFIG["max_len"])
        cfg = {k: v for k, v in _CONFIG.items() if k != "max_len"}
        net = TinyTextNet(tok.vocab_size, tok.max_len, **cfg)
        probe, mlm = make_probe(_CONFIG["dim"]), nn.Linear(_CONFIG["dim"], tok.vocab_size)
        gen = torch.Generator().manual_seed(seed)
        swap = torch.rand(train_size, generator=gen) < _PROMPT_P  # (N,) class prompt instead of the caption
        labels = attribute_targets(captions)["class"]
        texts = [prompts[int(labels[i])] if swap[i] else c for i, c in enumerate(captions)]
        ids, mask = tok(texts)  # (N, L)
        targets = attribute_targets(texts)
        params = [*net.parameters(), *probe.parameters(), *mlm.parameters()]
        steps = train_size // _BATCH
        opt = torch.optim.AdamW(params, lr=_LR, weight_decay=0.01)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, _LR, total_steps=epochs * steps, pct_start=0.1)
        for _ in range(epochs):
            perm = torch.randperm(train_size, generator=gen)
            for i in range(steps):
                idx = perm[i * _BATCH : (i + 1) * _BATCH]
                loss = _losses(net, probe, mlm, ids[idx], mask[idx], {a: t[idx] for a, t in targets.items()}, gen)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
        net.eval().requires_grad_(False)
        probe.eval().requires_grad_(False)
        checks = sanity(net, probe, tok, sanity_size)
    meta = {
        "format": _FORMAT,
        "config": json.dumps({**_CONFIG, "vocab": list(tok.vocab)}, sort_keys=True),
        "seed": str(seed),
        "train": f"{train_size} embedded train captions ({_PROMPT_P:.0%} class prompts) x {epochs} epochs, batch "
        f"{_BATCH}, AdamW {_LR} one-cycle; per-token attribute prediction + masked words ({_MLM_P:.0%})",
        **{k: f"{v:.4f}" for k, v in checks.items()},
    }
    return net, probe, tok, meta


@torch.no_grad()
def sanity(net: TinyTextNet, probe: nn.ModuleDict, tok: WordTokenizer, size: int = _SANITY_SIZE) -> dict[str, float]:
    """Probe accuracy per attribute on held-out test-split captions (``probe_<attribute>``), and their mean."""
    captions = generate(EmbeddedSpec(split="test", size=size, seed=0)).captions
    ids, mask = tok(captions)
    logits = probe_logits(probe, net(ids, mask), mask)
    targets = attribute_targets(captions)
    acc = {f"probe_{a}": float((logits[a].argmax(1) == targets[a]).float().mean()) for a in ATTRIBUTES}
    return {**acc, "probe_mean": sum(acc.values()) / len(acc)}


def build_tiny_text(out_dir: str | Path, seed: int = 0) -> dict[str, str]:
    """Trains the tiny text encoder and writes ``tiny_text.safetensors`` (atomic, with a sidecar); returns {name: sha256}."""
    net, probe, _, meta = train_tiny_text(seed)
    tensors = {**net.state_dict(), **{f"probe.{k}": v for k, v in probe.state_dict().items()}}
    return {ASSET: save_tensors(tensors, meta, Path(out_dir) / ASSET)}


_LOADED: dict[str, tuple[dict[str, Tensor], dict[str, str], str]] = {}


def load_tiny_text_net() -> tuple[TinyTextNet, nn.ModuleDict, WordTokenizer, str]:
    """(network, attribute probe, tokenizer, sha256) of the verified shipped asset, fresh modules on the CPU."""
    if ASSET not in _LOADED:
        tensors, meta, sha = load_tensors(ASSET, _REBUILD)
        if meta.get("format") != _FORMAT:
            raise PfbenchError(f"asset {ASSET}: unexpected metadata {meta}; rebuild with `{_REBUILD}`")
        _LOADED[ASSET] = tensors, meta, sha
    tensors, meta, sha = _LOADED[ASSET]
    cfg = json.loads(meta["config"])
    tok = WordTokenizer(cfg["vocab"], cfg["max_len"])
    net = TinyTextNet(tok.vocab_size, tok.max_len, cfg["dim"], cfg["layers"], cfg["heads"], cfg["ffn"])
    net.load_state_dict({k: v for k, v in tensors.items() if not k.startswith("probe.")})
    probe = make_probe(cfg["dim"])
    probe.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("probe.")})
    return net.eval().requires_grad_(False), probe.eval().requires_grad_(False), tok, sha


class TinyTextEncoder:
    """The shipped tiny text encoder behind ``pfbench.encoders.text.TextEncoder``.

    Args:
        device: where it runs.
    """

    name = NAME

    def __init__(self, device: str | torch.device = "cpu") -> None:
        net, _, self.tokenizer, self.sha256 = load_tiny_text_net()
        self.device = torch.device(device)
        self.net = net.to(self.device)
        self.dim, self.max_len = net.dim, self.tokenizer.max_len
        self.gflops_per_prompt = transformer_gflops(self.max_len, self.dim, len(net.blocks), net.ffn)

    def fingerprint(self) -> dict[str, str]:
        return {"text_encoder": NAME, "sha256": self.sha256, "max_len": str(self.max_len)}

    @torch.no_grad()
    def _forward(self, prompts: list[str]) -> tuple[Tensor, Tensor]:
        ids, mask = self.tokenizer(prompts)  # (B, L)
        ids, mask = ids.to(self.device), mask.to(self.device)
        return self.net(ids, mask), mask

    def encode(self, prompts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Prompts → (states (B, 24, 64) float32, mask (B, 24) bool) on the encoder's device."""
        return encode_in_chunks(self._forward, prompts, _CHUNK, NAME, self._lengths, self.max_len)

    @staticmethod
    def _lengths(prompts: list[str]) -> list[int]:
        return [1 + len(words(p)) for p in prompts]  # <cls> + one token per word


def load(device: str | torch.device = "cpu", weights: str | None = None) -> TinyTextEncoder:
    """Registry loader ("tiny_text"); it ships with pfbench, so ``weights`` must be ``None``."""
    if weights is not None:
        raise PfbenchError(f"text encoder {NAME} ships with pfbench and takes no weights (got {weights!r})")
    return TinyTextEncoder(device)


if __name__ == "__main__":  # python -m pfbench.encoders.tiny_text OUT_DIR [SEED]
    import sys

    for file, sha in build_tiny_text(sys.argv[1], *(int(a) for a in sys.argv[2:3])).items():
        print(f"{sha}  {file}")
