"""Training configuration (docs/protocol.md §5): ``TrainSpec`` and its parts, strictly parsed from plain YAML data.

What a run computes is fixed here; ``pfbench.train.loop`` runs it. ``spec_from_dict`` is the only way user input
becomes a ``TrainSpec``: unknown keys name the nearest valid key, wrong types and values are one-line errors.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pfbench import FieldError, PfbenchError
from pfbench.config import Builder, Wording
from pfbench.data.heterogeneity import DEFAULT_HETEROGENEITY, check_heterogeneity
from pfbench.data.train_data import TRAIN_DATASETS, data_shape
from pfbench.nets.dit import DiTConfig
from pfbench.nets.presets import T2I_KINDS, net_config, t2i_config
from pfbench.nets.t2i import T2IConfig
from pfbench.train.repa import ENCODER_DIMS
from pfbench.train.timesteps import make_timestep_sampler


@dataclass(frozen=True)
class DataSpec:
    """Training data: the built-in ``embedded`` dataset (train split: ``resolution``, ``size``, ``seed``,
    ``heterogeneity``: ``pfbench.data.heterogeneity``) or ``latents``, a pre-encoded VAE latent store at ``path``
    (``pfbench data encode``; size and shape from it)."""

    name: str = "embedded"
    resolution: int = 16
    size: int = 50_000
    seed: int = 0
    path: str | None = None
    heterogeneity: float = DEFAULT_HETEROGENEITY


@dataclass(frozen=True)
class TimestepSpec:
    """A registered training timestep sampler (docs/protocol.md §4) and its parameters."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RepaSpec:
    """REPA (docs/protocol.md §5): align a projection of the tokens after block ``depth`` with a frozen encoder's patch
    tokens of the clean image; ``L += weight · mean(−cos)``.

    Attributes:
        encoder: ``"dinov2-vitb14"`` (the paper's) or ``"embedded"`` (CPU-sized, shipped; ``pfbench.train.repa``).
        depth: 1-based block whose output is projected (8 for XL/2 in the paper).
        weight: loss weight (paper 0.5).
        weights: DINOv2 weights file or folder (None: ``$PFBENCH_WEIGHTS``, then the torch hub cache).
        hidden: projector MLP width (docs/protocol.md §5 and the paper: 2048). A narrower one keeps REPA affordable on CPU-sized
            networks, where the 2048-wide projector costs more than the blocks.
    """

    encoder: str = "dinov2-vitb14"
    depth: int = 8
    weight: float = 0.5
    weights: str | None = None
    hidden: int = 2048


@dataclass(frozen=True)
class TextSpec:
    """Text conditioning of a text-to-image run (kinds ``pf_t2i`` / ``sit_t2i``; docs/protocol.md §3).

    Attributes:
        encoder: frozen text encoder (``pfbench.encoders.text.load_text_encoder`` name; ``tiny_text`` is the
            embedded default, shipped with pfbench).
        weights: local file or folder of an external encoder (None: resolved offline).
        dropout: probability that a caption is replaced by the empty prompt ``""``, the unconditional input of
            classifier-free guidance (docs/protocol.md §3: 0.1).
    """

    encoder: str = "tiny_text"
    weights: str | None = None
    dropout: float = 0.1


@functools.lru_cache(maxsize=8)
def text_shape(encoder: str, weights: str | None) -> tuple[int, int]:
    """(dim, max_len) of a text encoder, which size the network's text input; loads it once per process."""
    from pfbench.encoders.text import load_text_encoder

    enc = load_text_encoder(encoder, "cpu", weights)
    return int(enc.dim), int(enc.max_len)


