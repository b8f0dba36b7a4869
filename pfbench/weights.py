"""Offline resolution of pretrained metric weights (docs/protocol.md §9 "Offline").

Every pretrained file a metric needs (Inception for FID/sFID/IS, DINOv2, CLIP) is looked up, in
this order, and never downloaded:

1. an explicit path given by the caller (a file, or a folder holding the file);
2. the pfbench weights folders in ``$PFBENCH_WEIGHTS`` (one or more, ``os.pathsep``-separated; unset:
   ``./weights``, where ``pfbench fetch`` puts them);
3. the cache of the library that would otherwise download it (torch hub's ``checkpoints`` folder
   for torch-fidelity and DINOv2, ``~/.cache/clip`` for open_clip's OpenAI CLIP files).

A file with a known checksum is verified (sha256) before use; a mismatch is refused unless the caller
turns verification off (for Inception: ``pfbench eval --no-verify``, suite ``eval.verify_weights: false``;
the rows then record the file's sha256 and are marked non-standard). A missing
file raises ``PfbenchError`` at once, naming the file, every place looked and the URL to fetch it
from on a machine with internet access.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pfbench import PfbenchError
from pfbench.io import sha256_file

ENV_VAR = "PFBENCH_WEIGHTS"
# Where pfbench's inputs live: environment variable -> default folder (relative to the working directory). The
# suites' ``${oc.env:PFBENCH_DATA,data}`` interpolations and ``pfbench fetch`` use the same defaults.
HOMES = {ENV_VAR: "weights", "PFBENCH_DATA": "data", "PFBENCH_CHECKPOINTS": "checkpoints"}
OPT_OUT = frozenset({"inception-v3-compat"})  # weights whose check `pfbench eval --no-verify` can turn off


@dataclass(frozen=True)
class KnownWeights:
    """One pretrained file pfbench knows how to find.

    Attributes:
        key: pfbench name of the weights (``resolve_weights(key)``).
        filename: file name, identical to the one the owning library caches it under.
        url: where the owning library downloads it from.
        cache: which library cache may already hold it: ``"torch-hub"``, ``"open_clip"`` or
            ``"hf:<org>/<repo>"`` (a Hugging Face hub snapshot, e.g. a diffusers VAE).
        sha256: full sha256 of the file, or ``None`` where no trusted checksum is recorded.
        source: where the checksum comes from (provenance of the table entry).
        subdir: sub-folder of a ``$PFBENCH_WEIGHTS`` folder holding the file (for generic file names
            such as diffusers' ``diffusion_pytorch_model.safetensors``).
        fetch: the ``pfbench fetch`` name that downloads it (``pfbench.fetch``), or ``""``.
    """

    key: str
    filename: str
    url: str
    cache: str
    sha256: str | None = None
    source: str = ""
    subdir: str = ""
    fetch: str = ""


_INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
_OPENAI = "https://openaipublic.azureedge.net/clip/models"
_VITL14_SHA = "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836"
_VITB32_SHA = "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af"

KNOWN_WEIGHTS: dict[str, KnownWeights] = {
    w.key: w
    for w in (
        KnownWeights(
            "inception-v3-compat",
            _INCEPTION_FILE,
            f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{_INCEPTION_FILE}",
            "torch-hub",
            "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2",
            "torch hub name convention gives the prefix 6726825d; full hash recorded by a third party",
            fetch="inception",
        ),
        KnownWeights(
            "dinov2-vitl14",
            "dinov2_vitl14_pretrain.pth",
            "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/dinov2_vitl14_pretrain.pth",
            "torch-hub",
        ),
        KnownWeights(
            "dinov2-vitb14",
            "dinov2_vitb14_pretrain.pth",
            "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitb14/dinov2_vitb14_pretrain.pth",
            "torch-hub",
        ),
        KnownWeights(
            "clip-vit-l-14-openai",
            "ViT-L-14.pt",
            f"{_OPENAI}/{_VITL14_SHA}/ViT-L-14.pt",
            "open_clip",
            _VITL14_SHA,
            "OpenAI's URL carries the file's sha256 (open_clip verifies it the same way)",
        ),
        KnownWeights(
            "clip-vit-b-32-openai",
            "ViT-B-32.pt",
            f"{_OPENAI}/{_VITB32_SHA}/ViT-B-32.pt",
            "open_clip",
            _VITB32_SHA,
            "OpenAI's URL carries the file's sha256 (open_clip verifies it the same way)",
        ),
        KnownWeights(
            "sd-vae-ft-ema",
            "diffusion_pytorch_model.safetensors",
            "https://huggingface.co/stabilityai/sd-vae-ft-ema/resolve/main/diffusion_pytorch_model.safetensors",
            "hf:stabilityai/sd-vae-ft-ema",
            subdir="sd-vae-ft-ema",
            fetch="sd-vae-ft-ema",
        ),
        KnownWeights(
            "sd-vae-ft-mse",
            "diffusion_pytorch_model.safetensors",
            "https://huggingface.co/stabilityai/sd-vae-ft-mse/resolve/main/diffusion_pytorch_model.safetensors",
            "hf:stabilityai/sd-vae-ft-mse",
            subdir="sd-vae-ft-mse",
        ),
    )
}


def home_dirs(var: str) -> list[Path]:
    """The folders of one of ``HOMES``'s variables: its ``os.pathsep``-separated entries, else the default."""
    listed = [Path(d).expanduser() for d in os.environ.get(var, "").split(os.pathsep) if d]
    return listed or [Path(HOMES[var])]


def home(var: str) -> Path:
    """Where new files of ``var``'s kind go (``pfbench fetch``) and relative names resolve: its first folder."""
    return home_dirs(var)[0]


def library_cache_dir(cache: str) -> Path:
    """The folder the owning library would download into (computed now, from the environment)."""
    if cache == "torch-hub":
        import torch.hub

        return Path(torch.hub.get_dir()) / "checkpoints"
    if cache == "open_clip":
        return Path("~/.cache/clip").expanduser()
    if cache.startswith("hf:"):  # huggingface_hub's layout: hub/models--org--name/snapshots/<revision>/
        hub = Path(os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME", "~/.cache/huggingface")) / "hub")
        return hub.expanduser() / ("models--" + cache[3:].replace("/", "--")) / "snapshots"
    raise ValueError(f"unknown library cache {cache!r}")


_HASHES: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of a file, memoised per (real path, size, mtime) so big files hash once per process."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        _HASHES[key] = sha256_file(p, block=1 << 22)
    return _HASHES[key]


def _known(key: str) -> KnownWeights:
    if key not in KNOWN_WEIGHTS:
        raise PfbenchError(f"unknown weights {key!r}; known: {', '.join(sorted(KNOWN_WEIGHTS))}")
    return KNOWN_WEIGHTS[key]


def candidate_paths(key: str, path: str | os.PathLike[str] | None = None) -> list[tuple[str, Path]]:
    """Every place ``resolve_weights`` looks, in order, as (label, path) pairs."""
    w = _known(key)
    if path is not None:
        p = Path(path).expanduser()
        return [("argument", p / w.filename if p.is_dir() else p)]
    label = f"${ENV_VAR}" if os.environ.get(ENV_VAR) else f"${ENV_VAR} (unset: ./{HOMES[ENV_VAR]})"
    out = [(label, folder / w.subdir / w.filename) for folder in home_dirs(ENV_VAR)]
    cache = library_cache_dir(w.cache)
    if w.cache.startswith("hf:"):  # any downloaded revision, newest name first; else the folder itself
        snaps = sorted(cache.glob(f"*/{w.filename}"), reverse=True) if cache.is_dir() else []
        out += [(f"{w.cache} cache", p) for p in snaps] or [(f"{w.cache} cache", cache / "<revision>" / w.filename)]
    else:
        out.append((f"{w.cache} cache", cache / w.filename))
    return out


def verify_weights(key: str, path: str | os.PathLike[str]) -> str:
    """Checks ``path`` against the known sha256 of ``key``; returns the file's sha256.

    Raises:
        PfbenchError: the checksum differs from the recorded one.
    """
    w = _known(key)
    digest = file_sha256(path)
    if w.sha256 is not None and digest != w.sha256:
        optout = (
            "; to use this file anyway (a re-export, a fine-tuned or test network) pass --no-verify "
            "(suite: eval.verify_weights: false): results then record its sha256 and are marked non-standard"
            if key in OPT_OUT else ""
        )
        raise PfbenchError(
            f"{key} weights {path} have sha256 {digest[:16]}…, expected {w.sha256[:16]}…: the file is "
            f"truncated, corrupt or a different version; delete it and fetch {w.url} again{optout}"
        )
    return digest


def resolve_weights(key: str, path: str | os.PathLike[str] | None = None, *, verify: bool = True) -> Path:
    """Finds a pretrained file locally; never downloads.

    Args:
        key: an entry of ``KNOWN_WEIGHTS`` (e.g. ``"inception-v3-compat"``).
        path: explicit file (or folder holding ``filename``); when given, nothing else is searched.
        verify: check the sha256 where one is known (turn off only for self-converted weights).

    Returns:
        Path of the file found.

    Raises:
        PfbenchError: not found (message names the file, all places looked and how to get it),
            or checksum mismatch.
    """
    w = _known(key)
    places = candidate_paths(key, path)
    for _, p in places:
        if p.is_file():
            if verify:
                verify_weights(key, p)
            return p
    looked = "; ".join(f"{label}: {p}" for label, p in places)
    if path is None and not os.environ.get(ENV_VAR):
        looked += f"; ${ENV_VAR} is unset"
    dest = f"<a folder listed in ${ENV_VAR}>/{w.subdir}" if w.subdir else f"a folder listed in ${ENV_VAR}"
    fetch = f"`pfbench fetch {w.fetch}` fetches it; " if w.fetch else ""
    raise PfbenchError(
        f"{key} weights file {w.filename} not found (looked in {looked}); {fetch}pfbench never downloads "
        f"otherwise: on a machine with internet run `curl -L -o {w.filename} {w.url}`, copy the file into {dest} "
        "(or pass its path explicitly)"
    )
