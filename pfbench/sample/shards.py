"""Sample stage on disk (SPEC §5): generated images → uint8 shards + ``manifest.json``, resumable.

Shards are ``.npz`` files of uint8 NCHW images from ``pfbench.sample.generate``, written atomically;
``manifest.json`` records the run's identity and a sha256 per finished shard, so a killed run resumes at
the first missing or damaged shard without duplicating or losing samples. ``write_shards_distributed``
writes the same shards, byte for byte, from one process or many (torchrun).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pfbench import PfbenchError
from pfbench.adapters.base import Adapter
from pfbench.sample.generate import Decode, Generated, generate
from pfbench.samplers.base import Sampler

MANIFEST = "manifest.json"
FORMAT = "pfbench-shards/1"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _atomic_write(path: Path, write: Callable[[Any], None]) -> None:
    """Writes via a temp file in the same folder, fsync, then rename: readers never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


_Writer = Callable[[Generated], Callable[[Any], None]]  # a shard's serialiser: images -> write(file)


def _npz_writer(gen: Generated) -> Callable[[Any], None]:
    images, labels, indices = gen.images.numpy(), gen.labels.numpy(), gen.indices.numpy()
    return lambda f: np.savez(f, images=images, labels=labels, indices=indices)


def _write_manifest(out: Path, manifest: Mapping[str, Any]) -> None:
    _atomic_write(out / MANIFEST, lambda f: f.write(json.dumps(manifest, indent=1, sort_keys=True).encode()))


def _sampler_config(sampler: Sampler) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if dataclasses.is_dataclass(sampler) and not isinstance(sampler, type):
        fields = dataclasses.asdict(sampler)
    return {"name": getattr(sampler, "name", type(sampler).__name__), **fields}


