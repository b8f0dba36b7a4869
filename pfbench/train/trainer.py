"""The state of one training run and its single steps: networks, EMA, optimiser, data, one optimiser step, and the
run's checkpoints (written by rank 0, Ctrl-C deferred during a write; read back on resume).

``pfbench.train.loop`` drives it: which steps to run, logging, checkpoint schedule and errors.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import shutil
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from pfbench import PfbenchError
from pfbench.data.train_data import open_train_data
from pfbench.nets import DiT, T2INet, build_net, config_from_dict
from pfbench.train.checkpoints import (
    check_state_compatible,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from pfbench.train.draws import Dist, EpochOrder, expand_tokens, seed_of
from pfbench.train.losses import pf_loss, repa_loss
from pfbench.train.repa import RepaEncoder, load_encoder, tokens_for_grid
from pfbench.train.spec import TrainSpec, check_resumable

LAST = "last.pt"


@contextmanager
def _ctrl_c_after() -> Iterator[None]:
    """Defers Ctrl-C (SIGINT) to the end of the block: a checkpoint write is never cut short (torch.save turns
    an interrupt into a RuntimeError) and the step that the Ctrl-C message names is the one on disk."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread (which is where SIGINT lands anyway)
        return
    got: list[int] = []
    old = signal.signal(signal.SIGINT, lambda signum, frame: got.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
        if got and callable(old):
            old(signal.SIGINT, None)  # the default handler raises KeyboardInterrupt


class NonFinite(Exception):
    """A step's loss or gradient norm is not finite; the optimiser was not stepped."""


class _TrainForward(nn.Module):
    """The DiT's training forward as a module's ``forward`` (DDP hooks only that): dedup off, and the REPA
    projector run on every step when REPA is on, so every parameter gets a gradient (no find_unused_parameters)."""

    def __init__(self, net: DiT, repa: bool) -> None:
        super().__init__()
        self.net, self.repa = net, repa

    def forward(self, x: Tensor, t: Tensor, y: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None]:
        return self.net.forward_all(x, t, y, dedup=False, repa=self.repa)  # dedup gains nothing on random t


class _T2ITrainForward(nn.Module):
    """The text-to-image network's training forward (text refiner + blocks, dedup off) as a module's ``forward``."""

    def __init__(self, net: T2INet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor, t: Tensor, tokens: Tensor, mask: Tensor) -> tuple[Tensor, Tensor | None, None]:
        v, logvar = self.net(x, t, tokens, mask, dedup=False)
        return v, logvar, None


class Trainer:
    """Holds the state of one run (``pfbench.train.loop.run_steps`` executes its steps [start, end)).

    Args:
        spec: The run. out_dir: Its folder (``last.pt``, kept checkpoints, ``log.jsonl``). ctx: This process's rank.
    """

    def __init__(self, spec: TrainSpec, out_dir: Path, ctx: Dist) -> None:
        self.spec, self.out, self.ctx = spec, out_dir, ctx
        self.cfg = spec.net_config()
        self.sampler = spec.timestep_sampler()
        dev = ctx.device
        self.amp = spec.amp == "bf16" or (spec.amp == "auto" and dev.type == "cuda")
        if self.amp and dev.type != "cuda":
            raise PfbenchError("train config: amp='bf16' needs a CUDA device; use 'auto' or 'fp32' on CPU")
        if spec.compile and dev.type != "cuda":
            raise PfbenchError("train config: compile=true needs a CUDA device (on CPU pfbench trains uncompiled, "
                               "in fp32); remove it or set device: cuda")
        if spec.batch_size % ctx.world:
            raise PfbenchError(
                f"train config: batch_size={spec.batch_size} is not divisible by {ctx.world} ranks"
            )
        self.local = spec.batch_size // ctx.world
        d = spec.data
        self.data = open_train_data(d.name, resolution=d.resolution, size=d.size, seed=d.seed, path=d.path,
                                    device=dev, heterogeneity=d.heterogeneity)
        self.order = EpochOrder(self.data.size, spec.seed)
        self.encoder: RepaEncoder | None = None
        if spec.repa is not None:
            if self.data.pixels(torch.zeros(1, dtype=torch.int64)) is None:
                raise PfbenchError(
                    f"train config: repa needs the clean images, but the latent store {d.path} holds none; "
                    "re-encode it with `pfbench data encode --keep-images`"
                )
            # Frozen and outside the DiT: not in the optimiser, the EMA or the checkpoints.
            self.encoder = load_encoder(spec.repa.encoder, weights=spec.repa.weights, device=dev)
        self.text_encoder: Any = None
        if spec.text is not None:
            if not callable(getattr(self.data, "captions", None)):
                raise PfbenchError(f"train config: kind {spec.kind!r} trains on captions, but data {d.name!r} has none")
            from pfbench.encoders.text import load_text_encoder

            # Frozen and outside the network: not in the optimiser, the EMA or the checkpoints.
            self.text_encoder = load_text_encoder(spec.text.encoder, dev, spec.text.weights)
        with torch.random.fork_rng(devices=[]):  # init depends on the seed only, not on global RNG state
            torch.manual_seed(seed_of(spec.seed, "init"))
            self.net: Any = build_net(self.cfg).to(dev)
        self.net.checkpointing = spec.checkpointing
        self.ema = copy.deepcopy(self.net).requires_grad_(False).eval()
        self.params: list[Tensor] = list(self.net.parameters())
        self.ema_params: list[Tensor] = list(self.ema.parameters())
        self.opt = torch.optim.AdamW(
            self.params, lr=spec.lr, betas=(0.9, 0.999), weight_decay=spec.weight_decay, fused=True
        )
        self.model: nn.Module = (_T2ITrainForward(self.net) if isinstance(self.net, T2INet)
                                 else _TrainForward(self.net, repa=spec.repa is not None))
        self.saved: int | None = None  # step of the newest checkpoint in out_dir (for the Ctrl-C message)

    # -- one step
    def draws(self, k: int) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None]:
        """This rank's slice of step k's global draws: indices, noise, timesteps, dropout mask and (latent data
        only) the posterior noise of x1."""
        spec, cfg, dev = self.spec, self.cfg, self.ctx.device
        b = spec.batch_size
        g = torch.Generator().manual_seed(seed_of(spec.seed, k, "step"))
        t = self.sampler(b, cfg.tokens, g)  # (B, T) float32, CPU
        dropout = spec.label_dropout if spec.text is None else spec.text.dropout
        drop = torch.rand(b, generator=g) < dropout  # (B,): null class, or the empty prompt
        idx = self.order.batch(k, b)  # (B,)
        gn = torch.Generator(dev).manual_seed(seed_of(spec.seed, k, "noise"))
        shape = (b, cfg.in_channels, cfg.input_size, cfg.input_size)
        x0 = torch.randn(shape, generator=gn, device=dev, dtype=torch.float32)  # (B, C, H, W)
        eps = torch.randn(shape, generator=g) if self.data.needs_eps else None  # (B, C, H, W), CPU
        lo, hi = self.ctx.rank * self.local, (self.ctx.rank + 1) * self.local
        return idx[lo:hi], x0[lo:hi], t[lo:hi].to(dev), drop[lo:hi].to(dev), None if eps is None else eps[lo:hi]

    def _repa_target(self, idx: Tensor) -> Tensor:
        """Encoder tokens of the clean images ``idx`` on the DiT's token grid, (b, T, D_enc) float32. They depend
        on the images only: never on the noise, the timesteps or the (possibly dropped) label."""
        assert self.encoder is not None
        pixels = self.data.pixels(idx)  # (b, 3, R, R) in [-1, 1]; checked not None at start
        assert pixels is not None
        with torch.no_grad():
            z = self.encoder(pixels.to(self.ctx.device, non_blocking=True))  # (b, T_enc, D_enc)
        return tokens_for_grid(z, self.cfg.grid)  # (b, T, D_enc)

    def _text(self, idx: Tensor, drop: Tensor) -> tuple[Tensor, Tensor]:
        """Encoder tokens (b, L, dim) and mask (b, L) of images ``idx``' captions, dropped ones replaced by the empty
        prompt (CFG's unconditional input); each distinct string of the batch is encoded once (frozen encoder)."""
        texts = ["" if d else c for d, c in zip(drop.tolist(), self.data.captions(idx), strict=True)]  # type: ignore[attr-defined]
        unique = list(dict.fromkeys(texts))
        with torch.no_grad():
            states, mask = self.text_encoder.encode(unique)  # (U, L, dim), (U, L)
        rows = torch.tensor([unique.index(s) for s in texts], device=states.device)
        dev = self.ctx.device
        return states[rows].to(dev), mask[rows].to(dev)

    def step(self, k: int) -> Tensor:
        """Runs optimiser step k (0-based); returns detached (loss, fm, nll, repa) as a (4,) tensor."""
        spec, cfg = self.spec, self.cfg
        idx, x0, t, drop, eps = self.draws(k)
        x1, labels = self.data.sample(idx, eps)  # (b, C, H, W), (b,)
        x1, labels = x1.to(self.ctx.device, non_blocking=True), labels.to(self.ctx.device)
        cond: tuple[Tensor, ...] = (torch.where(drop, cfg.num_classes, labels),)  # (b,), null class = num_classes
        if self.text_encoder is not None:
            cond = self._text(idx, drop)  # text-to-image: the captions (or "") instead of labels
        tp = expand_tokens(t, cfg.patch, cfg.input_size, cfg.input_size)  # (b, 1, H, W)
        xt = tp * x1 + (1 - tp) * x0
        u = x1 - x0
        t_in = t if cfg.per_token_t else t[:, 0]  # (b, T) or (b,)
        with torch.autocast(self.ctx.device.type, dtype=torch.bfloat16, enabled=self.amp):
            z = self._repa_target(idx) if self.encoder is not None else None  # (b, T, D_enc)
            v, logvar, proj = self.model(xt, t_in, *cond)  # proj (b, T, D_enc) with REPA, else None
        loss, parts = pf_loss(v, logvar, u, spec.nll_weight)
        align = torch.zeros_like(loss)
        if spec.repa is not None:
            assert proj is not None and z is not None
            align = repa_loss(proj, z)
            loss = loss + spec.repa.weight * align
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = nn.utils.clip_grad_norm_(self.params, spec.grad_clip or math.inf, foreach=True)
        if not bool(torch.isfinite(loss) & torch.isfinite(gnorm)):  # the one per-step sync
            raise NonFinite
        lr = spec.lr * min(1.0, (k + 1) / spec.warmup) if spec.warmup else spec.lr
        for group in self.opt.param_groups:
            group["lr"] = lr
        self.opt.step()
        decay = min(spec.ema_decay, (1 + k) / (10 + k)) if spec.ema_warmup else spec.ema_decay
        torch._foreach_lerp_(self.ema_params, self.params, 1.0 - decay)
        nll = parts.get("nll", torch.zeros_like(loss))
        return torch.stack([loss.detach(), parts["fm"], nll, align.detach()])

    # -- checkpoints
    def save(self, step: int) -> None:
        """Rank 0 writes the checkpoints of ``step`` (Ctrl-C deferred until done); every rank waits for it."""
        if self.ctx.rank == 0:
            with _ctrl_c_after():
                self._write(step)
        if self.ctx.world > 1:
            dist.barrier()

    def _write(self, step: int) -> None:
        """Rank 0: ``last.pt`` and, every ``keep_every`` steps, a kept ``step_XXXXXX.pt``."""
        path = save_checkpoint(
            self.out / LAST,
            step=step,
            config=self.spec.to_dict(),
            net_config=dataclasses.asdict(self.cfg),
            model=self.net.state_dict(),
            ema=self.ema.state_dict(),
            optimizer=self.opt.state_dict(),
        )
        self.saved = step  # after the atomic write: an interrupted write keeps the previous checkpoint
        if self.spec.keep_every and step % self.spec.keep_every == 0:
            keep = self.out / f"step_{step:06d}.pt"
            keep.unlink(missing_ok=True)
            try:
                os.link(path, keep)  # last.pt is later replaced by a new inode; this link stays
            except OSError:  # no hard links on this filesystem
                shutil.copyfile(path, keep)

    def load(self, path: Path) -> int:
        """Restores model, EMA, optimiser and RNG state from ``path`` after checking it fits; returns its step."""
        ckpt = load_checkpoint(path, map_location=self.ctx.device)
        check_resumable(ckpt.config, self.spec, path)
        if config_from_dict(ckpt.net_config) != self.cfg:  # compared as configs: fields added later take defaults
            raise PfbenchError(f"{path} holds a different network ({ckpt.net_config}); use another out_dir")
        if ckpt.optimizer is None:
            raise PfbenchError(f"{path} has no optimiser state, so it cannot be resumed; start over with --no-resume "
                               "(resume=False in Python)")
        check_state_compatible(self.net, ckpt.model, f"{path} (model weights)")
        check_state_compatible(self.ema, ckpt.ema, f"{path} (ema weights)")
        self.net.load_state_dict(ckpt.model)
        self.ema.load_state_dict(ckpt.ema)
        self.opt.load_state_dict(ckpt.optimizer)
        restore_rng_state(ckpt.rng)
        return ckpt.step

    def reduce(self, acc: Tensor, n: int) -> dict[str, float]:
        """Mean losses over ``n`` steps and all ranks from the summed (loss, fm, nll, repa) accumulator."""
        if self.ctx.world > 1:
            dist.all_reduce(acc)
            acc = acc / self.ctx.world
        loss, fm, nll, align = (acc / max(n, 1)).tolist()
        out = {"loss": loss, "fm": fm}
        if self.cfg.difficulty_head:
            out["nll"] = nll
        if self.encoder is not None:
            out["repa"] = align
        return out
