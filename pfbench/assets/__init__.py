"""Weight files shipped with pfbench, their checksums, and a verifying loader.

Files are looked up first in this package directory (shipped files, checked against
``CHECKSUMS``), then in ``<cache root>/assets`` (files written by ``pfbench assets build``, checked
against the ``<file>.sha256`` written next to them). A file that fails its checksum is refused;
a missing file raises an error that names where it was looked for and how to rebuild it.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import torch
from safetensors.torch import load as _st_load
from safetensors.torch import save as _st_save

from pfbench import PfbenchError
from pfbench.io import atomic_write_bytes, atomic_write_text, sha256_bytes

ASSETS_DIR = Path(__file__).resolve().parent

# name -> sha256 of the shipped file (update with the value `pfbench assets build` prints).
CHECKSUMS: dict[str, str] = {
    "embedded_net_r16.safetensors": "55493cf2f9b60131d57ec07892d64bba845a8f64041eed11b6cccdc55a33be2a",
    "tiny_clip_r16.safetensors": "f1fd34befcf529501198ba87a24a216e6c3dca28dfeeeff2b36e43fdc1071e3e",
    # 32x32 feature network (256-token grid; suites/validity_r32.yaml): `pfbench assets build --resolution 32`,
    # held-out test accuracy 0.9953.
    "embedded_net_r32.safetensors": "36f79ecc7eeefc27be05189ce552e01b90b581b1364fbf2a1e0c06ec6519d5a6",
    # Attribute judge of the embedded text-to-image default (pfbench.encoders.attributes, metric attr_acc):
    # `pfbench assets build`, held-out accuracy colour 0.989, texture 0.828, size 0.855, position 0.895,
    # background colour 1.000, background kind 0.974 (the shape comes from embedded_net_r16).
    "embedded_attrs_r16.safetensors": "e6dfcb4cf7ed1a5acb29afb1728d041f1efd2c33b85270cf2d756d09570d2b08",
    # Text encoder of the embedded text-to-image default (pfbench.encoders.tiny_text; word-level, resolution-free):
    # `pfbench assets build`, held-out attribute probe accuracy 1.0000.
    "tiny_text.safetensors": "e9c7a9eb157f7e35853c38d92cf585c22632fdbfd6d3db59be5dbffd13d7c256",
    # Inference-only exports (`pfbench assets export`) of the embedded recipes at step 12000:
    # suites/recipes/embedded_{pf,sit}.yaml (README, "Shipped checkpoints").
    "embedded_pf_r16.pt": "5e0d10a74724d94bb09ba39c0153a329670adbbd1de488dc310ba805eb60e136",
    "embedded_sit_r16.pt": "1fb510327375d1880bcf563e5b42753c976163c5303f5eefdaf078857dc6206f",
}


def cache_root() -> Path:
    """pfbench's cache directory: ``$PFBENCH_CACHE`` or ``~/.cache/pfbench``."""
    env = os.environ.get("PFBENCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "pfbench"


def _candidates(name: str) -> list[Path]:
    return [ASSETS_DIR / name, cache_root() / "assets" / name]


def asset_path(name: str, rebuild_hint: str = "pfbench assets build") -> Path:
    """Where asset ``name`` lives (first of the package dir and ``<cache root>/assets``).

    Raises:
        PfbenchError: the file is in neither place; the message says how to rebuild it.
    """
    for path in _candidates(name):
        if path.is_file():
            return path
    where = ", ".join(str(p.parent) for p in _candidates(name))
    raise PfbenchError(f"asset {name} not found (looked in {where}); rebuild it with `{rebuild_hint}`")


def _expected_sha(path: Path, name: str) -> str:
    if path.parent == ASSETS_DIR and CHECKSUMS.get(name, "TBD") != "TBD":
        return CHECKSUMS[name]
    sidecar = path.with_name(path.name + ".sha256")
    if sidecar.is_file():
        return sidecar.read_text().split()[0]
    if name in CHECKSUMS and CHECKSUMS[name] != "TBD":
        return CHECKSUMS[name]
    raise PfbenchError(
        f"asset {path} has no known checksum (no entry in pfbench.assets.CHECKSUMS, no {sidecar.name})"
    )


def load_tensors(
    name: str, rebuild_hint: str = "pfbench assets build"
) -> tuple[dict[str, torch.Tensor], dict[str, str], str]:
    """Reads a safetensors asset after verifying its sha256.

    Args:
        name: file name, e.g. ``"embedded_net_r16.safetensors"``.
        rebuild_hint: command that recreates the file, quoted in the missing-file error.

    Returns:
        (tensors, metadata, sha256) — metadata is the safetensors header's ``__metadata__``.

    Raises:
        PfbenchError: missing file, checksum mismatch, or unreadable file.
    """
    path = asset_path(name, rebuild_hint)
    data = path.read_bytes()
    got, want = sha256_bytes(data), _expected_sha(path, name)
    if got != want:
        raise PfbenchError(
            f"asset {path} has sha256 {got[:16]}…, expected {want[:16]}…; the file is corrupt or "
            f"stale: delete it and rebuild with `{rebuild_hint}`"
        )
    try:
        (hlen,) = struct.unpack("<Q", data[:8])
        meta = json.loads(json.loads(data[8 : 8 + hlen]).get("__metadata__", {}).get("pfbench", "{}"))
        return _st_load(data), {str(k): str(v) for k, v in meta.items()}, got
    except Exception as err:  # noqa: BLE001  (any parse failure is a bad file)
        raise PfbenchError(f"asset {path} is not a readable safetensors file ({err}); rebuild it") from None


def save_tensors(tensors: dict[str, torch.Tensor], metadata: dict[str, str], path: str | Path) -> str:
    """Writes a safetensors file atomically plus a ``.sha256`` sidecar; returns the sha256.

    The metadata is stored as one sorted-JSON entry (safetensors writes a multi-key metadata map
    in random order, which would make identical weights hash differently).
    """
    path = Path(path)
    meta = {"pfbench": json.dumps(metadata, sort_keys=True)}
    data = _st_save({k: v.contiguous() for k, v in tensors.items()}, metadata=meta)
    sha = sha256_bytes(data)
    atomic_write_bytes(path, data)  # shared permissions (0666 less the umask): shipped files are world-readable
    atomic_write_text(path.with_name(path.name + ".sha256"), f"{sha}  {path.name}\n")
    return sha


__all__ = [
    "ASSETS_DIR",
    "CHECKSUMS",
    "asset_path",
    "cache_root",
    "load_tensors",
    "save_tensors",
]
