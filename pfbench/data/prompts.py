"""Prompt files for text-to-image evaluation, and captioned image folders for text-to-image training data.

Prompt files (``read_prompts``):

- ``.txt``: one prompt per line (COCO-style ``prompts.txt``); blank lines and lines starting with ``#`` are
  skipped, surrounding whitespace is stripped.
- ``.jsonl``: one JSON object per line with a ``"prompt"`` or ``"caption"`` string (``"text"`` also works);
  blank lines are skipped. A ``.json`` file holding a list of strings or of such objects is read the same way.

Captioned image folders (``CaptionedFolder``): images anywhere under a root folder plus a ``captions.jsonl``
whose lines are ``{"file": "<path relative to the root>", "caption": "..."}`` (``"image"``/``"file_name"`` and
``"text"``/``"prompt"`` are accepted too). Every listed file must exist; images without a caption line are
not used.

Every malformed input is a one-line ``PfbenchError`` naming the file and the line.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pfbench import PfbenchError
from pfbench.data.imagefolder import load_crop

TEXT_KEYS = ("prompt", "caption", "text")
FILE_KEYS = ("file", "image", "file_name")


def _text_of(item: Any, where: str) -> str:
    """The prompt of one JSON item: a string, or an object with one of ``TEXT_KEYS``."""
    if isinstance(item, str):
        return item
    if isinstance(item, dict):
        for k in TEXT_KEYS:
            if isinstance(item.get(k), str):
                return str(item[k])
    raise PfbenchError(f"{where}: expected a string or an object with a \"prompt\" or \"caption\" string, "
                       f"got {json.dumps(item)[:80]}")  # fmt: skip


def _json_lines(path: Path) -> list[tuple[int, Any]]:
    """(line number, parsed object) of every non-blank line of a JSONL file."""
    out: list[tuple[int, Any]] = []
    for no, line in enumerate(_read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append((no, json.loads(line)))
        except json.JSONDecodeError as err:
            raise PfbenchError(f"{path}:{no}: not valid JSON ({err.msg}); a .jsonl file holds one JSON object "
                               "per line") from None  # fmt: skip
    return out


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise PfbenchError(f"prompt file {path} not found")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise PfbenchError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None


def read_prompts(path: str | os.PathLike[str]) -> list[str]:
    """The prompts of a ``.txt``, ``.jsonl`` or ``.json`` prompt file, in file order (see the module docstring).

    Raises:
        PfbenchError: missing file, unknown extension, malformed line, or no prompt at all.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".txt":
        prompts = [s.strip() for s in _read_text(p).splitlines() if s.strip() and not s.lstrip().startswith("#")]
    elif suffix == ".jsonl":
        prompts = [_text_of(item, f"{p}:{no}") for no, item in _json_lines(p)]
    elif suffix == ".json":
        try:
            data = json.loads(_read_text(p))
        except json.JSONDecodeError as err:
            raise PfbenchError(f"{p}: not valid JSON ({err.msg} at line {err.lineno})") from None
        if not isinstance(data, list):
            raise PfbenchError(f"{p}: a .json prompt file holds a list of prompts or of {{\"prompt\": ...}} objects")
        prompts = [_text_of(item, f"{p}: item {i}") for i, item in enumerate(data)]
    else:
        raise PfbenchError(f"prompt file {p}: unknown extension {p.suffix or '(none)'!r}; use .txt (one prompt "
                           "per line), .jsonl ({\"prompt\": ...} per line) or .json")  # fmt: skip
    if not prompts:
        raise PfbenchError(f"prompt file {p} holds no prompts")
    return prompts


def _field(item: dict[str, Any], keys: tuple[str, ...], where: str, what: str) -> str:
    for k in keys:
        if isinstance(item.get(k), str):
            return str(item[k])
    raise PfbenchError(f"{where}: no {what} string (keys {', '.join(repr(k) for k in keys)})")


@dataclass(frozen=True)
class CaptionedFolder:
    """Images with one caption each, listed in ``<root>/captions.jsonl``.

    Attributes:
        root: the folder. files: image paths in ``captions.jsonl`` order. captions: one per file.
    """

    root: Path
    files: tuple[Path, ...]
    captions: tuple[str, ...]

    @classmethod
    def scan(cls, root: str | os.PathLike[str], captions: str = "captions.jsonl") -> CaptionedFolder:
        """Reads ``root/captions`` and checks that every listed image exists (and none is listed twice).

        Raises:
            PfbenchError: missing folder or captions file, a malformed line, a missing or repeated image.
        """
        root = Path(root)
        if not root.is_dir():
            raise PfbenchError(f"captioned image folder {root} does not exist")
        index = root / captions
        if not index.is_file():
            raise PfbenchError(f"captioned image folder {root}: no {captions} (one {{\"file\": ..., \"caption\": "
                               "...}} per line)")  # fmt: skip
        files: list[Path] = []
        texts: list[str] = []
        seen: set[str] = set()
        for no, item in _json_lines(index):
            where = f"{index}:{no}"
            if not isinstance(item, dict):
                raise PfbenchError(f"{where}: expected an object {{\"file\": ..., \"caption\": ...}}")
            name = _field(item, FILE_KEYS, where, "image file")
            path = root / name
            if name in seen:
                raise PfbenchError(f"{where}: image {name} is listed twice")
            if not path.is_file():
                raise PfbenchError(f"{where}: image {path} not found")
            seen.add(name)
            files.append(path)
            texts.append(_field(item, TEXT_KEYS, where, "caption"))
        if not files:
            raise PfbenchError(f"{index} lists no images")
        return cls(root, tuple(files), tuple(texts))

    def __len__(self) -> int:
        return len(self.files)

    def load(self, i: int, size: int) -> np.ndarray:
        """Image i centre-cropped to (size, size, 3) uint8 (ADM's crop, as class-labelled folders)."""
        return load_crop(self.files[i], size)


__all__ = ["CaptionedFolder", "read_prompts"]
