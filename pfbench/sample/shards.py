"""Sample stage on disk (docs/protocol.md §8): generated images → uint8 shards + ``manifest.json``, resumable.

Shards are ``.npz`` files of uint8 NCHW images from ``pfbench.sample.generate``, written atomically;
``manifest.json`` records the run's identity and a sha256 per finished shard, so a killed run resumes at
the first missing or damaged shard without duplicating or losing samples. ``pfbench.sample.distributed``
writes the same shards, byte for byte, from one process or many (torchrun), with the helpers below.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pfbench import PfbenchError
from pfbench.adapters.base import Adapter
from pfbench.io import atomic_write, atomic_write_bytes, sha256_file
from pfbench.sample.generate import Generated, generate
from pfbench.samplers.base import Sampler

MANIFEST = "manifest.json"
FORMAT = "pfbench-shards/1"


Writer = Callable[[Generated], Callable[[Any], None]]  # a shard's serialiser: images -> write(file)


def _npz_writer(gen: Generated) -> Callable[[Any], None]:
    images, labels, indices = gen.images.numpy(), gen.labels.numpy(), gen.indices.numpy()
    return lambda f: np.savez(f, images=images, labels=labels, indices=indices)


def write_manifest(out: Path, manifest: Mapping[str, Any]) -> None:
    """Writes ``out/manifest.json`` atomically."""
    atomic_write_bytes(out / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode())


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


def valid_prefix(out: Path, manifest: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The finished shards, in order, up to the first missing or damaged one."""
    good: list[dict[str, Any]] = []
    for j, entry in enumerate(manifest.get("shards", [])):
        path = out / entry["file"]
        if entry.get("index") != j or not path.is_file() or sha256_file(path) != entry["sha256"]:
            break
        good.append(entry)
    return good


def run_identity(
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


def open_run(out_dir: str | Path, identity: Mapping[str, Any]) -> tuple[Path, dict[str, Any]]:
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


def sample_shard(
    out: Path, j: int, identity: Mapping[str, Any], sample: Callable[..., Generated], writer: Writer
) -> dict[str, Any]:
    """Samples shard j, writes it atomically with ``writer`` and returns its manifest entry.

    Shard j holds samples [j·shard_size, min((j+1)·shard_size, n)); ``sample(n=, start=)`` is
    ``generate`` with the run's other arguments bound.
    """
    n, shard_size = identity["n"], identity["shard_size"]
    lo, hi = j * shard_size, min((j + 1) * shard_size, n)
    gen = sample(n=hi - lo, start=lo)
    path = out / f"shard_{j:05d}.npz"
    atomic_write(path, writer(gen))
    return {
        "index": j,
        "file": path.name,
        "start": lo,
        "count": hi - lo,
        "sha256": sha256_file(path),
        "nfe": gen.nfe,
        "forwards": gen.forwards,
        "gflops": gen.gflops,
        "seconds": gen.seconds,
        "image_shape": list(gen.images.shape[1:]),
    }


def write_shards(
    out_dir: str | Path, model: Adapter, sampler: Sampler, *, n: int, seed: int, batch_size: int, shard_size: int,
    config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Samples n images into ``out_dir`` as uint8 shards plus ``manifest.json``, in one process; resumes if killed.

    The single-process reference writer: the sample stage itself writes through
    ``pfbench.sample.distributed.write_shards_distributed`` (the same shards, any world size, prompts, decoding
    and devices), which adopts the shards of an interrupted run of this one.

    Shard j holds samples [j·shard_size, min((j+1)·shard_size, n)). Each shard is written atomically and
    then recorded (with its sha256) in the manifest, also written atomically. On a rerun with the same
    identity (config, sampler, seed, n, shard_size) finished shards are kept and sampling resumes at the
    first missing or damaged shard; a different identity is an error.

    Args:
        out_dir: folder (created if needed).
        model, sampler, seed, batch_size: as in ``generate`` (on the CPU, no decoding, no progress bar).
        n: total samples.
        shard_size: samples per shard.
        config: JSON-serialisable description of the run (model, checkpoint, guidance...) stored and
            compared on resume.

    Returns:
        The final manifest.
    """
    identity = run_identity(sampler, config, seed=seed, n=n, shard_size=shard_size)
    out, old = open_run(out_dir, identity)
    shards = valid_prefix(out, old)
    sample = functools.partial(generate, model, sampler, seed=seed, batch_size=batch_size)
    for j in range(len(shards), -(-n // shard_size)):
        shards.append(sample_shard(out, j, identity, sample, _npz_writer))
        write_manifest(out, {**identity, "shards": shards, "complete": False})
    manifest = {**identity, "shards": shards, "complete": True, "totals": totals(shards)}
    write_manifest(out, manifest)
    return manifest


def totals(shards: list[dict[str, Any]]) -> dict[str, float]:
    """The manifest's ``totals``: samples, max NFE, per-sample mean forwards and GFLOPs, summed seconds."""
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
    shards = valid_prefix(out, manifest)
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
    nhwc = np.ascontiguousarray(images.transpose(0, 2, 3, 1))
    return atomic_write(path, lambda f: np.savez(f, nhwc, labels))
