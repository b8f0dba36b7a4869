"""Loads externally trained DiT / SiT / Patch Forcing checkpoints into pfbench's ``DiT`` (docs/protocol.md §10).

Three source layouts share one key scheme (DiT's ``models.py``; SiT and the reference ``PatchForcingDiT``
subclass it), so the mapping below is one table:

==============================================  =======================================  ==================
external key                                    pfbench key                              shape
==============================================  =======================================  ==================
``x_embedder.proj.{weight,bias}``               ``patch_embed.{weight,bias}``            (D, C, p, p), (D,)
``pos_embed``                                   ``pos`` (non-persistent buffer)          (1, T, D)
``t_embedder.mlp.{0,2}.{weight,bias}``          ``cond.t_mlp.{0,2}.{weight,bias}``       (D, 256), (D, D)
``y_embedder.embedding_table.weight``           ``cond.y_table.weight``                  (classes + 1, D)
``blocks.i.attn.qkv.*``                         ``blocks.i.qkv.*``                       (3D, D)
``blocks.i.attn.proj.*``                        ``blocks.i.proj.*``                      (D, D)
``blocks.i.mlp.fc1.*`` / ``mlp.fc2.*``          ``blocks.i.mlp.0.*`` / ``mlp.2.*``       (4D, D) / (D, 4D)
``blocks.i.adaLN_modulation.1.*``               ``blocks.i.ada.1.*``                     (6D, D)
``final_layer.adaLN_modulation.1.*``            ``final.ada.1.*``                        (2D, D)
``final_layer.linear.*``                        ``final.linear.*``                       (p·p·C_out, D)
==============================================  =======================================  ==================

Conventions the three sources differ on (read from facebookresearch/DiT ``models.py``, willisma/SiT
``models.py`` + ``transport/path.py``, CompVis/patch-forcing ``patch_flow/models/{dit,pf_transformer}.py`` +
``patch_flow/flow_pf.py``):

- Timestep features are identical everywhere: 256 dims, ``cat[cos, sin]`` of ``t · exp(-ln(1e4)·k/128)``.
  SiT and PF feed ``t`` in [0, 1] unscaled with t = 1 data, x_t = t·x1 + (1-t)·x0, target x1 - x0:
  pfbench's convention, so no time scaling. DiT (``layout="dit"``) is an ADM diffusion model: integer
  t in 0..999 with 999 = noise, predicting ε plus a learned variance. Its weights convert, but it is not a
  velocity field; :func:`external_adapter` refuses it (``TIME_SCALE`` records the 1000 for a future
  ε→v wrapper).
- Learned sigma: DiT and SiT release checkpoints have ``learn_sigma=True``, i.e. ``final_layer.linear``
  emits 2·C channels per pixel, interleaved per patch as (p, p, 2C); the sigma half is dropped here.
- PF: ``final_layer.linear`` emits C + 1 channels per pixel, the last being logvar: the same layout as
  pfbench's difficulty head. Its per-token modulation is ``adaLN_modulation(c)`` on c of shape (B, T, D):
  same weights as the global model, nothing to remap.
- Position embedding: DiT/SiT/PF put the *column* coordinate in the first D/2 channels and the row in the
  second; pfbench's ``sincos_pos_embed`` puts the row first. The checkpoint's ``pos_embed`` is therefore
  copied into ``net.pos`` by :func:`load_external` (it is exact, and agrees on the row-major token order).
- Label table: ``num_classes + 1`` rows when trained with label dropout (row ``num_classes`` = null), as
  pfbench. A table without the null row is refused.

Files are read as released (``external_config``): the reference's ``{"state_dict", "config": DictConfig}``
with its network size taken from the embedded config, SiT/DiT plain state dicts with the size read off
the tensor shapes; a ``--preset``/override that contradicts the file is an error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from pfbench import PfbenchError
from pfbench.adapters.dit import DiTAdapter
from pfbench.adapters.external_config import (
    config_fields,
    embedded_config,
    infer_fields,
    load_weights_only,
    resolve_config,
)
from pfbench.nets.dit import DiT, DiTConfig

Layout = Literal["dit", "sit", "pf"]
LAYOUTS: tuple[str, ...] = ("dit", "sit", "pf")
# Scale external models apply to t before the sinusoidal features (pfbench uses t in [0, 1] unscaled).
TIME_SCALE: dict[str, float] = {"dit": 1000.0, "sit": 1.0, "pf": 1.0}
POS_KEY = "pos"  # pfbench's position buffer is non-persistent: returned by convert, installed by load_external

_TOP = {
    "x_embedder.proj.weight": "patch_embed.weight",
    "x_embedder.proj.bias": "patch_embed.bias",
    "pos_embed": POS_KEY,
    "t_embedder.mlp.0.weight": "cond.t_mlp.0.weight",
    "t_embedder.mlp.0.bias": "cond.t_mlp.0.bias",
    "t_embedder.mlp.2.weight": "cond.t_mlp.2.weight",
    "t_embedder.mlp.2.bias": "cond.t_mlp.2.bias",
    "y_embedder.embedding_table.weight": "cond.y_table.weight",
    "final_layer.adaLN_modulation.1.weight": "final.ada.1.weight",
    "final_layer.adaLN_modulation.1.bias": "final.ada.1.bias",
    "final_layer.linear.weight": "final.linear.weight",
    "final_layer.linear.bias": "final.linear.bias",
}
_BLOCK = {
    "attn.qkv": "qkv",
    "attn.proj": "proj",
    "mlp.fc1": "mlp.0",
    "mlp.fc2": "mlp.2",
    "adaLN_modulation.1": "ada.1",
}
_PREFIXES = ("module.", "_orig_mod.")  # DDP / torch.compile wrappers


def map_key(key: str) -> str | None:
    """The pfbench key for an external key, or None if it has no counterpart."""
    if key in _TOP:
        return _TOP[key]
    parts = key.split(".")
    if len(parts) >= 4 and parts[0] == "blocks" and parts[1].isdigit():
        inner, leaf = ".".join(parts[2:-1]), parts[-1]
        if inner in _BLOCK and leaf in ("weight", "bias"):
            return f"blocks.{parts[1]}.{_BLOCK[inner]}.{leaf}"
    return None


def _strip(key: str) -> str:
    for prefix in _PREFIXES:
        while key.startswith(prefix):
            key = key[len(prefix):]
    return key


def _drop_sigma(w: Tensor, patch: int, channels: int) -> Tensor:
    """Keeps the first ``channels`` of 2·channels output channels; rows are ordered (p, p, C_out)."""
    rest = w.shape[1:]  # () for the bias, (D,) for the weight
    return w.reshape(patch * patch, 2 * channels, *rest)[:, :channels].reshape(patch * patch * channels, *rest)


def convert_state_dict(state: dict[str, Tensor], layout: str, cfg: DiTConfig) -> dict[str, Tensor]:
    """Maps an external DiT/SiT/PF state dict onto pfbench ``DiT`` keys.

    Args:
        state: the external model's state dict (``module.``/``_orig_mod.`` prefixes are stripped).
        layout: ``"dit"``, ``"sit"`` (DiT's keys, global t) or ``"pf"`` (reference ``PatchForcingDiT``).
        cfg: the pfbench network the weights go into.

    Returns:
        A state dict for ``DiT(cfg).load_state_dict(..., strict=True)`` plus the ``"pos"`` entry (1, T, D),
        which is not part of ``DiT.state_dict()`` and must be copied into ``net.pos`` (see ``load_external``).

    Raises:
        PfbenchError: unknown layout, layout/config mismatch, unmapped or missing keys, or shape mismatches
            (all problems are listed in one message).
    """
    if layout not in LAYOUTS:
        raise PfbenchError(f"unknown checkpoint layout {layout!r}; use one of {', '.join(LAYOUTS)}")
    pf = layout == "pf"
    if pf != cfg.per_token_t or pf != cfg.difficulty_head:
        want = "per_token_t=True, difficulty_head=True" if pf else "per_token_t=False, difficulty_head=False"
        raise PfbenchError(f"layout {layout!r} needs a network config with {want}; build it with "
                           f"net_config(preset, kind={'pf' if pf else 'sit'!r})")
    c, p = cfg.in_channels, cfg.patch
    out: dict[str, Tensor] = {}
    unmapped: list[str] = []
    for raw, value in state.items():
        key = _strip(raw)
        if key.startswith(("projectors.", "projector.")):
            continue  # REPA's projection heads (SiT-REPA, reference REPA-PF): training-only, never sampled
        ours = map_key(key)
        if ours is None or (ours.startswith("blocks.") and int(ours.split(".")[1]) >= cfg.depth):
            unmapped.append(key)
            continue
        if ours.startswith("final.linear.") and not pf and value.shape[0] == p * p * 2 * c:
            value = _drop_sigma(value, p, c)  # learn_sigma=True release checkpoints
        out[ours] = value

    expected = _expected_shapes(cfg)
    missing = sorted(set(expected) - set(out))
    bad = [f"{k}: {tuple(out[k].shape)} vs {want}" for k, want in expected.items() if k in out
           and tuple(out[k].shape) != want]
    problems = []
    if unmapped:
        problems.append(f"unmapped keys {sorted(unmapped)[:8]}{' …' if len(unmapped) > 8 else ''}")
    if missing:
        problems.append(f"missing keys {missing[:8]}{' …' if len(missing) > 8 else ''}")
    if bad:
        problems.append(f"shape mismatches (checkpoint vs network) {bad[:6]}")
    if problems:
        table = out.get("cond.y_table.weight")
        hint = ("the label table has num_classes rows, i.e. no null class (trained without label dropout); "
                if table is not None and table.shape[0] == cfg.num_classes else "")
        raise PfbenchError(f"{layout}-layout checkpoint does not fit the network (depth={cfg.depth}, "
                           f"width={cfg.width}, classes={cfg.num_classes}): {'; '.join(problems)}; {hint}"
                           "check the preset/overrides (input_size, in_channels, num_classes) and the layout")
    return out


def _expected_shapes(cfg: DiTConfig) -> dict[str, tuple[int, ...]]:
    """Shapes of every converted key, from a meta-device network (no memory, no init cost)."""
    with torch.device("meta"):
        net = DiT(cfg)
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    shapes[POS_KEY] = (1, cfg.tokens, cfg.width)
    return shapes


def read_external(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any] | None]:
    """Reads an external checkpoint safely and unwraps the common containers.

    Accepts a raw state dict, ``{"ema": sd, "model": sd, ...}`` (EMA preferred; DiT/SiT training
    checkpoints), ``{"state_dict": sd, "config": cfg}`` (the reference repo's ``convert_ckpt.py`` output,
    i.e. its release files; ``cfg`` an OmegaConf ``DictConfig`` or a dict) and Lightning's
    ``{"state_dict": {"ema_model.*": …, "model.*": …}}`` (``ema_model.`` preferred).

    Returns:
        (tensors, the embedded ``{target, params}`` model config or None).
    """
    path = Path(path)
    if not path.is_file():
        raise PfbenchError(f"external checkpoint {path} not found: check the path")
    obj: Any = load_weights_only(path)
    if not isinstance(obj, dict):
        raise PfbenchError(f"{path} holds a {type(obj).__name__}, expected a state dict")
    config = embedded_config(obj["config"], path) if "config" in obj else None
    for key in ("ema", "model", "state_dict"):
        if isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    for prefix in ("ema_model.", "model."):
        picked = {k[len(prefix):]: v for k, v in obj.items() if k.startswith(prefix)}
        if picked:
            obj = picked
            break
    tensors = {k: v for k, v in obj.items() if isinstance(v, Tensor)}
    if not tensors:
        raise PfbenchError(f"{path} holds no tensors under a raw, 'ema', 'model' or 'state_dict' layout "
                           f"(top-level keys: {sorted(obj)[:8]})")
    return tensors, config


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The tensors of an external checkpoint (see :func:`read_external`)."""
    return read_external(path)[0]


def external_config(path: str | Path, layout: str, preset: str | None = None, state: dict[str, Tensor] | None = None,
                    config: dict[str, Any] | None = None, **overrides: Any) -> DiTConfig:
    """The pfbench network an external checkpoint needs: from its embedded config, else its tensor shapes.

    Args:
        path: checkpoint file (read unless ``state`` is given).
        layout: ``"dit"``, ``"sit"`` or ``"pf"``.
        preset: optional network size, e.g. ``"XL/2"``; must agree with the file.
        state, config: the file's tensors and embedded config, if already read.
        **overrides: ``DiTConfig`` fields (as a suite's ``overrides:``); size fields must agree with the file.

    Raises:
        PfbenchError: unknown layout/target/field, or a preset/override that contradicts the file.
    """
    if layout not in LAYOUTS:
        raise PfbenchError(f"unknown checkpoint layout {layout!r}; use one of {', '.join(LAYOUTS)}")
    path = Path(path)
    if state is None:
        state, config = read_external(path)
    if config is not None:
        found, from_file = config_fields(config, layout, path), True
    else:
        try:
            found, from_file = infer_fields({_strip(k): v for k, v in state.items()}), False
        except PfbenchError as err:
            raise PfbenchError(f"{path}: {err}") from None
    return resolve_config(path, layout, found, from_file, preset or None, overrides)


def load_external(path: str | Path, layout: str, preset: str | None = None, **overrides: Any) -> DiT:
    """Builds a pfbench ``DiT`` from an external checkpoint.

    Args:
        path: checkpoint file (see :func:`read_external` for accepted containers).
        layout: ``"dit"``, ``"sit"`` or ``"pf"``.
        preset: network size, e.g. ``"XL/2"``; optional (the file's config or shapes give it), and an error
            if it contradicts the file.
        **overrides: ``DiTConfig`` fields, e.g. ``input_size=32``.

    Returns:
        The network in eval mode with the checkpoint's weights and position embedding.
    """
    if layout not in LAYOUTS:
        raise PfbenchError(f"unknown checkpoint layout {layout!r}; use one of {', '.join(LAYOUTS)}")
    tensors, config = read_external(path)
    cfg = external_config(path, layout, preset, state=tensors, config=config, **overrides)
    state = convert_state_dict(tensors, layout, cfg)
    pos = state.pop(POS_KEY)  # (1, T, D)
    net = DiT(cfg)
    net.load_state_dict(state, strict=True)
    net.get_buffer("pos").copy_(pos)
    return net.eval()


def external_adapter(path: str | Path, layout: str, preset: str | None = None, dedup: bool = True,
                     **overrides: Any) -> DiTAdapter:
    """An ``Adapter`` for an external velocity model (SiT or PF); DiT (ε-prediction diffusion) is refused."""
    if layout == "dit":
        raise PfbenchError("DiT checkpoints are ε-prediction diffusion models (t in 0..999, 999 = noise), not "
                           "velocity fields; use a SiT (layout 'sit') or PF (layout 'pf') checkpoint")
    return DiTAdapter(load_external(path, layout, preset, **overrides), dedup=dedup)
