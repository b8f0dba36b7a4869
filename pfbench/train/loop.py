"""Training stage: ``TrainSpec`` → checkpoint (SPEC §4). The spec itself and its parsing live in
``pfbench.train.spec`` (re-exported here).

One loop serves Patch Forcing (per-token t + difficulty head) and the global-t SiT baseline, with the optional
REPA alignment loss.

Determinism: every random draw of step k — batch indices, noise x0, timesteps, label-dropout mask — comes
from generators seeded by ``(spec.seed, k)`` for the *global* batch; a DDP rank takes its slice. The data
order is an epoch permutation seeded by ``(spec.seed, epoch)`` and the finite dataset loops forever. So a
resumed run needs only the step count, and 1 and N processes compute the same global batch.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from pfbench import PfbenchError
from pfbench.train.checkpoints import check_state_compatible, load_checkpoint, restore_rng_state, save_checkpoint
from pfbench.data.train_data import open_train_data
from pfbench.train.losses import pf_loss, repa_loss
from pfbench.nets.flops import train_flops
from pfbench.train.repa import RepaEncoder, load_encoder, tokens_for_grid
from pfbench.train.spec import DataSpec, RepaSpec, TimestepSpec, TrainSpec, spec_from_dict

if TYPE_CHECKING:
    from pfbench.nets.dit import DiT

LAST = "last.pt"
LOG = "log.jsonl"
# Keys that may change between a run and its resumption (they do not change what is computed).
_RUNTIME_KEYS = ("steps", "ckpt_every", "keep_every", "log_every", "device", "amp", "threads")


@dataclass(frozen=True)
class TrainResult:
    """What ``train`` returns.

    Attributes:
        checkpoint: path of ``last.pt``. steps: optimiser steps done in total.
        img_per_s: global images per second over this call's steps (checkpoint writes excluded).
        losses: mean losses over the last log interval (``loss``, ``fm``, for pf ``nll``, with REPA ``repa``).
        diverged: some log interval of this run folder had a loss far above its lowest value (see
            ``_Divergence``; marked ``"diverged": true`` in ``log.jsonl``): the checkpoint is likely useless.
    """

    checkpoint: Path
    steps: int
    img_per_s: float
    losses: dict[str, float]
    diverged: bool = False


# ---------------------------------------------------------------- helpers


def expand_tokens(t: Tensor, patch: int, height: int, width: int) -> Tensor:
    """Per-token times (B, T) → per-pixel (B, 1, H, W), row-major patch order (as DiT's patchify)."""
    b = t.shape[0]
    gh, gw = height // patch, width // patch
    t = t.reshape(b, 1, gh, 1, gw, 1).expand(b, 1, gh, patch, gw, patch)
    return t.reshape(b, 1, height, width)


def _seed(*parts: int | str) -> int:
    """A 63-bit seed from a tuple, e.g. (seed, step, "noise"); independent streams per tuple."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


class _EpochOrder:
    """Infinite stream of dataset indices: epoch e is ``randperm(N)`` seeded by (seed, e)."""

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed = size, seed
        self._cache: dict[int, Tensor] = {}

    def _perm(self, epoch: int) -> Tensor:
        if epoch not in self._cache:
            if len(self._cache) > 2:
                self._cache.pop(min(self._cache))
            g = torch.Generator().manual_seed(_seed(self.seed, epoch, "epoch"))
            self._cache[epoch] = torch.randperm(self.size, generator=g)
        return self._cache[epoch]

    def batch(self, step: int, batch: int) -> Tensor:
        """Indices (batch,) of the global batch of ``step`` (0-based)."""
        pos = torch.arange(step * batch, (step + 1) * batch)
        epochs, offs = pos // self.size, pos % self.size
        out = torch.empty(batch, dtype=torch.int64)
        for e in epochs.unique().tolist():
            sel = epochs == e
            out[sel] = self._perm(int(e))[offs[sel]]
        return out


@dataclass(frozen=True)
class _Dist:
    rank: int
    world: int
    device: torch.device
    owns_group: bool


def _setup_distributed(spec: TrainSpec) -> _Dist:
    want = spec.device if spec.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if want == "cuda" and not torch.cuda.is_available():
        raise PfbenchError("train config: device='cuda' but no CUDA device is available; use 'cpu' or 'auto'")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist(0, 1, torch.device(want), False)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local) if want == "cuda" else torch.device("cpu")
    owns = not dist.is_initialized()
    if owns:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return _Dist(dist.get_rank(), dist.get_world_size(), device, owns)


def _trim_log(path: Path, step: int) -> None:
    """Drops log lines past ``step`` (written after the checkpoint a resumed run restarts from)."""
    if not path.exists():
        return
    keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= step]
    path.write_text("".join(ln + "\n" for ln in keep))


DIVERGE_FACTOR = 100.0  # a watched loss this many times above max(1, its lowest logged value) has diverged
_WATCHED = ("fm", "nll")  # flow matching and difficulty NLL; not REPA's bounded -cos, nor their weighted sum


class _Divergence:
    """Flags training that blows up without (yet) producing NaN, e.g. lr too high: the NLL climbing to 1e10
    while every loss stays finite. A watched loss over ``DIVERGE_FACTOR`` × max(1, its lowest value logged in
    this run folder) counts as diverged. The floor of 1 makes the first interval checkable too and ignores
    small values: at initialisation fm ≈ 1 + Var(data) and nll ≈ 1.6, and a healthy run only goes down.
    """

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.lowest = {k: min((float(r[k]) for r in rows if k in r), default=math.inf) for k in _WATCHED}
        self.seen = any(r.get("diverged") for r in rows)  # sticky over resumes: the weights came through it

    def check(self, step: int, losses: dict[str, float]) -> str | None:
        """Updates the lowest values; returns what diverged at ``step`` (None if nothing did)."""
        found = None
        for k in _WATCHED:
            if k not in losses or not math.isfinite(losses[k]):
                continue
            v, low = losses[k], self.lowest[k]
            if found is None and v > DIVERGE_FACTOR * (1.0 if math.isinf(low) else max(1.0, low)):
                found = f"{k} {v:.3g} at step {step} (lowest so far {'none' if math.isinf(low) else f'{low:.3g}'})"
            self.lowest[k] = min(low, v)
        self.seen = self.seen or found is not None
        return found


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


def _read_log(path: Path) -> list[dict[str, Any]]:
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()] if path.exists() else []


def _net_config(stored: dict[str, Any]) -> Any:
    """A checkpoint's network config as a ``DiTConfig`` (keys added since it was written take their defaults)."""
    from pfbench.nets.dit import DiTConfig

    return DiTConfig(**stored)


def _check_resumable(ckpt_cfg: dict[str, Any], spec: TrainSpec, path: Path) -> None:
    now = spec.to_dict()
    try:  # fields added since the checkpoint was written take their defaults on both sides
        ckpt_cfg = spec_from_dict(ckpt_cfg).to_dict()
    except PfbenchError:
        pass  # compared as stored: the difference is reported below
    for key in sorted(set(now) | set(ckpt_cfg)):
        if key not in _RUNTIME_KEYS and now.get(key) != ckpt_cfg.get(key):
            raise PfbenchError(
                f"{path} was trained with {key}={ckpt_cfg.get(key)!r}, this config has {now.get(key)!r}; "
                "use another output folder (--out), or start over with --no-resume (resume=False in Python)"
            )


# ---------------------------------------------------------------- the loop


class _NonFinite(Exception):
    pass


class _TrainForward(nn.Module):
    """The DiT's training forward as a module's ``forward`` (DDP hooks only that): dedup off, and the REPA
    projector run on every step when REPA is on, so every parameter gets a gradient (no find_unused_parameters)."""

    def __init__(self, net: DiT, repa: bool) -> None:
        super().__init__()
        self.net, self.repa = net, repa

    def forward(self, x: Tensor, t: Tensor, y: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None]:
        return self.net.forward_all(x, t, y, dedup=False, repa=self.repa)  # dedup gains nothing on random t


class _Trainer:
    """Holds the state of one run; ``run`` executes steps [start, end)."""

    def __init__(self, spec: TrainSpec, out_dir: Path, ctx: _Dist) -> None:
        from pfbench.nets.dit import DiT

        self.spec, self.out, self.ctx = spec, out_dir, ctx
        self.cfg = spec.net_config()
        self.sampler = spec.timestep_sampler()
        dev = ctx.device
        self.amp = spec.amp == "bf16" or (spec.amp == "auto" and dev.type == "cuda")
        if self.amp and dev.type != "cuda":
            raise PfbenchError("train config: amp='bf16' needs a CUDA device; use 'auto' or 'fp32' on CPU")
        if spec.batch_size % ctx.world:
            raise PfbenchError(
                f"train config: batch_size={spec.batch_size} is not divisible by {ctx.world} ranks"
            )
        self.local = spec.batch_size // ctx.world
        d = spec.data
        self.data = open_train_data(d.name, resolution=d.resolution, size=d.size, seed=d.seed, path=d.path,
                                    device=dev)
        self.order = _EpochOrder(self.data.size, spec.seed)
        self.encoder: RepaEncoder | None = None
        if spec.repa is not None:
            if self.data.pixels(torch.zeros(1, dtype=torch.int64)) is None:
                raise PfbenchError(
                    f"train config: repa needs the clean images, but the latent store {d.path} holds none; "
                    "re-encode it with `pfbench data encode --keep-images`"
                )
            # Frozen and outside the DiT: not in the optimiser, the EMA or the checkpoints.
            self.encoder = load_encoder(spec.repa.encoder, weights=spec.repa.weights, device=dev)
        with torch.random.fork_rng(devices=[]):  # init depends on the seed only, not on global RNG state
            torch.manual_seed(_seed(spec.seed, "init"))
            self.net = DiT(self.cfg).to(dev)
        self.ema = copy.deepcopy(self.net).requires_grad_(False).eval()
        self.params: list[Tensor] = list(self.net.parameters())
        self.ema_params: list[Tensor] = list(self.ema.parameters())
        self.opt = torch.optim.AdamW(
            self.params, lr=spec.lr, betas=(0.9, 0.999), weight_decay=spec.weight_decay, fused=True
        )
        self.model: nn.Module = _TrainForward(self.net, repa=spec.repa is not None)
        self.saved: int | None = None  # step of the newest checkpoint in out_dir (for the Ctrl-C message)

    # -- one step
    def _draws(self, k: int) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None]:
        """This rank's slice of step k's global draws: indices, noise, timesteps, dropout mask and (latent data
        only) the posterior noise of x1."""
        spec, cfg, dev = self.spec, self.cfg, self.ctx.device
        b = spec.batch_size
        g = torch.Generator().manual_seed(_seed(spec.seed, k, "step"))
        t = self.sampler(b, cfg.tokens, g)  # (B, T) float32, CPU
        drop = torch.rand(b, generator=g) < spec.label_dropout  # (B,)
        idx = self.order.batch(k, b)  # (B,)
        gn = torch.Generator(dev).manual_seed(_seed(spec.seed, k, "noise"))
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

    def _step(self, k: int) -> Tensor:
        """Runs optimiser step k (0-based); returns detached (loss, fm, nll, repa) as a (4,) tensor."""
        spec, cfg = self.spec, self.cfg
        idx, x0, t, drop, eps = self._draws(k)
        x1, labels = self.data.sample(idx, eps)  # (b, C, H, W), (b,)
        x1, labels = x1.to(self.ctx.device, non_blocking=True), labels.to(self.ctx.device)
        y = torch.where(drop, cfg.num_classes, labels)  # (b,), null class = num_classes
        tp = expand_tokens(t, cfg.patch, cfg.input_size, cfg.input_size)  # (b, 1, H, W)
        xt = tp * x1 + (1 - tp) * x0
        u = x1 - x0
        t_in = t if cfg.per_token_t else t[:, 0]  # (b, T) or (b,)
        with torch.autocast(self.ctx.device.type, dtype=torch.bfloat16, enabled=self.amp):
            z = self._repa_target(idx) if self.encoder is not None else None  # (b, T, D_enc)
            v, logvar, proj = self.model(xt, t_in, y)  # proj (b, T, D_enc) with REPA, else None
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
            raise _NonFinite
        lr = spec.lr * min(1.0, (k + 1) / spec.warmup) if spec.warmup else spec.lr
        for group in self.opt.param_groups:
            group["lr"] = lr
        self.opt.step()
        decay = min(spec.ema_decay, (1 + k) / (10 + k)) if spec.ema_warmup else spec.ema_decay
        torch._foreach_lerp_(self.ema_params, self.params, 1.0 - decay)
        nll = parts.get("nll", torch.zeros_like(loss))
        return torch.stack([loss.detach(), parts["fm"], nll, align.detach()])

    # -- checkpoints
    def _save(self, step: int) -> None:
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

    def _load(self, path: Path) -> int:
        ckpt = load_checkpoint(path, map_location=self.ctx.device)
        _check_resumable(ckpt.config, self.spec, path)
        if _net_config(ckpt.net_config) != self.cfg:  # compared as configs: fields added later take defaults
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

    # -- logging
    def _reduce(self, acc: Tensor, n: int) -> dict[str, float]:
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

    def run(self, resume: bool, progress: bool, stop_after: int | None) -> TrainResult:
        spec, ctx, dev = self.spec, self.ctx, self.ctx.device
        last, log = self.out / LAST, self.out / LOG
        resumed = resume and last.exists()  # decided before any rank writes, so all ranks agree
        start = self._load(last) if resumed else 0
        self.saved = start if resumed else None
        if ctx.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            _trim_log(log, start)
        if ctx.world > 1:
            ids = [dev.index] if dev.type == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        end = spec.steps if stop_after is None else max(start, min(spec.steps, stop_after))
        losses: dict[str, float] = _last_logged(log) if ctx.rank == 0 else {}
        watch = _Divergence(_read_log(log) if ctx.rank == 0 else [])  # rank 0 alone checks (and warns)
        warned = False
        acc, n_acc = torch.zeros(4, device=dev), 0  # loss, fm, nll, repa
        t_begin = t_mark = time.perf_counter()
        ckpt_s, mark_step = 0.0, start
        # Cost accounting for equal-compute comparisons: training seconds so far (checkpoint writes excluded,
        # carried over resumes through the log) and analytic training GFLOPs (``nets.flops.train_flops``).
        wall0 = float(_read_log(log)[-1].get("wall_s", 0.0)) if ctx.rank == 0 and start and log.exists() else 0.0
        gflops_step = train_flops(self.cfg) * spec.batch_size / 1e9
        with _progress_bar(progress and ctx.rank == 0, spec, start, end) as (bar, task):
            for k in range(start, end):
                try:
                    acc += self._step(k)
                except _NonFinite:
                    good = str(last) if resumed or k >= spec.ckpt_every else "none"  # not a stale one
                    why = f" after the loss diverged (lr={spec.lr:g} too high?)" if watch.seen else ""
                    raise PfbenchError(
                        f"non-finite loss at step {k + 1}{why}; last good checkpoint: {good}"
                    ) from None
                n_acc += 1
                step = k + 1
                if step % spec.log_every == 0 or step == end:
                    losses = self._reduce(acc, n_acc)
                    acc.zero_()
                    n_acc = 0
                    now = time.perf_counter()
                    ips = (step - mark_step) * spec.batch_size / max(now - t_mark, 1e-9)
                    t_mark, mark_step = now, step
                    if ctx.rank == 0:
                        diverged = watch.check(step, losses)
                        if diverged and not warned:
                            warned = True
                            _warn(f"training diverges: {diverged}; healthy values are O(1). Lower lr "
                                  f"({spec.lr:g}) or lengthen warmup ({spec.warmup}); training goes on, "
                                  f"{log} marks the intervals")
                        cost = {"wall_s": round(wall0 + now - t_begin - ckpt_s, 3), "gflops": step * gflops_step}
                        _append_log(log, step, losses | cost, ips, diverged=diverged is not None)
                    if bar is not None:
                        sps = f"{ips / spec.batch_size:.2f} steps/s"
                        bar.update(task, loss=f"{losses['loss']:.4f}", speed=f"{ips:,.0f} img/s", sps=sps)
                if step % spec.ckpt_every == 0 or step == end:
                    t0 = time.perf_counter()
                    self._save(step)
                    ckpt_s += time.perf_counter() - t0
                    t_mark += time.perf_counter() - t0
                if bar is not None:
                    bar.update(task, completed=step)
        if not resumed and end == start:
            self._save(start)  # e.g. stop_after=0 on a fresh run: an untrained checkpoint
        elapsed = time.perf_counter() - t_begin - ckpt_s
        ips = (end - start) * spec.batch_size / elapsed if end > start else 0.0
        return TrainResult(checkpoint=last, steps=end, img_per_s=ips, losses=losses, diverged=watch.seen)