def read_manifest(out_dir: str | Path) -> dict[str, Any]:
    """The manifest of a shard folder; a missing one is a user error naming the folder."""
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        raise PfbenchError(f"no {MANIFEST} in {out_dir}; run the sample stage (write_shards) into it first")
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _valid_prefix(out: Path, manifest: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The finished shards, in order, up to the first missing or damaged one."""
    good: list[dict[str, Any]] = []
    for j, entry in enumerate(manifest.get("shards", [])):
        path = out / entry["file"]
        if entry.get("index") != j or not path.is_file() or _sha256(path) != entry["sha256"]:
            break
        good.append(entry)
    return good


def _run_identity(
    sampler: Sampler, config: Mapping[str, Any] | None, *, seed: int, n: int, shard_size: int
) -> dict[str, Any]:
    """What a shard run is (compared on resume): the manifest's fields other than its shards."""
    if shard_size < 1 or n < 1:
        raise PfbenchError(f"write_shards needs n >= 1 and shard_size >= 1; got {n}, {shard_size}")
    return {
        "format": FORMAT,
        "config": json.loads(json.dumps(dict(config or {}), sort_keys=True)),
        "sampler": _sampler_config(sampler),
        "seed": seed,
        "n": n,
        "shard_size": shard_size,
    }


def _open_run(out_dir: str | Path, identity: Mapping[str, Any]) -> tuple[Path, dict[str, Any]]:
    """Creates ``out_dir`` if needed; returns it and the manifest already there ({} if none).

    A manifest of another identity is an error naming the fields that differ.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / MANIFEST).is_file():
        return out, {}
    old = read_manifest(out)
    differs = [k for k in identity if old.get(k) != identity[k]]
    if differs:
        raise PfbenchError(
            f"{out} holds a different sampling run (differs in: {', '.join(differs)}); "
            "use a new output folder or delete this one"
        )
    return out, old


def _sample_shard(
    out: Path, j: int, identity: Mapping[str, Any], sample: Callable[..., Generated], writer: _Writer
) -> dict[str, Any]:
    """Samples shard j, writes it atomically with ``writer`` and returns its manifest entry.

    Shard j holds samples [j·shard_size, min((j+1)·shard_size, n)); ``sample(n=, start=)`` is
    ``generate`` with the run's other arguments bound.
    """
    n, shard_size = identity["n"], identity["shard_size"]
    lo, hi = j * shard_size, min((j + 1) * shard_size, n)
    gen = sample(n=hi - lo, start=lo)
    path = out / f"shard_{j:05d}.npz"
    _atomic_write(path, writer(gen))
    return {
        "index": j,
        "file": path.name,
        "start": lo,
        "count": hi - lo,
        "sha256": _sha256(path),
        "nfe": gen.nfe,
        "forwards": gen.forwards,
        "gflops": gen.gflops,
        "seconds": gen.seconds,
        "image_shape": list(gen.images.shape[1:]),
    }


def write_shards(
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
) -> dict[str, Any]:
    """Samples n images into ``out_dir`` as uint8 shards plus ``manifest.json``; resumes if interrupted.

    Shard j holds samples [j·shard_size, min((j+1)·shard_size, n)). Each shard is written atomically and
    then recorded (with its sha256) in the manifest, also written atomically. On a rerun with the same
    identity (config, sampler, seed, n, shard_size) finished shards are kept and sampling resumes at the
    first missing or damaged shard; a different identity is an error.

    Args:
        out_dir: folder (created if needed).
        model, sampler, seed, batch_size, decode, shape, device: as in ``generate``.
        n: total samples.
        shard_size: samples per shard.
        config: JSON-serialisable description of the run (model, checkpoint, guidance...) stored and
            compared on resume.

    Returns:
        The final manifest.
    """
    identity = _run_identity(sampler, config, seed=seed, n=n, shard_size=shard_size)
    out, old = _open_run(out_dir, identity)
    shards = _valid_prefix(out, old)
    sample = functools.partial(
        generate, model, sampler, seed=seed, batch_size=batch_size, progress=progress, decode=decode,
        shape=shape, device=device,
    )
    for j in range(len(shards), -(-n // shard_size)):
        shards.append(_sample_shard(out, j, identity, sample, _npz_writer))
        _write_manifest(out, {**identity, "shards": shards, "complete": False})
    manifest = {**identity, "shards": shards, "complete": True, "totals": _totals(shards)}
    _write_manifest(out, manifest)
    return manifest


def _totals(shards: list[dict[str, Any]]) -> dict[str, float]:
    n = sum(s["count"] for s in shards)
    return {
        "samples": n,
        "nfe": max(s["nfe"] for s in shards),
        "forwards": sum(s["forwards"] * s["count"] for s in shards) / n,
        "gflops": sum(s["gflops"] * s["count"] for s in shards) / n,
        "seconds": sum(s["seconds"] for s in shards),
    }


def iter_shards(out_dir: str | Path) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yields (images (b, 3, H, W) uint8, labels (b,) int64) per shard of a complete, verified run."""
    out = Path(out_dir)
    manifest = read_manifest(out)
    shards = _valid_prefix(out, manifest)
    if not manifest.get("complete") or len(shards) != len(manifest["shards"]):
        raise PfbenchError(
            f"{out} holds an unfinished or damaged sampling run; rerun the sample stage to resume it"
        )
    for entry in shards:
        with np.load(out / entry["file"]) as z:
            yield z["images"], z["labels"]


def load_shards(out_dir: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """All images (N, 3, H, W) uint8 and labels (N,) int64 of a complete run, in sample order."""
    parts = list(iter_shards(out_dir))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def export_adm_npz(out_dir: str | Path, path: str | Path) -> Path:
    """Writes the ADM evaluator layout: ``arr_0`` (N, H, W, 3) uint8 NHWC, ``arr_1`` (N,) int64 labels."""
    images, labels = load_shards(out_dir)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    nhwc = np.ascontiguousarray(images.transpose(0, 2, 3, 1))
    _atomic_write(target, lambda f: np.savez(f, nhwc, labels))
    return target


# ----------------------------------------------------------------------------------------------------
# multi-process sharding (torchrun): shard j belongs to rank j mod world


RECORD = "shard_{:05d}.json"  # per-shard record next to each shard: its manifest entry plus the run key
_EPOCH = (1980, 1, 1, 0, 0, 0)  # fixed zip member time, so equal images give byte-identical shards


def _deterministic_npz(gen: Generated) -> Callable[[Any], None]:
    """Like ``np.savez`` (uncompressed, same member names), but with fixed member timestamps."""
    import zipfile

    arrays = {"images": gen.images.numpy(), "labels": gen.labels.numpy(), "indices": gen.indices.numpy()}

    def write(f: Any) -> None:
        with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as zf:
            for name, array in arrays.items():
                with zf.open(zipfile.ZipInfo(f"{name}.npy", date_time=_EPOCH), "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.ascontiguousarray(array))

    return write


def _write_record(path: Path, record: Mapping[str, Any]) -> None:
    data = json.dumps(dict(record), sort_keys=True).encode()
    _atomic_write(path, lambda f: f.write(data))


def _join_process_group() -> tuple[int, int, bool]:
    """(rank, world, created): the initialised torch.distributed group, or a gloo group joined from
    torchrun's environment when WORLD_SIZE > 1 (only barriers are needed), else (0, 1, False)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), False
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1, False
    dist.init_process_group("gloo")
    return dist.get_rank(), dist.get_world_size(), True


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

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
    if entry is None or not (out / entry["file"]).is_file() or _sha256(out / entry["file"]) != entry["sha256"]:
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

    Returns:
        The final manifest (every rank returns it).
    """
    identity = _run_identity(sampler, config, seed=seed, n=n, shard_size=shard_size)
    rank, world, created = _join_process_group()
    try:
        out, old = _open_run(out_dir, identity)
        key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
        listed = {int(e["index"]): e for e in old.get("shards", [])}
        _barrier(world)  # every rank has checked the folder before rank 0 may write a manifest
        if rank == 0 and not (out / MANIFEST).is_file():
            _write_manifest(out, {**identity, "shards": [], "complete": False})  # claims the folder
        sample = functools.partial(
            generate, model, sampler, seed=seed, batch_size=batch_size, progress=progress and rank == 0,
            decode=decode, shape=shape, device=device,
        )
        count = -(-n // shard_size)
        for j in range(rank, count, world):
            if _shard_done(out, j, key, listed):
                continue
            entry = _sample_shard(out, j, identity, sample, _deterministic_npz)
            _write_record(out / RECORD.format(j), {**entry, "run": key})  # after the shard: marks it done
        _barrier(world)  # all shards and records are on disk
        if rank == 0:
            shards = []
            for j in range(count):
                record = json.loads((out / RECORD.format(j)).read_text())
                if record.get("run") != key:
                    raise PfbenchError(f"{out / RECORD.format(j)} belongs to another run; rerun to redo it")
                shards.append({k: v for k, v in record.items() if k != "run"})
            _write_manifest(out, {**identity, "shards": shards, "complete": True, "totals": _totals(shards)})
        _barrier(world)  # the manifest is final before any rank returns it
        return read_manifest(out)
    finally:
        if created:
            import torch.distributed as dist

            dist.destroy_process_group()
