"""What network an external checkpoint holds: safe reading of release files and their size (docs/protocol.md §10).

The reference repository releases ``pft-{b,xl}_step400k_ema.ckpt`` as written by its
``scripts/convert_ckpt.py``: ``{"state_dict": sd, "config": cfg}`` where ``cfg`` is the model entry of the
training hyper-parameters, an OmegaConf ``DictConfig`` ``{target: <class path>, params: {depth, hidden_size,
num_heads, patch_size, input_size, in_channels, num_classes, ...}}`` (pickled with the parent config it
hangs off). SiT and DiT release plain state dicts. This module

- reads either with ``torch.load(weights_only=True)``, allowing exactly the OmegaConf container/node types
  such a config pickles to (:data:`OMEGACONF_GLOBALS`, found with
  ``torch.serialization.get_unsafe_globals_in_checkpoint``) for this one call; any other pickled object
  (an argparse namespace, a class instance, a function reference) is refused before it is built;
- turns the embedded config into ``DiTConfig`` fields without resolving interpolations (plain values only),
  or infers them from tensor shapes when there is no config;
- checks that a ``--preset`` / overrides the user gives agree with the file (a contradiction is an error).
"""

from __future__ import annotations

import collections
import dataclasses
import difflib
import pickle
import re
import typing
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pfbench import PfbenchError
from pfbench.nets.dit import DiTConfig
from pfbench.nets.presets import PRESETS

# Reference class path -> pfbench layout. Its ``dit.DiT`` is a flow (velocity) model with SiT's conventions.
TARGETS: dict[str, str] = {
    "patch_flow.models.pf_transformer.PatchForcingDiT": "pf",
    "patch_flow.models.pf_transformer_repa.REPAPatchForcingDiT": "pf",
    "patch_flow.models.dit.DiT": "sit",
}
# Reference constructor argument -> DiTConfig field; the defaults are the reference's (XL/2 on 4×32×32).
_PARAMS = {"input_size": "input_size", "patch_size": "patch", "in_channels": "in_channels", "depth": "depth",
           "hidden_size": "width", "num_heads": "heads", "mlp_ratio": "mlp_ratio", "num_classes": "num_classes"}
_DEFAULTS: dict[str, Any] = {"input_size": 32, "patch": 2, "in_channels": 4, "depth": 28, "width": 1152,
                             "heads": 16, "mlp_ratio": 4.0, "num_classes": 1000}
# Accepted and irrelevant to inference (compilation, training-only heads, label dropout: the table shows it).
_IGNORED = {"compile", "class_dropout_prob", "return_sigma", "learn_sigma", "predict_uncertainty", "out_channels",
            "z_dim", "encoder_depth", "projector_dim"}
SIZE_FIELDS = tuple(_DEFAULTS)


def omegaconf_globals() -> list[Any]:
    """The globals a pickled OmegaConf ``DictConfig`` (with parent nodes and lists) refers to; nothing else."""
    from omegaconf import DictConfig, ListConfig
    from omegaconf.base import ContainerMetadata, Metadata
    from omegaconf.nodes import AnyNode

    return [DictConfig, ListConfig, ContainerMetadata, Metadata, AnyNode, (typing.Any, "typing.Any"),
            dict, list, int, collections.defaultdict]