def _warn(message: str) -> None:
    """One line on stderr (rich), also from spawned training processes of a suite."""
    from rich.console import Console

    Console(stderr=True, highlight=False, soft_wrap=True).print(f"[yellow]warning:[/] {message}")


def _append_log(path: Path, step: int, losses: dict[str, float], ips: float, diverged: bool = False) -> None:
    row = {"step": step, **losses, "img_per_s": round(ips, 2), "time": time.time()}
    with open(path, "a") as f:
        f.write(json.dumps(row | ({"diverged": True} if diverged else {})) + "\n")


def _last_logged(path: Path) -> dict[str, float]:
    if not path.exists():
        return {}
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    if not lines:
        return {}
    row = json.loads(lines[-1])
    return {k: float(row[k]) for k in ("loss", "fm", "nll", "repa") if k in row}


class _progress_bar:
    """Rich progress bar (loss, img/s, steps/s, ETA), or a no-op when disabled."""

    def __init__(self, enabled: bool, spec: TrainSpec, start: int, end: int) -> None:
        self.enabled, self.spec, self.start, self.end = enabled, spec, start, end
        self.bar: Any = None

    def __enter__(self) -> tuple[Any, Any]:
        if not self.enabled:
            return None, None
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress(
            TextColumn("[bold]train {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[sps]}"),
            TextColumn("[cyan]{task.fields[speed]}"),
            TimeRemainingColumn(),
        )
        self.bar.__enter__()
        desc = f"{self.spec.kind} {self.spec.model}"
        task = self.bar.add_task(desc, total=self.end, completed=self.start, loss="…", speed="", sps="")
        return self.bar, task

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)


