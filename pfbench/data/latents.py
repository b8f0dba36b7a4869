"""Pre-encoded VAE latents for training latent models (ImageNet-256: 4×32×32 per image, docs/protocol.md §1).

``encode_folder`` runs every image of a class folder once through the VAE encoder and stores the posterior
**moments** (mean and std, unscaled, float16), so training draws a fresh posterior sample per step exactly as
DiT/SiT do with on-the-fly encoding, at a fraction of the cost. With ``keep_images`` the centre-cropped uint8
pixels are stored too (REPA's encoder needs the clean image). A folder holding a ``captions.jsonl``
(``pfbench.data.prompts.CaptionedFolder``: text-to-image data) is encoded in that file's order with its captions
(one class, label 0), and the store then opens as ``CaptionedLatentData``, which text-to-image training reads.

Store layout (one folder)::

    manifest.json   written last: its presence marks a finished store
    moments.npy     (N, 2C, h, w) float16: mean then std
    labels.npy      (N,) int64
    images.npy      (N, 3, R, R) uint8 (optional)
    captions.json   N captions (captioned folders only; manifest "captions": true)
    progress.json   {"done": k} while encoding: a killed encode resumes at image k

Horizontal-flip augmentation is not applied (the moments are of the unflipped crop), as in REPA's
pre-encoded pipeline.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import track
from torch import Tensor

from pfbench import PfbenchError
from pfbench.data.imagefolder import ImageFolder
from pfbench.data.prompts import CaptionedFolder
from pfbench.io import atomic_write_text

FORMAT = "pfbench-latents/1"
MANIFEST = "manifest.json"
CAPTIONS = "captions.json"
_PROGRESS = "progress.json"


def _write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True))


def _open_array(path: Path, shape: tuple[int, ...], dtype: Any, resume: bool) -> np.ndarray:
    if resume and path.is_file():
        arr = np.load(path, mmap_mode="r+")
        if arr.shape == shape and arr.dtype == np.dtype(dtype):
            return arr
    return np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)


def encode_folder(
    src: str | Path,
    out: str | Path,
    vae: Any,
    *,
    resolution: int = 256,
    batch_size: int = 64,
    keep_images: bool = False,
    limit: int | None = None,
    progress: bool = False,
) -> Path:
    """Encodes a class-per-folder image set into a latent store; resumes an interrupted run.

    Args:
        src: ``src/<class>/<image>`` folder (e.g. ImageNet's train split), or a folder with ``captions.jsonl``.
        out: store folder (created).
        vae: a loaded ``pfbench.data.vae.Vae``.
        resolution: centre-crop size (ADM crop); latents are ``resolution / vae.factor`` on a side.
        batch_size: images per encoder call (does not change the result).
        keep_images: also store the uint8 crops (needed for REPA training).
        limit: encode only the first ``limit`` images (sorted order), e.g. for a quick subset.
        progress: rich progress bar.

    Returns:
        The store folder.
    """
    captioned = (Path(src) / "captions.jsonl").is_file()
    folder: ImageFolder | CaptionedFolder = CaptionedFolder.scan(src) if captioned else ImageFolder.scan(src)
    classes = ("image",) if isinstance(folder, CaptionedFolder) else folder.classes
    n = len(folder.files) if limit is None else min(limit, len(folder.files))
    if resolution % vae.factor:
        raise PfbenchError(f"resolution {resolution} is not a multiple of the VAE's down-sampling {vae.factor}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    side = resolution // vae.factor
    manifest = {
        "format": FORMAT, "count": n, "num_classes": len(classes), "classes": list(classes),
        "resolution": resolution, "latent_shape": [vae.channels, side, side], "scale": vae.scale,
        "vae": vae.name, "vae_sha256": vae.sha256, "source": str(Path(src).resolve()), "crop": "adm-center",
        "images": keep_images, "limit": limit,
    } | ({"captions": True} if captioned else {})  # class-labelled stores keep the manifest they had
    state_file = out / _PROGRESS
    state = json.loads(state_file.read_text()) if state_file.is_file() else {}
    if (out / MANIFEST).is_file():
        if json.loads((out / MANIFEST).read_text()) == manifest:
            return out  # already finished
        raise PfbenchError(f"{out} already holds a finished latent store of other settings (source, VAE, resolution "
                           "or limit); encode into another folder")
    if state and state.get("manifest") != manifest:
        raise PfbenchError(f"{out} holds an interrupted encode with other settings ({state.get('done', 0)} images "
                           "done); rerun it with the same settings to finish it, or use another folder")
    same = bool(state)
    done = int(state.get("done", 0)) if same else 0
    moments = _open_array(out / "moments.npy", (n, 2 * vae.channels, side, side), np.float16, same)
    labels = _open_array(out / "labels.npy", (n,), np.int64, same)
    images = _open_array(out / "images.npy", (n, 3, resolution, resolution), np.uint8, same) if keep_images else None
    bounds = range(done, n, batch_size)
    if progress:
        bounds = track(bounds, description=f"encoding {n - done} images")  # type: ignore[assignment]
    for lo in bounds:
        hi = min(lo + batch_size, n)
        crops = np.stack([folder.load(i, resolution) for i in range(lo, hi)])  # (b, R, R, 3) uint8
        pixels = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 127.5 - 1  # (b, 3, R, R) in [-1, 1]
        mean, std = vae.moments(pixels)  # (b, C, h, w) each
        moments[lo:hi] = torch.cat([mean, std], 1).cpu().numpy().astype(np.float16)
        labels[lo:hi] = 0 if isinstance(folder, CaptionedFolder) else folder.labels[lo:hi]
        if images is not None:
            images[lo:hi] = crops.transpose(0, 3, 1, 2)
        for arr in (moments, labels, images):
            if isinstance(arr, np.memmap):
                arr.flush()
        _write_json(state_file, {"manifest": manifest, "done": hi})  # only after the data is on disk
    if isinstance(folder, CaptionedFolder):
        atomic_write_text(out / CAPTIONS, json.dumps(list(folder.captions[:n])))
    _write_json(out / MANIFEST, manifest)
    state_file.unlink(missing_ok=True)
    return out


@dataclass
class LatentData:
    """A finished latent store, read lazily (memory-mapped) for training.

    ``sample(idx, eps)`` returns scaled posterior samples ``(mean + std·eps)·scale`` (float32), the model's x1.
    """

    root: Path
    manifest: dict[str, Any]
    moments: np.ndarray
    labels: np.ndarray
    images: np.ndarray | None
    needs_eps: bool = True

    @classmethod
    def open(cls, root: str | Path) -> LatentData:
        root = Path(root)
        man = root / MANIFEST
        if not man.is_file():
            why = "encoding was interrupted: rerun `pfbench data encode` to finish it" if (root / _PROGRESS).is_file() \
                else "not a latent store: create one with `pfbench data encode`"
            raise PfbenchError(f"{root}: no {MANIFEST} ({why})")
        manifest = json.loads(man.read_text())
        if manifest.get("format") != FORMAT:
            raise PfbenchError(f"{man}: format {manifest.get('format')!r}, expected {FORMAT!r}")
        try:
            moments = np.load(root / "moments.npy", mmap_mode="r")
            labels = np.load(root / "labels.npy", mmap_mode="r")
            images = np.load(root / "images.npy", mmap_mode="r") if manifest.get("images") else None
        except (OSError, ValueError) as err:
            raise PfbenchError(f"latent store {root} is damaged ({err}); encode it again") from None
        if len(moments) != manifest["count"] or len(labels) != manifest["count"]:
            raise PfbenchError(f"latent store {root} is damaged (array lengths differ from the manifest)")
        if manifest.get("captions"):
            try:
                texts = json.loads((root / CAPTIONS).read_text())
            except (OSError, ValueError) as err:
                raise PfbenchError(f"latent store {root} is damaged ({CAPTIONS}: {err}); encode it again") from None
            if len(texts) != manifest["count"]:
                raise PfbenchError(f"latent store {root} is damaged ({CAPTIONS} length differs from the manifest)")
            return CaptionedLatentData(root, manifest, moments, labels, images, texts=tuple(texts))
        return cls(root, manifest, moments, labels, images)

    @property
    def size(self) -> int:
        return int(self.manifest["count"])

    @property
    def num_classes(self) -> int:
        return int(self.manifest["num_classes"])

    @property
    def shape(self) -> tuple[int, int, int]:
        c, h, w = self.manifest["latent_shape"]
        return int(c), int(h), int(w)

    def sample(self, idx: Tensor, eps: Tensor | None) -> tuple[Tensor, Tensor]:
        """(x1 (b, C, h, w) float32 scaled latents, y (b,) int64) for dataset indices idx and noise eps (b, C, h, w)."""
        if eps is None:
            raise PfbenchError("LatentData.sample needs the posterior noise eps (needs_eps is True)")
        rows = idx.cpu().numpy()
        order = np.argsort(rows)  # memmaps read fastest in index order
        m = np.empty((len(rows), *self.moments.shape[1:]), np.float16)
        m[order] = self.moments[rows[order]]
        m_t = torch.from_numpy(m).float()  # (b, 2C, h, w)
        c = self.shape[0]
        x1 = (m_t[:, :c] + m_t[:, c:] * eps.cpu()) * float(self.manifest["scale"])
        y = torch.from_numpy(np.asarray(self.labels[rows], np.int64))
        return x1, y

    def pixels(self, idx: Tensor) -> Tensor | None:
        """Clean crops (b, 3, R, R) float32 in [−1, 1], or None when the store holds no images."""
        if self.images is None:
            return None
        rows = idx.cpu().numpy()
        return torch.from_numpy(np.asarray(self.images[rows])).float() / 127.5 - 1


@dataclass
class CaptionedLatentData(LatentData):
    """A latent store encoded from a captioned folder: ``captions(idx)`` is what text-to-image training reads."""

    texts: tuple[str, ...] = ()

    def captions(self, idx: Tensor) -> list[str]:
        """Captions of store rows ``idx``."""
        return [self.texts[i] for i in idx.tolist()]


__all__ = ["FORMAT", "CaptionedLatentData", "LatentData", "encode_folder"]
