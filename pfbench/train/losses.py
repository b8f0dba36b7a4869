"""Training losses (docs/protocol.md §5): flow matching, Patch Forcing's difficulty NLL and REPA alignment.

All losses are computed in float32 even when the network ran under bf16 autocast.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from pfbench import PfbenchError

LOGVAR_MIN = -30.0
LOGVAR_MAX = 20.0
NLL_WEIGHT = 0.01
_LOG_2PI = math.log(2 * math.pi)


def _check_pair(v: Tensor, u: Tensor, where: str) -> None:
    if v.shape != u.shape:
        raise PfbenchError(
            f"{where}: velocity {tuple(v.shape)} and target {tuple(u.shape)} differ; both must be (B, C, H, W)"
        )


def flow_matching_loss(v: Tensor, u: Tensor) -> Tensor:
    """Mean squared velocity error ``mean((v − u)²)`` over all elements.

    Args:
        v: (B, C, H, W) predicted velocity.
        u: (B, C, H, W) target velocity ``x1 − x0``.

    Returns:
        Scalar float32 loss.
    """
    _check_pair(v, u, "flow_matching_loss")
    return (v.float() - u.float()).square().mean()


def difficulty_nll(logvar: Tensor, v: Tensor, u: Tensor) -> Tensor:
    """Gaussian NLL of the velocity error under a per-pixel predicted variance.

    ``s = clamp(logvar, −30, 20)``; ``L = mean(½(log 2π + s + (u − sg(v))²·e^(−s)))`` over all
    B·C·H·W elements, ``s`` broadcast over channels. The velocity is detached, so this term trains
    only the difficulty head; its optimum is ``e^s = E[(u − v)²]`` per pixel (mean over channels).
    Outside the clamp range the gradient with respect to ``logvar`` is zero.

    Args:
        logvar: (B, 1, H, W) predicted log-variance.
        v: (B, C, H, W) predicted velocity (gradient is stopped).
        u: (B, C, H, W) target velocity.

    Returns:
        Scalar float32 loss.
    """
    _check_pair(v, u, "difficulty_nll")
    b, _, h, w = v.shape
    if logvar.shape != (b, 1, h, w):
        raise PfbenchError(
            f"difficulty_nll: logvar {tuple(logvar.shape)} must be (B, 1, H, W) = {(b, 1, h, w)} "
            "(one value per pixel, shared by the channels)"
        )
    s = logvar.float().clamp(LOGVAR_MIN, LOGVAR_MAX)  # (B, 1, H, W)
    err = (u.float() - v.detach().float()).square()  # (B, C, H, W)
    nll = 0.5 * (_LOG_2PI + s + err * torch.exp(-s))  # (B, C, H, W) by broadcasting s
    return nll.mean()


def pf_loss(
    v: Tensor, logvar: Tensor | None, u: Tensor, nll_weight: float = NLL_WEIGHT
) -> tuple[Tensor, dict[str, Tensor]]:
    """Patch Forcing objective ``L_fm + λ·L_nll``.

    Args:
        v: (B, C, H, W) predicted velocity.
        logvar: (B, 1, H, W) difficulty head output, or None for a model without the head
            (then the total is ``L_fm`` and ``parts`` has only ``"fm"``).
        u: (B, C, H, W) target velocity.
        nll_weight: λ (default 0.01, docs/protocol.md §5).

    Returns:
        ``(total, parts)``: the scalar loss to backpropagate and detached ``{"fm": …, "nll": …}``
        for logging.
    """
    if not (math.isfinite(nll_weight) and nll_weight >= 0):
        raise PfbenchError(f"pf_loss: nll_weight={nll_weight} must be a finite number >= 0")
    fm = flow_matching_loss(v, u)
    if logvar is None:
        return fm, {"fm": fm.detach()}
    nll = difficulty_nll(logvar, v, u)
    return fm + nll_weight * nll, {"fm": fm.detach(), "nll": nll.detach()}


def repa_loss(proj: Tensor, z: Tensor) -> Tensor:
    """REPA alignment loss ``mean over batch and tokens of −cos(proj, z)`` (docs/protocol.md §5).

    A value of −1 means every projected token points the same way as its encoder token; the cosine makes
    the loss blind to the target's scale, so encoders need no feature normalisation.

    Args:
        proj: (B, T, D) projector output on the DiT's tokens.
        z: (B, T, D) frozen encoder tokens on the same token grid (no gradient flows into them).

    Returns:
        Scalar float32 loss in [−1, 1].
    """
    if proj.dim() != 3 or proj.shape != z.shape:
        raise PfbenchError(
            f"repa_loss: projection {tuple(proj.shape)} and target {tuple(z.shape)} differ; both must be (B, T, D) "
            "(resample the encoder tokens to the DiT's grid with pfbench.train.repa.tokens_for_grid)"
        )
    cos = torch.nn.functional.cosine_similarity(proj.float(), z.detach().float(), dim=-1)  # (B, T)
    return -cos.mean()


__all__ = [
    "LOGVAR_MAX", "LOGVAR_MIN", "NLL_WEIGHT", "difficulty_nll", "flow_matching_loss", "pf_loss", "repa_loss",
]
