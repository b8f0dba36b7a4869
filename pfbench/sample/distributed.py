"""Sample shards from one process or many (torchrun): the same shards, byte for byte, on any world size.

Shard j belongs to rank j mod world. Each finished shard gets a self-describing record ``shard_XXXXX.json`` next
to it; rank 0 assembles ``manifest.json`` (the ``pfbench.sample.shards`` format) from the records at the end.
"""

from __future__ import annotations

import functools
import json
import os
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from pfbench import PfbenchError
from pfbench.adapters.base import Adapter
from pfbench.io import atomic_write_bytes, content_hash, sha256_file
from pfbench.sample.generate import Decode, Generated, Prompts, generate
from pfbench.sample.shards import (
    MANIFEST,
    open_run,
    read_manifest,
    run_identity,
    sample_shard,
    totals,
    write_manifest,
)
from pfbench.samplers.base import Sampler

RECORD = "shard_{:05d}.json"  # per-shard record next to each shard: its manifest entry plus the run key
_EPOCH = (1980, 1, 1, 0, 0, 0)  # fixed zip member time, so equal images give byte-identical shards


def _deterministic_npz(gen: Generated) -> Callable[[Any], None]:
    """Like ``np.savez`` (uncompressed, same member names), but with fixed member timestamps."""
    arrays = {"images": gen.images.numpy(), "labels": gen.labels.numpy(), "indices": gen.indices.numpy()}

    def write(f: Any) -> None:
        with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as zf:
            for name, array in arrays.items():
                with zf.open(zipfile.ZipInfo(f"{name}.npy", date_time=_EPOCH), "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.ascontiguousarray(array))

    return write


def _write_record(path: Path, record: Mapping[str, Any]) -> None:
    atomic_write_bytes(path, json.dumps(dict(record), sort_keys=True).encode())


def _join_process_group() -> tuple[int, int, bool]:
    """(rank, world, created): the initialised torch.distributed group, or a gloo group joined from
    torchrun's environment when WORLD_SIZE > 1 (only barriers are needed), else (0, 1, False)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), False
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1, False
    dist.init_process_group("gloo")
    return dist.get_rank(), dist.get_world_size(), True


def _barrier(world: int) -> None:
    if world > 1:
        dist.barrier()


def _shard_done(out: Path, j: int, key: str, listed: Mapping[int, Mapping[str, Any]]) -> bool:
    """Whether shard j is finished: a record of this run whose file matches its sha256. A shard that only
    the manifest of an interrupted ``write_shards`` run lists (``listed``) is adopted: its record is written."""
    path = out / RECORD.format(j)
    try:
        record = json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:  # a damaged record: redo the shard
        record = {}
    adopt = not (record.get("run") == key and record.get("index") == j)
    entry = listed.get(j) if adopt else {k: v for k, v in record.items() if k != "run"}
    if entry is None or not (out / entry["file"]).is_file() or sha256_file(out / entry["file"]) != entry["sha256"]:
        return False
    if adopt:
        _write_record(path, {**entry, "run": key})
    return True


def write_shards_distributed(
    out_dir: str | Path,
    model: Adapter,
    sampler: Sampler,
    *,
    n: int,
    seed: int,
    batch_size: int,
    shard_size: int,
    config: Mapping[str, Any] | None = None,
    decode: Decode | None = None,
    shape: tuple[int, int, int] | None = None,
    device: torch.device | str = "cpu",
    progress: bool = False,
    on_shard: Callable[[int, int, bool], None] | None = None,
    prompts: Prompts | None = None,
) -> dict[str, Any]:
    """``write_shards`` for one or many processes: the same shards, byte for byte, on any world size.

    Under torchrun (WORLD_SIZE > 1) the processes join a gloo group (or use an initialised one); rank r
    samples shards j with j mod world == r. Each finished shard gets a self-describing record
    ``shard_XXXXX.json`` (its manifest entry plus a key of the run), written atomically after the shard.
    After a barrier rank 0 assembles ``manifest.json`` (the ``write_shards`` format, so ``load_shards``
    and ``export_adm_npz`` read it) from the records. A rerun, with any world size, skips every shard
    whose record and sha256 check out, so a killed run resumes without losing or repeating work; shards
    from an interrupted ``write_shards`` run with the same identity are adopted. Shards are written with
    fixed zip timestamps, so a shard's bytes depend only on the run and its samples.

    Args:
        out_dir, model, sampler, n, seed, batch_size, shard_size, config, decode, shape: as in
            ``write_shards``.
        device: where this process samples; under torchrun on GPUs pass ``cuda:{LOCAL_RANK}`` (the
            model must be there too).
        progress: show progress bars (rank 0 only).
        on_shard: called as ``on_shard(j, count, resumed)`` after this rank has found shard j of ``count`` finished
            (``resumed``: by an earlier run) or written it (cluster jobs log their progress with it).
        prompts: text-to-image prompts (sample i gets prompt i mod len, ``generate``); their content hash
            (``Prompts.id``) joins the run's identity as ``config.prompts``, so shards of other prompts are never
            resumed.

    Returns:
        The final manifest (every rank returns it).
    """
    if prompts is not None:
        config = {**(config or {}), "prompts": prompts.id()}
    identity = run_identity(sampler, config, seed=seed, n=n, shard_size=shard_size)
    rank, world, created = _join_process_group()
    try:
        out, old = open_run(out_dir, identity)
        key = content_hash(identity)  # sha256 of the sorted JSON, 16 hex digits
        listed = {int(e["index"]): e for e in old.get("shards", [])}
        _barrier(world)  # every rank has checked the folder before rank 0 may write a manifest
        if rank == 0 and not (out / MANIFEST).is_file():
            write_manifest(out, {**identity, "shards": [], "complete": False})  # claims the folder
        sample = functools.partial(
            generate, model, sampler, seed=seed, batch_size=batch_size, progress=progress and rank == 0,
            decode=decode, shape=shape, device=device, prompts=prompts,
        )
        count = -(-n // shard_size)
        for j in range(rank, count, world):
            if _shard_done(out, j, key, listed):
                if on_shard is not None:
                    on_shard(j, count, True)
                continue
            entry = sample_shard(out, j, identity, sample, _deterministic_npz)
            _write_record(out / RECORD.format(j), {**entry, "run": key})  # after the shard: marks it done
            if on_shard is not None:
                on_shard(j, count, False)
        _barrier(world)  # all shards and records are on disk
        if rank == 0:
            shards = []
            for j in range(count):
                record = json.loads((out / RECORD.format(j)).read_text())
                if record.get("run") != key:
                    raise PfbenchError(f"{out / RECORD.format(j)} belongs to another run; rerun to redo it")
                shards.append({k: v for k, v in record.items() if k != "run"})
            write_manifest(out, {**identity, "shards": shards, "complete": True, "totals": totals(shards)})
        _barrier(world)  # the manifest is final before any rank returns it
        return read_manifest(out)
    finally:
        if created:
            dist.destroy_process_group()
