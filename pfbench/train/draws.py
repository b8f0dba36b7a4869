"""Where each training step's data and randomness come from, so that a run is reproducible and resumable.

Every random draw of step k (batch indices, noise x0, timesteps, label-dropout mask) comes from generators seeded
by ``seed_of(spec.seed, k, stream)`` for the *global* batch, and a DDP rank takes its slice (``Dist``). The data
order is an epoch permutation seeded by ``(spec.seed, epoch)`` (``EpochOrder``); the finite dataset loops forever.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from pfbench import PfbenchError
from pfbench.train.spec import TrainSpec


def expand_tokens(t: Tensor, patch: int, height: int, width: int) -> Tensor:
    """Per-token times (B, T) → per-pixel (B, 1, H, W), row-major patch order (as DiT's patchify)."""
    b = t.shape[0]
    gh, gw = height // patch, width // patch
    t = t.reshape(b, 1, gh, 1, gw, 1).expand(b, 1, gh, patch, gw, patch)
    return t.reshape(b, 1, height, width)


def seed_of(*parts: int | str) -> int:
    """A 63-bit seed from a tuple, e.g. (seed, step, "noise"); independent streams per tuple."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


class EpochOrder:
    """Infinite stream of dataset indices: epoch e is ``randperm(N)`` seeded by (seed, e)."""

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed = size, seed
        self._cache: dict[int, Tensor] = {}

    def _perm(self, epoch: int) -> Tensor:
        if epoch not in self._cache:
            if len(self._cache) > 2:
                self._cache.pop(min(self._cache))
            g = torch.Generator().manual_seed(seed_of(self.seed, epoch, "epoch"))
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
class Dist:
    """This process's place in the run: rank and world size, its device, and whether it created the process
    group (and so destroys it at the end)."""

    rank: int
    world: int
    device: torch.device
    owns_group: bool


def setup_distributed(spec: TrainSpec) -> Dist:
    """Resolves ``spec.device`` and, under torchrun (WORLD_SIZE > 1), joins or creates the process group (nccl on
    CUDA, gloo on CPU)."""
    want = spec.device if spec.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if want == "cuda" and not torch.cuda.is_available():
        raise PfbenchError("train config: device='cuda' but no CUDA device is available; use 'cpu' or 'auto'")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(0, 1, torch.device(want), False)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local) if want == "cuda" else torch.device("cpu")
    owns = not dist.is_initialized()
    if owns:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), device, owns)
