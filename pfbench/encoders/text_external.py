"""External text encoders from local weights (never downloaded): an open_clip text tower and Hugging Face models.

- ``clip_l14`` / ``clip_b32``: OpenAI CLIP ViT-L/14 / ViT-B/32 through open_clip; the token states are the text
  transformer's output after its final LayerNorm, before pooling and projection (77 tokens, 768 / 512 wide,
  causal). Weights resolve like the CLIP score's (``pfbench.weights``: a file or folder, ``$PFBENCH_WEIGHTS``,
  ``~/.cache/clip``) and are checksum-verified.
- ``t5`` / ``qwen`` / ``hf``: a Hugging Face model's last hidden states (a T5-family config loads only the
  encoder). ``weights`` is a local model folder (holding ``config.json``) or a hub id looked up in
  ``$PFBENCH_WEIGHTS/<name>`` and the Hugging Face cache; ``t5`` defaults to ``google/flan-t5-base`` and
  ``qwen`` to ``Qwen/Qwen3-0.6B``. Loading uses ``local_files_only``.

A missing file or folder raises a one-line ``PfbenchError`` before open_clip or transformers is imported, so it
fails at once and never reaches the network.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pfbench import PfbenchError
from pfbench.encoders.text import encode_in_chunks, transformer_gflops
from pfbench.weights import ENV_VAR, library_cache_dir, resolve_weights

_CHUNK = 32  # prompts per forward pass (fixed, so a prompt's states never depend on its batch)
T5_DEFAULT = "google/flan-t5-base"
QWEN_DEFAULT = "Qwen/Qwen3-0.6B"
HF_MAX_LEN = 128


class OpenCLIPText:
    """Token states of an open_clip CLIP text tower (before pooling).

    Args:
        name: registry name.
        model: an open_clip ``CLIP`` (its text transformer, token/position embeddings and ``ln_final`` are used).
        tokenizer: its open_clip tokenizer (``list[str] -> (B, context_length)``; pad 0).
        device: where it runs.
        fingerprint: what identifies the weights.
    """

    def __init__(self, name: str, model: Any, tokenizer: Any, device: str | torch.device,
                 fingerprint: dict[str, str]) -> None:  # fmt: skip
        self.name = name
        self.device = torch.device(device)
        self.model = model.to(self.device).eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.max_len = int(model.context_length)
        self.dim = int(model.ln_final.normalized_shape[0])
        blocks = model.transformer.resblocks
        self.gflops_per_prompt = transformer_gflops(self.max_len, self.dim, len(blocks),
                                                    int(blocks[0].mlp.c_fc.out_features))  # fmt: skip
        self._fingerprint = {"text_encoder": name, **fingerprint, "max_len": str(self.max_len)}

    def fingerprint(self) -> dict[str, str]:
        return dict(self._fingerprint)

    @torch.no_grad()
    def _forward(self, prompts: list[str]) -> tuple[Tensor, Tensor]:
        m = self.model
        ids = self.tokenizer(prompts).to(self.device)  # (B, L): start, words, end, zeros
        x = m.token_embedding(ids) + m.positional_embedding  # (B, L, D)
        x = m.ln_final(m.transformer(x, attn_mask=m.attn_mask))  # (B, L, D), causal
        return x.float(), ids != 0

    def encode(self, prompts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Prompts → (states (B, 77, D) float32, mask (B, 77) bool; ``""`` keeps its start/end tokens)."""
        bpe = getattr(self.tokenizer, "encode", None)  # open_clip's SimpleTokenizer: BPE ids without start/end
        lengths = (lambda ps: [len(bpe(p)) + 2 for p in ps]) if callable(bpe) else None
        return encode_in_chunks(self._forward, prompts, _CHUNK, self.name, lengths, self.max_len)


def _clip(name: str, arch: str, key: str, device: str | torch.device, weights: str | None) -> OpenCLIPText:
    path = resolve_weights(key, weights)  # raises at once, before open_clip is imported, when missing
    import open_clip

    model = open_clip.create_model(arch, pretrained=str(path), force_quick_gelu=True, weights_only=False,
                                   device=device)  # fmt: skip
    return OpenCLIPText(name, model, open_clip.get_tokenizer(arch), device, {"weights": key, "arch": arch})


def clip_l14(device: str | torch.device = "cpu", weights: str | None = None) -> OpenCLIPText:
    """Registry loader ("clip_l14"): OpenAI CLIP ViT-L/14's text tower (768-d states)."""
    return _clip("clip_l14", "ViT-L-14", "clip-vit-l-14-openai", device, weights)


def clip_b32(device: str | torch.device = "cpu", weights: str | None = None) -> OpenCLIPText:
    """Registry loader ("clip_b32"): OpenAI CLIP ViT-B/32's text tower (512-d states)."""
    return _clip("clip_b32", "ViT-B-32", "clip-vit-b-32-openai", device, weights)


