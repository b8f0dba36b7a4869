"""Image sources (docs/protocol.md §9): open samples or a reference and stream its uint8 images in batches.

A source is one of
- a pfbench shard folder (``manifest.json``, written by ``pfbench.sample.shards.write_shards``);
- an image folder: PNG/JPEG files sorted by name, optional ``labels.json`` / ``captions.json`` (a list
  in file order, or a ``{file name: value}`` map);
- an ADM-style ``.npz``: ``arr_0`` (N, H, W, 3) uint8, optional ``arr_1`` (N,) labels — what
  DiT/SiT/REPA/the reference PF ``sample_ddp.py`` save, so their samples are scored the same way —
  or an ADM reference batch holding ``mu``/``sigma``;
- the string ``"embedded"`` (the embedded test split);
- uint8 images already in memory (``images_from_tensor``).

``open_images`` reads no pixels; ``iter_images`` streams them (an ``.npz`` member incrementally, never
loaded whole); ``content_id`` is the content hash that keys cached reference statistics.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from rich.console import Console
from torch import Tensor

from pfbench import PfbenchError
from pfbench.data.embedded import EmbeddedSpec, generate
from pfbench.data.heterogeneity import DEFAULT_HETEROGENEITY
from pfbench.io import content_key
from pfbench.metrics.refstats import files_key, images_key, iter_npz_images
from pfbench.types import quantize
from pfbench.weights import file_sha256

_IMAGE_EXT = {".png", ".jpg", ".jpeg"}
_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "F"}  # PIL modes of single-channel (gray) images
EMBEDDED_REF = "embedded"


@dataclass(frozen=True, eq=False)
class Images:
    """An opened image collection (samples or reference); images are read only by ``iter_images``.

    Attributes:
        kind: ``"shards"``, ``"folder"``, ``"npz"``, ``"embedded"`` or ``"array"`` (in memory).
        where: what the user passed, for messages.
        n: number of images (0 for an ADM reference ``.npz`` holding statistics only).
        shape: (H, W) of every image.
        labels: (N,) int64, or ``None``.
        captions: N captions, or ``None``.
        files: image files (folder) or shard files (shards), in order.
        adm_stats: an ``.npz`` holding ADM reference statistics (``mu``, ``sigma``).
        spec: the embedded split, for ``kind == "embedded"``.
    """

    kind: str
    where: str
    n: int
    shape: tuple[int, int]
    labels: np.ndarray | None = None
    captions: tuple[str, ...] | None = None
    files: tuple[Path, ...] = ()
    adm_stats: bool = False
    spec: EmbeddedSpec | None = None
    array: Tensor | None = None  # (N, 3, H, W) uint8, for kind "array"


def _npz_header(path: Path, key: str) -> tuple[tuple[int, ...], np.dtype[Any]] | None:
    with zipfile.ZipFile(path) as zf:
        if f"{key}.npy" not in zf.namelist():
            return None
        with zf.open(f"{key}.npy") as f:
            version = np.lib.format.read_magic(f)
            read = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, _, dtype = read(f)
    return shape, dtype


def _npz_member(path: Path, key: str) -> np.ndarray:
    with np.load(path) as z:
        return np.asarray(z[key])


def _side_file(folder: Path, name: str, files: Sequence[Path], kind: type) -> list[Any] | None:
    """labels.json / captions.json: a list in file order or a {file name: value} map."""
    path = folder / name
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        values = [data[p.name] for p in files] if isinstance(data, dict) else list(data)
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise PfbenchError(f"{path}: unreadable or incomplete ({err}); give a list in file order or a "
                           "{file name: value} map covering every image") from None  # fmt: skip
    if len(values) != len(files) or not all(isinstance(v, kind) for v in values):
        raise PfbenchError(
            f"{path}: needs {len(files)} {kind.__name__} values (one per image), got {len(values)}"
        )
    return values


def _labels(values: Any, n: int, where: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.shape != (n,) or not np.issubdtype(arr.dtype, np.integer):
        raise PfbenchError(f"{where}: labels must be ({n},) integers, got {arr.dtype} {arr.shape}")
    return arr.astype(np.int64)


def embedded_reference(resolution: int, ref_size: int, heterogeneity: float = DEFAULT_HETEROGENEITY) -> Images:
    """The embedded test split (seed 0) as a reference, at ``heterogeneity`` (``pfbench.data.heterogeneity``)."""
    spec = EmbeddedSpec(resolution=resolution, split="test", size=ref_size, seed=0, heterogeneity=heterogeneity)
    where = EMBEDDED_REF if heterogeneity == DEFAULT_HETEROGENEITY else f"{EMBEDDED_REF}:h{heterogeneity:g}"
    return Images("embedded", where, ref_size, (resolution, resolution), spec=spec)


def open_images(
    src: str | os.PathLike[str], what: str, *, resolution: int = 16, ref_size: int = 10_000
) -> Images:
    """Opens samples or a reference without reading its pixels.

    Args:
        src: shard folder, image folder, ``.npz``, or ``"embedded"``.
        what: ``"samples"`` or ``"ref"``, for messages.
        resolution: image side of the embedded reference (the samples' side).
        ref_size: images of the embedded test split.

    Raises:
        PfbenchError: missing path, unknown format, empty folder, inconsistent labels.
    """
    if isinstance(src, str) and src == EMBEDDED_REF:
        return embedded_reference(resolution, ref_size)
    path = Path(src)
    if (path / "manifest.json").is_file():
        from pfbench.sample.shards import read_manifest

        man = read_manifest(path)
        if not man.get("complete") or not man.get("shards"):
            raise PfbenchError(f"{what} {path}: unfinished sampling run; rerun the sample stage to finish it")
        files = tuple(path / s["file"] for s in man["shards"])
        for f, s in zip(files, man["shards"], strict=True):
            if not f.is_file() or file_sha256(f) != s["sha256"]:
                raise PfbenchError(
                    f"{what} {path}: shard {f.name} is missing or damaged; rerun the sample stage"
                )
        shard_labels = np.concatenate([_npz_member(f, "labels") for f in files])
        shape = tuple(man["shards"][0]["image_shape"][1:])
        return Images(
            "shards", str(path), len(shard_labels), (int(shape[0]), int(shape[1])), shard_labels, files=files
        )
    if path.is_dir():
        files = tuple(sorted(p for p in path.iterdir() if p.suffix.lower() in _IMAGE_EXT and p.is_file()))
        if not files:
            raise PfbenchError(f"{what} folder {path} holds no PNG/JPEG images (and no manifest.json)")
        with Image.open(files[0]) as im:
            w, h = im.size
        lab, caps = _side_file(path, "labels.json", files, int), _side_file(path, "captions.json", files, str)
        folder_labels = _labels(lab, len(files), str(path / "labels.json")) if lab is not None else None
        return Images(
            "folder", str(path), len(files), (h, w), folder_labels, tuple(caps) if caps else None, files
        )
    if path.is_file() and path.suffix == ".npz":
        try:
            head = _npz_header(path, "arr_0")
            with np.load(path) as z:
                adm = {"mu", "sigma"} <= set(z.files)
                arr_1 = z["arr_1"] if "arr_1" in z.files else None
        except (zipfile.BadZipFile, OSError, ValueError) as err:
            raise PfbenchError(f"{what} {path}: not a readable .npz ({err})") from None
        if head is None and not adm:
            raise PfbenchError(f"{what} {path}: no images 'arr_0' (N, H, W, 3) uint8 and no 'mu'/'sigma'")
        shape, dtype = head if head is not None else ((0, 0, 0, 3), np.dtype(np.uint8))
        if dtype != np.uint8 or len(shape) != 4 or shape[3] != 3:
            raise PfbenchError(f"{what} {path}: arr_0 must be uint8 (N, H, W, 3) NHWC, got {dtype} {shape}")
        labels = _labels(arr_1, shape[0], f"{path}:arr_1") if arr_1 is not None and head is not None else None
        return Images("npz", str(path), shape[0], (shape[1], shape[2]), labels, adm_stats=adm, files=(path,))
    if not path.exists():
        raise PfbenchError(f"{what} {path} not found; pass a shard folder, an image folder or an .npz"
                           + (", or 'embedded'" if what == "ref" else ""))  # fmt: skip
    raise PfbenchError(f"{what} {path}: unknown format; pass a shard folder, an image folder or an ADM .npz")


def images_from_tensor(images: Tensor, labels: Tensor | None = None, where: str = "in-memory samples",
                       captions: Sequence[str] | None = None) -> Images:  # fmt: skip
    """Wraps uint8 images (N, 3, H, W) already in memory (e.g. just sampled) so ``evaluate`` needs no file.

    ``captions`` (one prompt per image, text-to-image samples) reach the metrics as ``Cond.text``.
    """
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise PfbenchError(f"{where}: expected uint8 (N, 3, H, W), got {images.dtype} {tuple(images.shape)}")
    lab = None if labels is None else _labels(labels.cpu().numpy(), images.shape[0], where)
    if captions is not None and (len(captions) != images.shape[0] or not all(isinstance(c, str) for c in captions)):
        raise PfbenchError(f"{where}: needs {images.shape[0]} caption strings (one per image), got {len(captions)}")
    caps = tuple(captions) if captions is not None else None
    return Images("array", where, int(images.shape[0]), (int(images.shape[2]), int(images.shape[3])), lab, caps,
                  array=images.cpu())


def iter_images(src: Images, batch_size: int) -> Iterator[Tensor]:
    """uint8 (B, 3, H, W) batches of exactly ``batch_size`` (the last may be shorter), in order."""
    if src.kind == "array":
        assert src.array is not None
        for lo in range(0, src.n, batch_size):
            yield src.array[lo : lo + batch_size]
    elif src.kind == "npz":
        yield from iter_npz_images(src.files[0], batch_size)
    elif src.kind == "embedded":
        assert src.spec is not None
        for lo in range(0, src.n, batch_size):
            yield quantize(generate(src.spec, lo, min(lo + batch_size, src.n)).images)
    elif src.kind == "folder":
        gray: list[str] = []
        for lo in range(0, src.n, batch_size):
            arrs = []
            for p in src.files[lo : lo + batch_size]:
                with Image.open(p) as im:
                    if im.mode in _GRAY_MODES:
                        gray.append(im.mode)
                    arr = np.asarray(im.convert("RGB"))  # (H, W, 3)
                if arr.shape[:2] != src.shape:
                    raise PfbenchError(
                        f"{p}: image is {arr.shape[:2]}, the folder's first image is {src.shape}"
                    )
                arrs.append(arr)
            yield torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).contiguous()
        if gray:
            Console(stderr=True, highlight=False, soft_wrap=True).print(
                f"[yellow]note:[/] {src.where}: {len(gray)} of {src.n} images are grayscale (mode "
                f"{', '.join(sorted(set(gray)))}); they were scored as RGB with the gray value in all three channels")
    else:  # shards: re-cut into batch_size pieces so batches are the same whatever the shard size
        buf: list[Tensor] = []
        for f in src.files:
            with np.load(f) as z:
                buf.append(torch.from_numpy(z["images"]))  # (b, 3, H, W)
            while sum(len(b) for b in buf) >= batch_size:
                cat = torch.cat(buf)
                yield cat[:batch_size]
                buf = [cat[batch_size:]]
        if buf and sum(len(b) for b in buf):
            yield torch.cat(buf)


def content_id(src: Images) -> str:
    """Content hash of the images (cache key of reference statistics)."""
    if src.kind == "npz":
        return f"npz:{file_sha256(src.files[0])}"
    if src.kind == "array":
        assert src.array is not None
        return images_key(src.array)
    if src.kind == "folder":
        return files_key(src.files, Path(src.where))
    if src.kind == "shards":
        return content_key("shards", *(file_sha256(f) for f in src.files))
    assert src.spec is not None
    return images_key(quantize(generate(src.spec).images))
