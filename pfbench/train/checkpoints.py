"""The only checkpoint reader/writer (docs/protocol.md §5): atomic writes, safe (weights-only) reads.

A checkpoint is one ``torch.save`` file holding plain data only::

    {"format": "pfbench-ckpt/1", "pfbench_version": str, "step": int,
     "config": dict,        # the resolved TrainSpec (TrainSpec.to_dict())
     "net_config": dict,    # dataclasses.asdict(DiTConfig) of the trained network
     "model": state_dict, "ema": state_dict, "optimizer": state_dict | None,
     "rng": {"torch": ByteTensor, "cuda": [ByteTensor], "numpy": {...}, "python": {...}}}

Reading never unpickles code (``torch.load(weights_only=True)``); every failure is a one-line
:class:`~pfbench.PfbenchError` naming the file and what is wrong.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import random
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pfbench import PfbenchError, __version__
from pfbench.io import atomic_write, content_key
from pfbench.nets import DiT, DiTConfig, T2IConfig, T2INet, build_net, config_from_dict

FORMAT = "pfbench-ckpt/1"
_REQUIRED = ("format", "step", "config", "net_config", "model", "ema")


@dataclass(frozen=True)
class Checkpoint:
    """A loaded training checkpoint (plain data; tensors on the requested device).

    Attributes:
        path: file it was read from.
        step: optimiser steps taken.
        config: resolved training config (``TrainSpec.to_dict()``).
        net_config: the network's ``DiTConfig`` as a dict.
        model: raw model state dict.
        ema: EMA model state dict.
        optimizer: optimiser state dict, or None if the file was saved without it.
        rng: RNG states (torch, cuda, numpy, python) at save time.
        version: pfbench version that wrote the file.
    """

    path: Path
    step: int
    config: dict[str, Any]
    net_config: dict[str, Any]
    model: dict[str, Tensor]
    ema: dict[str, Tensor]
    optimizer: dict[str, Any] | None
    rng: dict[str, Any]
    version: str


def capture_rng_state() -> dict[str, Any]:
    """Returns the global torch/CUDA/numpy/python RNG states as weights-only-loadable data."""
    _, keys, pos, has_gauss, cached = typing.cast(
        tuple[str, np.ndarray, int, int, float], np.random.get_state()
    )
    py_version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": py_version, "state": list(py_state), "gauss": py_gauss},
    }


def restore_rng_state(rng: dict[str, Any]) -> None:
    """Restores the states saved by :func:`capture_rng_state` (missing parts are skipped)."""
    if "torch" in rng:
        torch.set_rng_state(rng["torch"].cpu())
    if rng.get("cuda") and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in rng["cuda"]])
    if "numpy" in rng:
        n = rng["numpy"]
        keys = n["keys"].numpy().astype(np.uint32)
        np.random.set_state(("MT19937", keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    if "python" in rng:
        p = rng["python"]
        random.setstate((p["version"], tuple(p["state"]), p["gauss"]))


def save_checkpoint(
    path: Path,
    *,
    step: int,
    config: dict[str, Any],
    net_config: dict[str, Any],
    model: dict[str, Tensor],
    ema: dict[str, Tensor],
    optimizer: dict[str, Any] | None,
    rng: dict[str, Any] | None = None,
) -> Path:
    """Writes a checkpoint atomically (``pfbench.io.atomic_write``: temp file in the same folder, fsync, rename).

    A reader never sees a half-written file: a crash leaves the previous version intact.

    Returns:
        ``path``.
    """
    payload = {
        "format": FORMAT,
        "pfbench_version": __version__,
        "step": int(step),
        "config": config,
        "net_config": net_config,
        "model": model,
        "ema": ema,
        "optimizer": optimizer,
        "rng": capture_rng_state() if rng is None else rng,
    }
    return atomic_write(path, lambda f: torch.save(payload, f))


def weights_sha256(ckpt: Checkpoint) -> str:
    """Content id of a checkpoint's weights: sha256 over step, network config and the sorted ``model``/``ema``
    tensors (name, dtype, shape, bytes).

    Two identical trainings write files with different bytes (``torch.save`` stores a random serialization
    id), so a file's sha256 cannot find the cells of a model retrained on another machine; this id can.
    Optimizer and RNG states are left out: they do not change the pixels.
    """
    parts: list[bytes | str] = [str(ckpt.step), json.dumps(ckpt.net_config, sort_keys=True, default=str)]
    for group, state in (("model", ckpt.model), ("ema", ckpt.ema)):
        for name in sorted(state):
            t = state[name].detach().cpu().contiguous()
            parts += [f"{group}.{name}", str(t.dtype), str(tuple(t.shape)), t.reshape(-1).view(torch.uint8).numpy().tobytes()
                      if t.numel() else b""]
    return content_key(*parts)


def _first_line(err: BaseException) -> str:
    """``Type: first sentence`` of an exception, at most ~100 characters, on one line."""
    text = " ".join(str(err).split()).split(". ")[0][:100]
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def load_checkpoint(path: Path | str, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Reads a pfbench checkpoint with ``torch.load(weights_only=True)``.

    Args:
        path: the ``.pt`` file.
        map_location: device to load tensors onto.

    Raises:
        PfbenchError: the file is missing, truncated/corrupt, or not a pfbench checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise PfbenchError(f"checkpoint {path} not found: check the path, or train one with `pfbench train`")
    try:
        raw = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if "unsupported global" not in str(err).lower():  # random bytes also end up here
            raise PfbenchError(
                f"checkpoint {path} is unreadable, truncated or corrupt ({_first_line(err)}); "
                "delete it and resume from an earlier checkpoint"
            ) from None
        raise PfbenchError(
            f"checkpoint {path} holds pickled objects other than tensors and plain data; pfbench loads "
            "weights only (a checkpoint from another tool needs an adapter)"
        ) from None
    except Exception as err:  # truncated zip, garbage bytes, empty file, ...
        raise PfbenchError(
            f"checkpoint {path} is unreadable, truncated or corrupt ({_first_line(err)}); "
            "delete it and resume from an earlier checkpoint"
        ) from None
    if not isinstance(raw, dict) or any(k not in raw for k in _REQUIRED):
        missing = [k for k in _REQUIRED if not isinstance(raw, dict) or k not in raw]
        raise PfbenchError(f"checkpoint {path} is not a pfbench checkpoint (missing: {', '.join(missing)})")
    if raw["format"] != FORMAT:
        raise PfbenchError(f"checkpoint {path} has format {raw['format']!r}; this pfbench reads {FORMAT!r}")
    return Checkpoint(
        path=path,
        step=int(raw["step"]),
        config=raw["config"],
        net_config=raw["net_config"],
        model=raw["model"],
        ema=raw["ema"],
        optimizer=raw.get("optimizer"),
        rng=raw.get("rng") or {},
        version=str(raw.get("pfbench_version", "?")),
    )


def check_state_compatible(module: torch.nn.Module, state: dict[str, Tensor], where: str) -> None:
    """Raises a one-line PfbenchError if ``state`` does not fit ``module`` (keys or shapes)."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys (e.g. {missing[0]!r})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]!r})")
    if shapes:
        k = shapes[0]
        problems.append(
            f"{len(shapes)} shape mismatches (e.g. {k!r}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)})"
        )
    if problems:
        raise PfbenchError(f"{where} does not match its network config: {'; '.join(problems)}")


