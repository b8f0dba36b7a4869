"""Text encoders for text-to-image models (docs/protocol.md §3): prompts in, token states and a mask out, behind one face.

``load_text_encoder(name, device, weights)`` builds an encoder registered in ``pfbench.registry.TEXT_ENCODERS``
(built-ins in ``pfbench.plugins``; third-party packages add names through the entry-point group
``pfbench.text_encoders``), so suites name encoders by string:

- ``tiny_text``: the tiny word-level transformer pfbench trains on the embedded dataset's captions and ships
  checksummed in ``pfbench/assets`` (``pfbench.encoders.tiny_text``; the embedded default, no downloads). It
  is a separate model from the tiny CLIP that scores the images, so the generator is not conditioned by its
  judge;
- ``clip_l14`` / ``clip_b32``: the text tower of OpenAI's CLIP ViT-L/14 / ViT-B/32 through open_clip, token
  states before pooling (``pfbench.encoders.text_external``), from a local file;
- ``t5`` / ``qwen`` / ``hf``: a Hugging Face encoder (T5 encoder, Qwen or any ``AutoModel``) from a local
  folder or the Hugging Face cache, never downloaded.

Every encoder pads each prompt to ``max_len`` tokens (longer prompts are truncated: said once per encoder and
process in one line on stderr, and counted in ``TRUNCATED``) and runs prompts in chunks of
a fixed size, so a prompt's token states do not depend on which other prompts share its batch (samples must
not change with the batch size). The empty prompt ``""`` encodes to at least one valid token: it is the
unconditional input of classifier-free guidance.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import torch
from rich.console import Console
from torch import Tensor

from pfbench import PfbenchError

# Encoder name -> prompts it has truncated in this process (every encode call counted; the warning is said once).
TRUNCATED: dict[str, int] = {}


@runtime_checkable
class TextEncoder(Protocol):
    """What every text encoder looks like to a text-to-image model and to compute accounting.

    Attributes:
        name: registry name (``"tiny_text"``, ``"t5"``, ...).
        dim: width of the token states.
        max_len: tokens per prompt (the padded length ``encode`` returns).
        gflops_per_prompt: analytic forward GFLOPs of one prompt at ``max_len`` tokens (multiply-add = 2 FLOPs,
            matmuls only, as ``pfbench.nets.flops``); a sampler counts it once per sample.
    """

    name: str
    dim: int
    max_len: int
    gflops_per_prompt: float

    def encode(self, prompts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Prompts → (token states (B, max_len, dim) float32, mask (B, max_len) bool), on the encoder's device.

        ``mask`` is True on real tokens (at least one per prompt, also for ``""``); states at False positions
        are zero and must be ignored (a cross-attention's key padding mask).
        """
        ...

    def fingerprint(self) -> dict[str, str]:
        """What identifies the encoder's output (name, weights checksum or folder, max_len): a cache-key part."""
        ...


def check_prompts(prompts: Sequence[str], where: str) -> list[str]:
    """Returns ``prompts`` as a list after checking it is a sequence of strings (a lone string is refused)."""
    if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
        raise PfbenchError(f"{where}: prompts must be a sequence of strings (wrap a single prompt in a list)")
    return list(prompts)


def note_truncated(where: str, lengths: Sequence[int], max_len: int) -> int:
    """Counts the prompts longer than ``max_len`` tokens (``lengths``: each prompt's untruncated token count) in
    ``TRUNCATED[where]``; the first time an encoder truncates, one line on stderr says how many and to what."""
    n = sum(int(k) > max_len for k in lengths)
    if n:
        if where not in TRUNCATED:
            Console(stderr=True, highlight=False, soft_wrap=True).print(
                f"[yellow]warning:[/] {where}: {n} of {len(lengths)} prompts are longer than {max_len} tokens and "
                f"were truncated to {max_len} tokens (later truncations are counted, not repeated)")
        TRUNCATED[where] = TRUNCATED.get(where, 0) + n
    return n