def resolve_hf_folder(name: str, weights: str | None, default: str | None) -> Path:
    """A local Hugging Face model folder (holding ``config.json``); never downloads.

    ``weights`` is a folder, or a hub id (``org/model``) looked up as ``$PFBENCH_WEIGHTS/<model>`` (each folder
    listed there) and in the Hugging Face cache (``$HF_HUB_CACHE`` or ``$HF_HOME/hub``, newest snapshot first);
    ``None`` means ``default``.

    Raises:
        PfbenchError: nothing found; one line naming every place looked and how to get the model.
    """
    ref = weights if weights is not None else default
    if ref is None:
        raise PfbenchError(f"text encoder {name}: pass weights (a local Hugging Face model folder)")
    places: list[Path] = []
    given = Path(ref).expanduser()
    if given.is_absolute() or given.exists() or ref.startswith(".") or ref.count("/") != 1:
        places.append(given)  # a path, not a hub id
        hub_id = None
    else:
        hub_id = ref
        env = [d for d in os.environ.get(ENV_VAR, "").split(os.pathsep) if d]
        places += [Path(d).expanduser() / ref.split("/")[1] for d in env]
        snaps = library_cache_dir(f"hf:{ref}")
        places += sorted(snaps.glob("*"), reverse=True) if snaps.is_dir() else [snaps / "<revision>"]
    for p in places:
        if (p / "config.json").is_file():
            return p
    looked = "; ".join(str(p) for p in places)
    how = (f"on a machine with internet run `hf download {hub_id} --local-dir <folder>`, copy the "
           f"folder here and pass it as weights (suite: text_encoder.weights) or into a folder listed in ${ENV_VAR}"
           if hub_id else "pass a folder holding config.json, the tokenizer and the weights files")  # fmt: skip
    raise PfbenchError(f"text encoder {name}: model {ref} not found (no config.json in {looked}); "
                       f"pfbench never downloads: {how}")  # fmt: skip


def _hf_gflops(cfg: Any, tokens: int) -> float:
    """Analytic GFLOPs per prompt of a T5 encoder or a decoder-only (Llama/Qwen-style) stack."""
    cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg  # a vision-language model's text part
    if getattr(cfg, "model_type", "") in ("t5", "mt5", "umt5"):
        gated = "gated" in str(getattr(cfg, "feed_forward_proj", ""))
        return transformer_gflops(tokens, cfg.d_model, cfg.num_layers, cfg.d_ff, gated=gated,
                                  attn_inner=cfg.num_heads * cfg.d_kv)  # fmt: skip
    head = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    kv = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    return transformer_gflops(tokens, cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size, gated=True,
                              attn_inner=cfg.num_attention_heads * head, kv_inner=kv * head)  # fmt: skip


class HFText:
    """Last hidden states of a Hugging Face model (T5: its encoder), padded on the right to ``max_len``.

    Args:
        name: registry name.
        folder: local model folder.
        device: where it runs.
        max_len: tokens per prompt (longer prompts are truncated).
    """

    def __init__(self, name: str, folder: Path, device: str | torch.device, max_len: int = HF_MAX_LEN) -> None:
        try:
            import transformers
        except ImportError:
            raise PfbenchError(f"text encoder {name} needs transformers: pip install 'pfbench[t2i]'") from None
        self.name, self.device, self.max_len = name, torch.device(device), max_len
        cfg = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
        cls: Any = transformers.T5EncoderModel if cfg.model_type in ("t5", "mt5", "umt5") else transformers.AutoModel
        self.model = cls.from_pretrained(folder, local_files_only=True).to(self.device).eval().requires_grad_(False)
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.tokenizer.padding_side = "right"
        # a row with no token at all (the empty prompt of a tokenizer without start/end tokens) gets this one
        self.fill_id = next(i for i in (self.tokenizer.eos_token_id, self.tokenizer.pad_token_id, 0) if i is not None)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token_id = self.fill_id
        text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
        self.dim = int(getattr(text_cfg, "d_model", None) or text_cfg.hidden_size)
        self.gflops_per_prompt = _hf_gflops(cfg, max_len)
        self._fingerprint = {"text_encoder": name, "model": str(getattr(cfg, "_name_or_path", "") or folder.name),
                             "folder": folder.name, "max_len": str(max_len)}  # fmt: skip

    def fingerprint(self) -> dict[str, str]:
        return dict(self._fingerprint)

    @torch.no_grad()
    def _forward(self, prompts: list[str]) -> tuple[Tensor, Tensor]:
        enc = self.tokenizer(prompts, padding="max_length", truncation=True, max_length=self.max_len,
                             return_tensors="pt")  # fmt: skip
        ids, mask = enc["input_ids"], enc["attention_mask"].bool()  # (B, L)
        empty = ~mask[:, 0]
        ids[empty, 0], mask[empty, 0] = self.fill_id, True
        out = self.model(input_ids=ids.to(self.device), attention_mask=mask.long().to(self.device))
        return out.last_hidden_state.float(), mask.to(self.device)

    def encode(self, prompts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Prompts → (states (B, max_len, dim) float32, mask (B, max_len) bool)."""
        return encode_in_chunks(self._forward, prompts, _CHUNK, self.name, self._lengths, self.max_len)

    def _lengths(self, prompts: list[str]) -> list[int]:
        return [len(ids) for ids in self.tokenizer(prompts, truncation=False)["input_ids"]]


def t5(device: str | torch.device = "cpu", weights: str | None = None) -> HFText:
    """Registry loader ("t5"): a T5 encoder (default ``google/flan-t5-base``) from local files."""
    return HFText("t5", resolve_hf_folder("t5", weights, T5_DEFAULT), device)


def qwen(device: str | torch.device = "cpu", weights: str | None = None) -> HFText:
    """Registry loader ("qwen"): a Qwen-family model's last hidden states (default ``Qwen/Qwen3-0.6B``)."""
    return HFText("qwen", resolve_hf_folder("qwen", weights, QWEN_DEFAULT), device)


def hf(device: str | torch.device = "cpu", weights: str | None = None) -> HFText:
    """Registry loader ("hf"): any Hugging Face model folder given as ``weights``."""
    return HFText("hf", resolve_hf_folder("hf", weights, None), device)