def train(
    spec: TrainSpec,
    out_dir: Path | str,
    *,
    resume: bool = True,
    progress: bool = True,
    stop_after: int | None = None,
) -> TrainResult:
    """Trains a PF or SiT network and writes checkpoints to ``out_dir`` (``last.pt``, ``log.jsonl``).

    Under ``torchrun`` (WORLD_SIZE > 1) it runs data-parallel (gloo on CPU, nccl on CUDA); rank 0 alone
    writes files and shows progress. The result is the same as one process with the same global batch.

    Args:
        spec: the run (validate user input with ``spec_from_dict`` first).
        out_dir: run folder.
        resume: continue from ``out_dir/last.pt`` if it exists (bit-identical to an uninterrupted run on CPU).
        progress: show a rich progress bar on rank 0.
        stop_after: stop (and checkpoint) once this many steps are done in total; None = ``spec.steps``.

    Raises:
        PfbenchError: bad config, unreadable/incompatible checkpoint, or a non-finite loss (the optimiser
            is not stepped and the last good checkpoint is left intact).
    """
    if spec.threads is not None:
        torch.set_num_threads(spec.threads)
    ctx = _setup_distributed(spec)
    ok, trainer = False, None
    try:
        trainer = _Trainer(spec, Path(out_dir), ctx)
        result = trainer.run(resume, progress, stop_after)
        ok = True
        return result
    except KeyboardInterrupt:  # Ctrl-C: say what is kept (the CLI prints it); checkpoint writes are atomic
        last = Path(out_dir) / LAST
        saved = None if trainer is None else trainer.saved
        raise KeyboardInterrupt(f"the checkpoint of step {saved} is kept in {last}" if saved is not None
                                else f"no checkpoint was written yet (the first comes at step {spec.ckpt_every})"
                                ) from None
    finally:
        if ctx.owns_group and dist.is_initialized():
            if ok:  # every rank has released its DDP state before any rank tears the group down
                dist.barrier()
            dist.destroy_process_group()


__all__ = [
    "DataSpec", "RepaSpec", "TimestepSpec", "TrainResult", "TrainSpec", "expand_tokens", "spec_from_dict", "train",
]