def load_weights_only(path: Path) -> Any:
    """``torch.load(weights_only=True)`` with :func:`omegaconf_globals` allowed for this call only."""
    allow = getattr(torch.serialization, "safe_globals", None)  # torch >= 2.5
    try:
        if allow is None:
            return torch.load(path, map_location="cpu", weights_only=True)
        with allow(omegaconf_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        if found is None:  # random bytes, or pickle opcodes weights-only loading does not run
            why = re.search(r"WeightsUnpickler error:\s*(.+?)\n\n", str(err))
            text = why.group(1) if why else " ".join(str(err).split())
            raise PfbenchError(f"{path} is not a readable weights-only torch checkpoint ({text[:120]})") from None
        raise PfbenchError(
            f"{path} holds a pickled {found.group(1)} (not tensors, plain data or an OmegaConf model config) and "
            "cannot be read safely; nothing was run: re-save just the weights from a trusted copy, e.g. "
            "torch.save(sd['ema'], 'ema.pt')"
            + ("" if allow is not None else " (or use torch>=2.5, which can read OmegaConf configs safely)")
        ) from None
    except (RuntimeError, EOFError, OSError) as err:
        first = " ".join(str(err).split()).split(". ")[0]
        raise PfbenchError(f"{path} is not a readable torch checkpoint ({first[:120]})") from None


def embedded_config(raw: Any, path: Path) -> dict[str, Any]:
    """The reference ``{target, params}`` model config as plain data (interpolations are never resolved)."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(raw, DictConfig):
        try:
            raw = OmegaConf.to_container(raw, resolve=False)
        except Exception as err:  # a crafted node tree: refuse rather than guess
            raise PfbenchError(f"{path}: its 'config' is a malformed OmegaConf config ({type(err).__name__})") \
                from None
    if not isinstance(raw, dict) or not isinstance(raw.get("target"), str) or not isinstance(
            raw.get("params", {}), dict):
        raise PfbenchError(f"{path}: its 'config' holds a {type(raw).__name__}, not the reference's model config "
                           "{target: ..., params: {...}}")
    return {"target": raw["target"], "params": dict(raw.get("params") or {})}


def config_fields(config: dict[str, Any], layout: str, path: Path) -> dict[str, Any]:
    """``DiTConfig`` size fields from an embedded config; errors on an unknown target or parameter."""
    target, params = config["target"], config["params"]
    if target not in TARGETS:
        raise PfbenchError(f"{path}: model target {target!r} is not supported (known: {', '.join(TARGETS)})")
    if TARGETS[target] != layout:
        raise PfbenchError(f"{path} holds a {target.rsplit('.', 1)[-1]} ({target}): use --layout {TARGETS[target]}"
                           f", not {layout}")
    unknown = sorted(set(params) - set(_PARAMS) - _IGNORED)
    if unknown:
        raise PfbenchError(f"{path}: model config has parameters pfbench does not know: {unknown}")
    if layout == "pf" and (params.get("predict_uncertainty", True) is not True or params.get("learn_sigma")):
        raise PfbenchError(f"{path}: a PatchForcingDiT needs predict_uncertainty=True and learn_sigma=False")
    if params.get("out_channels") not in (None, params.get("in_channels", _DEFAULTS["in_channels"])):
        raise PfbenchError(f"{path}: out_channels={params['out_channels']} differs from in_channels")
    fields = dict(_DEFAULTS)
    for theirs, ours in _PARAMS.items():
        if theirs in params:
            value = params[theirs]
            ok = isinstance(value, (int, float)) if ours == "mlp_ratio" else isinstance(value, int)
            if not ok or isinstance(value, bool):
                raise PfbenchError(f"{path}: model config {theirs}={value!r} is not a number")
            fields[ours] = value
    return fields


def infer_fields(state: dict[str, Tensor]) -> dict[str, Any]:
    """Size fields read off the tensor shapes of a DiT-keyed state dict (keys already unprefixed).

    ``heads`` is not in the shapes (qkv is (3D, D) for any head count); ``num_classes`` assumes the label
    table carries the null row (label dropout), as every DiT/SiT/PF release does.
    """
    fields: dict[str, Any] = {}
    embed = state.get("x_embedder.proj.weight")  # (D, C, p, p)
    if embed is not None and (embed.ndim != 4 or embed.shape[2] != embed.shape[3]):
        raise PfbenchError(f"x_embedder.proj.weight has shape {tuple(embed.shape)}; a patch embedding is "
                           "(width, channels, patch, patch): the file is damaged or of another network")
    if embed is not None:
        fields.update(width=embed.shape[0], in_channels=embed.shape[1], patch=embed.shape[2])
        pos = state.get("pos_embed")  # (1, T, D)
        tokens = pos.shape[1] if pos is not None and pos.ndim == 3 else 0
        side = round(tokens**0.5)
        if side and side * side == tokens:
            fields["input_size"] = side * embed.shape[2]
        fc1 = state.get("blocks.0.mlp.fc1.weight")  # (hidden, D)
        if fc1 is not None:
            fields["mlp_ratio"] = fc1.shape[0] / embed.shape[0]
    blocks = {int(k.split(".")[1]) for k in state if k.startswith("blocks.") and k.split(".")[1].isdigit()}
    if blocks:
        fields["depth"] = max(blocks) + 1
    table = state.get("y_embedder.embedding_table.weight")  # (classes + 1, D)
    if table is not None:
        fields["num_classes"] = table.shape[0] - 1
    return fields


def _heads_for(width: int) -> int | None:
    """The head count every preset of this width uses (DiT's sizes: 64- or 72-dim heads), if unambiguous."""
    heads = {cfg.heads for cfg in PRESETS.values() if cfg.width == width}
    return heads.pop() if len(heads) == 1 else None


def check_overrides(overrides: dict[str, Any]) -> None:
    """Unknown ``DiTConfig`` field names are one-line errors with the nearest name."""
    known = [f.name for f in dataclasses.fields(DiTConfig)]
    for key in overrides:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            raise PfbenchError(f"unknown network field {key!r}" + (f"; did you mean {close[0]!r}?" if close else ""))


def resolve_config(path: Path, layout: str, found: dict[str, Any], from_file: bool, preset: str | None,
                   overrides: dict[str, Any]) -> DiTConfig:
    """The network for an external file: its own size (``found``), agreed with the user's preset/overrides.

    Args:
        path: the file (for messages).
        layout: ``"dit"``, ``"sit"`` or ``"pf"``.
        found: size fields from the embedded config or the tensor shapes.
        from_file: ``found`` comes from an embedded config (else from shapes).
        preset: a preset the user named, or None.
        overrides: ``DiTConfig`` fields the user gave.
    """
    check_overrides(overrides)
    if preset is not None and preset not in PRESETS:
        from pfbench.nets.presets import net_config

        net_config(preset)  # raises the did-you-mean error
    wanted = {k: getattr(PRESETS[preset], k) for k in SIZE_FIELDS} if preset is not None else {}
    wanted.update(overrides)
    source = "embedded config" if from_file else "weights"
    clash = [f"{k} {wanted[k]} vs {found[k]}" for k in SIZE_FIELDS if k in wanted and k in found
             and wanted[k] != found[k]]
    if clash:
        given = " and ".join(([f"--preset {preset}"] if preset else []) + [f"{k}={v}" for k, v in overrides.items()])
        hint = " (the label table has num_classes + 1 rows)" if any(c.startswith("num_classes") for c in clash) \
            and not from_file else ""
        raise PfbenchError(f"{given} contradicts {path}'s {source}: {', '.join(clash)} (given vs file){hint}; "
                           "drop --preset/overrides to use the file's size")
    fields = {**wanted, **found, **{k: v for k, v in overrides.items() if k not in found}}
    if "width" not in fields:
        raise PfbenchError(f"{path}: no network width: its weights have no patch embedding (x_embedder.proj.weight) "
                           f"and none was given; is it a {layout} checkpoint? (or give --preset)")
    if "heads" not in fields:
        heads = _heads_for(fields.get("width", 0))
        if heads is None:
            raise PfbenchError(f"{path}: the head count of a width-{fields.get('width')} network is not in its "
                               "weights; give --preset or --override heads=N")
        fields["heads"] = heads
    pf = layout == "pf"
    return DiTConfig(**{**dataclasses.asdict(DiTConfig(per_token_t=pf, difficulty_head=pf)), **fields})


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["num_classes=10", "input_size=16"]`` -> typed ``DiTConfig`` fields (as a suite's ``overrides:``)."""
    types = {f.name: str(f.type) for f in dataclasses.fields(DiTConfig)}
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = (s.strip() for s in item.partition("="))
        if not sep or not key:
            raise PfbenchError(f"--override {item!r}: expected KEY=VALUE, e.g. num_classes=10")
        check_overrides({key: None})
        kind = types[key]
        try:
            if "None" in kind and text.lower() in ("none", "null"):
                out[key] = None
            elif kind == "bool":
                out[key] = {"true": True, "false": False}[text.lower()]
            else:
                out[key] = float(text) if kind == "float" else int(text)
        except (KeyError, ValueError):
            raise PfbenchError(f"--override {item!r}: {key} takes {kind.replace(' | None', ' or none')}") from None
    return out