def encode_in_chunks(forward: Callable[[list[str]], tuple[Tensor, Tensor]], prompts: Sequence[str], chunk: int,
                     where: str, lengths: Callable[[list[str]], list[int]] | None = None,
                     max_len: int = 0) -> tuple[Tensor, Tensor]:  # fmt: skip
    """Runs ``forward`` on fixed-size chunks of prompts (the last padded with ``""``) and concatenates.

    Every call has the same shape whatever the caller's batch size, so a prompt's states are the same in any
    batch. ``forward`` returns (B, L, D) float32 states and a (B, L) bool mask; padded rows are dropped and
    states at masked-out positions zeroed. ``lengths`` (each prompt's token count before truncation to
    ``max_len``) makes truncated prompts known (``note_truncated``).
    """
    texts = check_prompts(prompts, where)
    if lengths is not None and texts:
        note_truncated(where, lengths(texts), max_len)
    states: list[Tensor] = []
    masks: list[Tensor] = []
    for lo in range(0, len(texts), chunk):
        part = texts[lo : lo + chunk]
        h, m = forward(part + [""] * (chunk - len(part)))  # (chunk, L, D), (chunk, L)
        if not bool(m[:, 0].all()):
            raise PfbenchError(f"{where}: a prompt encoded to no valid first token (the encoder must keep one)")
        states.append((h.float() * m[..., None])[: len(part)])
        masks.append(m.bool()[: len(part)])
    if not texts:
        h, m = forward([""] * chunk)
        return h.float()[:0], m.bool()[:0]
    return torch.cat(states), torch.cat(masks)


def transformer_gflops(tokens: int, width: int, layers: int, ffn: int, *, gated: bool = False,
                       attn_inner: int | None = None, kv_inner: int | None = None) -> float:  # fmt: skip
    """Analytic forward GFLOPs of a transformer encoder stack on ``tokens`` tokens (matmuls only).

    Args:
        tokens: sequence length (``max_len``).
        width: model width (residual stream).
        layers: blocks.
        ffn: hidden width of the MLP.
        gated: gated MLP (three matrices: T5 v1.1 / Qwen), else two.
        attn_inner: query/output width (heads × head dim), default ``width``.
        kv_inner: key/value width (grouped-query attention), default ``attn_inner``.
    """
    q = attn_inner or width
    kv = kv_inner or q
    per_layer = (
        2.0 * tokens * width * (q + 2 * kv)  # q, k, v projections
        + 2.0 * 2 * tokens * tokens * q  # QK^T and attention·V
        + 2.0 * tokens * q * width  # output projection
        + 2.0 * (3 if gated else 2) * tokens * width * ffn  # MLP
    )
    return layers * per_layer / 1e9


def load_text_encoder(name: str, device: str | torch.device = "cpu", weights: str | None = None) -> TextEncoder:
    """Builds the text encoder registered as ``name`` (``pfbench.registry.TEXT_ENCODERS``).

    Args:
        name: registry name, e.g. ``"tiny_text"`` (embedded default), ``"clip_l14"``, ``"t5"``, ``"qwen"``.
        device: where it runs (``encode`` returns tensors there).
        weights: a local file or folder for an external encoder (``None``: resolved offline, see
            ``pfbench.weights``); the tiny encoder takes none.

    Raises:
        PfbenchError: unknown name (with a suggestion), missing weights (one line saying where pfbench looked
            and how to get them, before anything heavy is imported), or an object that is not a ``TextEncoder``.
    """
    from pfbench.registry import TEXT_ENCODERS

    encoder = TEXT_ENCODERS.get(name)(device=device, weights=weights)
    if not isinstance(encoder, TextEncoder):
        raise PfbenchError(f"text encoder {name!r} does not follow pfbench.encoders.text.TextEncoder")
    return encoder


__all__ = ["TextEncoder", "check_prompts", "encode_in_chunks", "load_text_encoder", "transformer_gflops"]