@dataclass(frozen=True)
class TrainSpec:
    """Everything that defines a training run (paper defaults, docs/protocol.md §5).

    Attributes:
        model: network preset name (``pfbench.nets.PRESETS``).
        model_overrides: ``DiTConfig`` fields to change; data-bound fields (input_size, in_channels,
            num_classes) default to the dataset's and must agree with it.
        kind: ``"pf"`` (per-token t, difficulty head) or ``"sit"`` (global t baseline); ``"pf_t2i"`` / ``"sit_t2i"``
            for their text-to-image versions (``pfbench.nets.t2i``; the data's captions are the condition).
        data: dataset spec.
        timesteps: training timestep sampler; None → ``ltg`` for pf, ``ltg`` with m = 0.5 for pf_t2i (docs/protocol.md §4),
            ``global_uniform`` for sit and sit_t2i.
        steps: optimiser steps in total. batch_size: the GLOBAL batch (split over DDP ranks).
        ema_warmup: cap the EMA decay at (1 + k) / (10 + k) at step k, so a short run's EMA is not dominated
            by its initial weights (off by default: the paper uses a plain 0.9999 over 400k steps).
        ckpt_every: steps between ``last.pt`` writes. keep_every: also keep ``step_XXXXXX.pt`` every so
            many steps (0 = never). log_every: steps between loss syncs / log lines.
        repa: REPA alignment loss (None = off); sets the network's ``repa_depth``/``repa_dim``.
        text: text encoder and text dropout of the text-to-image kinds (None there = ``TextSpec()``; must be
            None for class-conditional kinds, whose ``label_dropout`` plays the same role).
        device: ``"auto"`` | ``"cpu"`` | ``"cuda"``. amp: ``"auto"`` (bf16 on CUDA, fp32 on CPU) | ``"bf16"`` |
            ``"fp32"``. threads: CPU intra-op threads (None = torch default).
        compile: ``torch.compile`` the training forward (CUDA only; every step has the same shapes, so it is
            compiled once). checkpointing: activation checkpointing of the transformer blocks (recomputed in
            the backward pass: about a third more compute, far less memory, e.g. XL/2 on smaller GPUs; the same
            numbers). Neither changes what is computed, so a run may resume with them changed.
    """

    model: str = "cpu-s"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    kind: str = "pf"
    data: DataSpec = field(default_factory=DataSpec)
    timesteps: TimestepSpec | None = None
    steps: int = 100_000
    batch_size: int = 32
    lr: float = 1e-4
    warmup: int = 1000
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.9999
    ema_warmup: bool = False
    label_dropout: float = 0.1
    nll_weight: float = 0.01
    repa: RepaSpec | None = None
    text: TextSpec | None = None
    seed: int = 0
    ckpt_every: int = 1000
    keep_every: int = 0
    log_every: int = 50
    device: str = "auto"
    amp: str = "auto"
    threads: int | None = None
    compile: bool = False
    checkpointing: bool = False

    def __post_init__(self) -> None:
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise PfbenchError(f"train config: {what}")

        need(self.kind in ("pf", "sit", *T2I_KINDS), f"kind={self.kind!r} must be 'pf', 'sit', 'pf_t2i' or 'sit_t2i'")
        need(self.data.name in TRAIN_DATASETS, f"data.name={self.data.name!r} must be one of {', '.join(TRAIN_DATASETS)}")
        need((self.data.path is not None) == (self.data.name == "latents"), "data.path is for (and required by) "
             "data.name 'latents'")
        need(self.data.size >= 1 and self.data.resolution >= 1, "data.size and data.resolution must be >= 1")
        check_heterogeneity(self.data.heterogeneity, "train config: data")
        need(self.data.name == "embedded" or self.data.heterogeneity == DEFAULT_HETEROGENEITY,
             "data.heterogeneity is for data.name 'embedded'")
        for name in ("steps", "batch_size", "ckpt_every", "log_every"):
            need(getattr(self, name) >= 1, f"{name}={getattr(self, name)} must be >= 1")
        need(self.warmup >= 0 and self.keep_every >= 0, "warmup and keep_every must be >= 0")
        need(self.lr > 0 and math.isfinite(self.lr), f"lr={self.lr} must be a positive number")
        need(
            self.weight_decay >= 0 and self.grad_clip >= 0,
            "weight_decay and grad_clip must be >= 0 (0 = off)",
        )
        need(0 <= self.ema_decay < 1, f"ema_decay={self.ema_decay} must be in [0, 1)")
        need(0 <= self.label_dropout < 1, f"label_dropout={self.label_dropout} must be in [0, 1)")
        need(self.nll_weight >= 0, f"nll_weight={self.nll_weight} must be >= 0")
        need(
            self.device in ("auto", "cpu", "cuda"), f"device={self.device!r} must be 'auto', 'cpu' or 'cuda'"
        )
        need(self.amp in ("auto", "bf16", "fp32"), f"amp={self.amp!r} must be 'auto', 'bf16' or 'fp32'")
        need(self.threads is None or self.threads >= 1, f"threads={self.threads} must be >= 1 or null")
        if self.repa is not None:
            r = self.repa
            close = difflib.get_close_matches(r.encoder, list(ENCODER_DIMS), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            need(r.encoder in ENCODER_DIMS, f"repa.encoder={r.encoder!r} must be one of {', '.join(ENCODER_DIMS)}"
                 + hint)
            need(r.depth >= 1, f"repa.depth={r.depth} must be >= 1")
            need(r.hidden >= 1, f"repa.hidden={r.hidden} must be >= 1")
            need(r.weight > 0 and math.isfinite(r.weight), f"repa.weight={r.weight} must be > 0 (remove the repa "
                 "section to train without REPA)")
            need(r.weights is None or r.encoder != "embedded", "repa.weights is for DINOv2 encoders; the "
                 "'embedded' encoder is a shipped asset")
        if self.t2i:
            if self.text is None:
                object.__setattr__(self, "text", TextSpec())
            assert self.text is not None
            need(0 <= self.text.dropout < 1, f"text.dropout={self.text.dropout} must be in [0, 1)")
            need(self.repa is None, "repa is not available for the text-to-image kinds; remove the repa section")
        else:
            need(self.text is None, f"text is for the text-to-image kinds (pf_t2i, sit_t2i), not kind={self.kind!r}")
        if self.timesteps is None:
            default = {"pf": TimestepSpec("ltg"), "pf_t2i": TimestepSpec("ltg", {"m": 0.5})}.get(
                self.kind, TimestepSpec("global_uniform"))
            object.__setattr__(self, "timesteps", default)

    @property
    def t2i(self) -> bool:
        """A text-to-image run (kind ``pf_t2i`` or ``sit_t2i``)."""
        return self.kind in T2I_KINDS

    @property
    def per_token(self) -> bool:
        """A Patch Forcing run (per-token timesteps): kind ``pf`` or ``pf_t2i``."""
        return self.kind in ("pf", "pf_t2i")

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (what checkpoints store and ``spec_from_dict`` reads back). The speed switches are left
        out at their defaults (and ``data.heterogeneity``) and ``text`` appears only in text-to-image runs, so the hashes of runs made before
        they existed (suite run folders) stay the same."""
        out = dataclasses.asdict(self)
        for key in ("compile", "checkpointing"):
            if not out[key]:
                del out[key]
        if out["data"]["heterogeneity"] == DEFAULT_HETEROGENEITY:
            del out["data"]["heterogeneity"]
        if out["text"] is None:
            del out["text"]
        return out

    def net_config(self) -> DiTConfig | T2IConfig:
        """The network's config: preset + kind + dataset-bound fields (+ the text encoder's width and length for
        the text-to-image kinds) + overrides."""
        overrides = _CONFIG.fields(T2IConfig if self.t2i else DiTConfig, self.model_overrides, "model_overrides")
        channels, side, classes = data_shape(self.data.name, self.data.resolution, self.data.path)
        bound: dict[str, Any] = {"input_size": side, "in_channels": channels, "num_classes": classes}
        if self.t2i:
            assert self.text is not None
            dim, length = text_shape(self.text.encoder, self.text.weights)
            bound |= {"text_dim": dim, "text_len": length}
        for key, value in overrides.items():
            if key in ("per_token_t", "difficulty_head"):
                raise PfbenchError(
                    f"train config: model_overrides.{key} is set by kind ('pf' or 'sit'); remove it"
                )
            if key in ("repa_depth", "repa_dim", "repa_hidden"):
                raise PfbenchError(
                    f"train config: model_overrides.{key} is set by the `repa:` section (repa.depth, "
                    "repa.encoder, repa.hidden); remove it"
                )
            if key in bound and value != bound[key]:
                raise PfbenchError(
                    f"train config: model_overrides.{key}={value!r} disagrees with the dataset ({bound[key]!r})"
                )
        if self.t2i:
            return t2i_config(self.model, self.kind, **{**bound, **overrides})
        cfg = net_config(self.model, self.kind, **{**bound, **overrides})
        if self.repa is None:
            return cfg
        if self.repa.depth > cfg.depth:
            raise PfbenchError(
                f"train config: repa.depth={self.repa.depth} must be in 1..{cfg.depth} (the network's depth)"
            )
        return dataclasses.replace(cfg, repa_depth=self.repa.depth, repa_dim=ENCODER_DIMS[self.repa.encoder],
                                   repa_hidden=self.repa.hidden)

    def timestep_sampler(self) -> Any:
        """The configured timestep sampler; a SiT run needs one with constant rows."""
        assert self.timesteps is not None
        try:
            sampler = make_timestep_sampler(self.timesteps.name, **self.timesteps.params)
        except FieldError as err:  # a timestep sampler's own (field, reason): its key path below this config
            raise err.under("timesteps.params") from None
        if not self.per_token:
            probe = sampler(4, 16, torch.Generator().manual_seed(0))  # (4, 16)
            if not bool((probe == probe[:, :1]).all()):
                raise PfbenchError(
                    f"train config: timesteps.name={self.timesteps.name!r} draws per-patch times; "
                    f"kind {self.kind!r} needs a global one (e.g. 'global_uniform')"
                )
        return sampler


# Training configs keep their own wording (`train config: steps must be int, got str '10'`).
_CONFIG = Builder(
    # `timesteps: ltg`, `repa: dinov2-vitb14`, `text: tiny_text`
    shorthands={TimestepSpec: "name", RepaSpec: "encoder", TextSpec: "encoder"},
    wording=Wording(
        prefix="train config: ",
        unknown_key="unknown key {parent}{key!r}; did you mean {parent}{close!r}?",
        unknown_key_no_match="unknown key {parent}{key!r}; valid keys: {valid}",
        wrong_type="{path} must be {expected}, got {type} {value!r}{tip}",
    ),
)


def spec_from_dict(d: dict[str, Any]) -> TrainSpec:
    """Builds and fully validates a TrainSpec from plain data (e.g. a YAML mapping).

    Raises:
        PfbenchError: unknown key (naming the nearest valid one), wrong type, bad value, unknown preset,
            model override or timestep sampler/parameter.
    """
    if not isinstance(d, dict):
        raise PfbenchError(f"train config must be a mapping, got {type(d).__name__}")
    spec = _CONFIG.build(TrainSpec, d)
    spec.net_config()
    spec.timestep_sampler()
    return spec


# Keys that may change between a run and its resumption (they do not change what is computed).
RUNTIME_KEYS = ("steps", "ckpt_every", "keep_every", "log_every", "device", "amp", "threads", "compile",
                "checkpointing")


def check_resumable(stored: dict[str, Any], spec: TrainSpec, path: Path) -> None:
    """Refuses to resume checkpoint ``path`` (trained with config ``stored``) under ``spec`` when they differ in
    anything but ``RUNTIME_KEYS``.

    Raises:
        PfbenchError: naming the first differing key and both values.
    """
    now = spec.to_dict()
    try:  # fields added since the checkpoint was written take their defaults on both sides
        stored = spec_from_dict(stored).to_dict()
    except PfbenchError:
        pass  # compared as stored: the difference is reported below
    for key in sorted(set(now) | set(stored)):
        if key not in RUNTIME_KEYS and now.get(key) != stored.get(key):
            raise PfbenchError(
                f"{path} was trained with {key}={stored.get(key)!r}, this config has {now.get(key)!r}; "
                "use another output folder (--out), or start over with --no-resume (resume=False in Python)"
            )


__all__ = ["DataSpec", "RepaSpec", "TextSpec", "TimestepSpec", "TrainSpec", "check_resumable", "spec_from_dict",
           "text_shape"]