def build_model_from_checkpoint(ckpt: Checkpoint, use_ema: bool = True) -> DiT | T2INet:
    """Builds the trained network (a ``DiT``, or a ``T2INet`` for text-to-image) from a checkpoint, in eval mode.

    Args:
        ckpt: a loaded checkpoint.
        use_ema: load the EMA weights (default; what samplers should use) instead of the raw ones.

    Raises:
        PfbenchError: the stored network config or weights do not fit the current ``DiT``.
    """
    known = {f.name for f in dataclasses.fields(T2IConfig if "text_dim" in ckpt.net_config else DiTConfig)}
    unknown = sorted(set(ckpt.net_config) - known)
    if unknown:
        raise PfbenchError(f"checkpoint {ckpt.path} has network config fields this pfbench lacks: {unknown}")
    try:
        net = build_net(config_from_dict(ckpt.net_config))
    except (TypeError, ValueError, PfbenchError) as err:
        raise PfbenchError(f"checkpoint {ckpt.path}: cannot build its network ({_first_line(err)})") from None
    state = ckpt.ema if use_ema else ckpt.model
    check_state_compatible(net, state, f"checkpoint {ckpt.path} ({'ema' if use_ema else 'model'} weights)")
    net.load_state_dict(state, strict=True)
    return net.eval().requires_grad_(False)


def export_weights(src: Path | str, dst: Path | str) -> Path:
    """Writes a small, inference-only copy of a checkpoint: EMA weights, configs, step; no optimiser or RNG.

    The EMA tensors serve as both ``model`` and ``ema`` (stored once), so the file loads like any other
    checkpoint but cannot be resumed from.
    """
    ckpt = load_checkpoint(src)
    ema = {k: v.detach().clone().contiguous() for k, v in ckpt.ema.items()}
    return save_checkpoint(Path(dst), step=ckpt.step, config=ckpt.config, net_config=ckpt.net_config,
                           model=ema, ema=ema, optimizer=None, rng={})
