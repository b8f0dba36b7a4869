"""Class-labelled image folders (ImageNet's ``train/<synset>/*.JPEG`` layout) with ADM's centre crop.

Labels are the index of the class folder in sorted order, which for ImageNet's synset folders is the
standard 1000-class order (the one DiT/SiT/REPA/PF checkpoints are trained with).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from pfbench import PfbenchError

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def center_crop_adm(image: Image.Image, size: int) -> np.ndarray:
    """ADM's preprocessing: halve with a box filter while the short side is ≥ 2·size, bicubic-resize the short
    side to ``size``, then take the centre square. Returns (size, size, 3) uint8."""
    image = image.convert("RGB")
    while min(image.size) >= 2 * size:
        image = image.resize((image.size[0] // 2, image.size[1] // 2), resample=Image.Resampling.BOX)
    scale = size / min(image.size)
    image = image.resize((round(image.size[0] * scale), round(image.size[1] * scale)),
                         resample=Image.Resampling.BICUBIC)
    arr = np.asarray(image)  # (H, W, 3)
    top, left = (arr.shape[0] - size) // 2, (arr.shape[1] - size) // 2
    return np.ascontiguousarray(arr[top : top + size, left : left + size])


@dataclass(frozen=True)
class ImageFolder:
    """Files and labels of a class-per-folder dataset.

    Attributes:
        root: the folder. classes: class folder names, sorted (label = index). files: image paths, sorted by
        (class, name). labels: label of each file.
    """

    root: Path
    classes: tuple[str, ...]
    files: tuple[Path, ...]
    labels: tuple[int, ...]

    @classmethod
    def scan(cls, root: str | Path) -> ImageFolder:
        """Lists ``root/<class>/<image>``; an empty or missing folder is a user error."""
        root = Path(root)
        if not root.is_dir():
            raise PfbenchError(f"image folder {root} does not exist")
        classes = tuple(sorted(p.name for p in root.iterdir() if p.is_dir()))
        files: list[Path] = []
        labels: list[int] = []
        for label, name in enumerate(classes):
            found = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in EXTENSIONS)
            files += found
            labels += [label] * len(found)
        if not files:
            raise PfbenchError(f"image folder {root} holds no images in class sub-folders ({'/'.join(EXTENSIONS)})")
        return cls(root, classes, tuple(files), tuple(labels))

    def load(self, i: int, size: int) -> np.ndarray:
        """Image i centre-cropped to (size, size, 3) uint8; an unreadable file names itself."""
        return load_crop(self.files[i], size)


def load_crop(path: Path, size: int) -> np.ndarray:
    """The image at ``path`` centre-cropped to (size, size, 3) uint8 (ADM); an unreadable file names itself."""
    try:
        with Image.open(path) as img:
            return center_crop_adm(img, size)
    except OSError as err:
        raise PfbenchError(f"cannot read image {path}: {err}") from None


__all__ = ["EXTENSIONS", "ImageFolder", "center_crop_adm", "load_crop"]
