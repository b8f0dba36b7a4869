"""``pfbench fetch``: the files a suite needs (released checkpoints, the SD-VAE, metric weights, reference batches),
downloaded into pfbench's folders, resumably and verified.

``CATALOGUE`` has one ``Item`` per file: its name, URL (or Hugging Face repo), destination (a folder of
``pfbench.weights.HOMES`` and a relative path), sha256 where one is published, size where known. ``GROUPS`` name
sets of items: ``imagenet`` is everything the ImageNet main table needs.

How a file arrives (``fetch_item``):

- A plain URL goes through fsspec's HTTP filesystem (aiohttp): the file is read in ``CHUNK``-sized HTTP range
  requests and appended to ``<dest>.part``, so a rerun after an interruption continues at the ``.part``'s length.
  (pooch verifies and shows progress too, but cannot resume, and a 2.7 GB checkpoint over a flaky link needs
  resume; fsspec opens a URL at an offset and follows the redirects of release hosts.)
- A Hugging Face repo goes through ``huggingface_hub`` (its own resume, ``.incomplete`` files and progress bar),
  into ``$PFBENCH_WEIGHTS/<name>/``, where the offline resolver (``pfbench.weights``) looks; its published
  checksum is the file's LFS sha256, which the hub sends as the ETag.
- The finished file is checked against the published sha256 and only then renamed onto its destination; a
  mismatch deletes the ``.part`` and leaves the destination untouched. Every fetched file is recorded in
  ``weights.lock`` in its folder (name, URL, size, sha256), so ``check_lock`` (run by ``pfbench plan``/``run``
  before any work) notices a file changed since, whether or not a checksum was published.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pfbench import PfbenchError
from pfbench.io import atomic_write_text
from pfbench.weights import KNOWN_WEIGHTS, file_sha256, home

CHUNK = 16 << 20  # bytes per HTTP range request (one request's worth is lost to an interruption)
LOCK = "weights.lock"
_ADM = "https://openaipublic.blob.core.windows.net/diffusion/jul-2021/ref_batches/imagenet/256"
_PFT = "https://ommer-lab.com/files/pft"  # the reference README's release links (CompVis/patch-forcing)


@dataclass(frozen=True)
class Item:
    """One file ``pfbench fetch`` knows.

    Attributes:
        name: the ``pfbench fetch`` name.
        what: one line for tables.
        home: the ``pfbench.weights.HOMES`` variable of its folder (``PFBENCH_CHECKPOINTS``, ...).
        path: destination inside that folder (``sd-vae-ft-ema/diffusion_pytorch_model.safetensors``).
        url: download URL (for a Hugging Face item, the repo's page).
        sha256: the published checksum, or None (the first download's is then recorded in ``weights.lock``).
        size: bytes, where known.
        repo: Hugging Face repo id (``org/name``), downloaded with ``huggingface_hub``; "" for a plain URL.
        extra: other files of the repo fetched beside ``path`` (``config.json``).
    """

    name: str
    what: str
    home: str
    path: str
    url: str
    sha256: str | None = None
    size: int | None = None
    repo: str = ""
    extra: tuple[str, ...] = ()

    @property
    def dest(self) -> Path:
        """Where the file goes (computed now, from the environment)."""
        return home(self.home).absolute() / self.path


_INCEPTION = KNOWN_WEIGHTS["inception-v3-compat"]
_VAE = KNOWN_WEIGHTS["sd-vae-ft-ema"]
CATALOGUE: dict[str, Item] = {
    i.name: i
    for i in (
        Item("pft-b", "Patch Forcing B/2, 400k steps, EMA (released)", "PFBENCH_CHECKPOINTS",
             "pft-b_step400k_ema.ckpt", f"{_PFT}/pft-b_step400k_ema.ckpt"),
        Item("pft-xl", "Patch Forcing XL/2, 400k steps, EMA (released)", "PFBENCH_CHECKPOINTS",
             "pft-xl_step400k_ema.ckpt", f"{_PFT}/pft-xl_step400k_ema.ckpt"),
        Item(_VAE.fetch, "SD-VAE decoder (stabilityai/sd-vae-ft-ema)", "PFBENCH_WEIGHTS",
             f"{_VAE.subdir}/{_VAE.filename}", "https://huggingface.co/stabilityai/sd-vae-ft-ema",
             repo="stabilityai/sd-vae-ft-ema", extra=("config.json",)),
        Item(_INCEPTION.fetch, "Inception-v3 (torch-fidelity, TF-compatible) for FID/sFID/IS/P/R",
             "PFBENCH_WEIGHTS", _INCEPTION.filename, _INCEPTION.url, _INCEPTION.sha256),
        Item("adm-ref", "ADM reference batch, ImageNet 256 (mu/sigma + 10k images)", "PFBENCH_DATA",
             "VIRTUAL_imagenet256_labeled.npz", f"{_ADM}/VIRTUAL_imagenet256_labeled.npz"),
        Item("adm-samples", "ADM's guided-upsampled samples (the parity suite's golden pair)", "PFBENCH_DATA",
             "admnet_guided_upsampled_imagenet256.npz", f"{_ADM}/admnet_guided_upsampled_imagenet256.npz"),
    )
}
GROUPS: dict[str, tuple[str, ...]] = {
    "imagenet": ("pft-b", "pft-xl", "sd-vae-ft-ema", "inception", "adm-ref"),  # suites/imagenet.yaml
    "adm-parity": ("adm-samples", "adm-ref", "inception"),  # suites/adm_parity.yaml
}


def items(names: list[str]) -> list[Item]:
    """Catalogue items of ``names`` (items or groups), each once, in order.

    Raises:
        PfbenchError: an unknown name (with the nearest known one).
    """
    out: list[Item] = []
    for name in names:
        if name not in CATALOGUE and name not in GROUPS:
            known = sorted(CATALOGUE) + sorted(GROUPS)
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise PfbenchError(f"pfbench fetch: unknown name {name!r}{hint} (known: {', '.join(known)})")
        for n in GROUPS.get(name, (name,)):
            if CATALOGUE[n] not in out:
                out.append(CATALOGUE[n])
    return out


def provider(path: str | os.PathLike[str]) -> Item | None:
    """The catalogue item whose destination ends like ``path`` (a checkpoint or reference a suite names), or None."""
    text = Path(path).as_posix()
    return next((i for i in CATALOGUE.values() if text == i.path or text.endswith("/" + i.path)), None)


# ------------------------------------------------------------------ weights.lock
def _lock_entries(lock: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(lock.read_text())
    except (OSError, ValueError) as err:
        raise PfbenchError(f"{lock}: unreadable ({err}); delete it and run `pfbench fetch` again") from None
    return dict(data.get("files", {})) if isinstance(data, dict) else {}


def lock_entry(path: str | os.PathLike[str]) -> tuple[Path, dict[str, Any]] | None:
    """(lock file, entry) recording ``path``: a ``weights.lock`` in its folder or the folder above, or None."""
    p = Path(path).expanduser().absolute()
    for root in (p.parent, p.parent.parent):
        lock = root / LOCK
        if lock.is_file():
            entry = _lock_entries(lock).get(p.relative_to(root).as_posix())
            if entry is not None:
                return lock, entry
    return None


def record(item: Item, path: Path, digest: str, published: bool) -> Path:
    """Adds (or replaces) ``path``'s entry in the ``weights.lock`` of its item's folder; returns the lock."""
    root = home(item.home)
    lock = root / LOCK
    entries = _lock_entries(lock) if lock.is_file() else {}
    st = path.stat()
    entries[path.absolute().relative_to(root.absolute()).as_posix()] = {
        "name": item.name, "url": item.url, "size": st.st_size, "sha256": digest,
        "checksum": "published" if published else "recorded at first download", "mtime_ns": st.st_mtime_ns,
    }  # fmt: skip
    text = json.dumps({"files": dict(sorted(entries.items()))}, indent=1) + "\n"
    return atomic_write_text(lock, text)


def check_lock(path: str | os.PathLike[str]) -> str | None:
    """What changed in a file since ``pfbench fetch`` recorded it, or None (unchanged, or not recorded).

    A file whose size and modification time are as recorded is taken as unchanged (as ``git status`` does), so
    ``pfbench plan`` stays fast; otherwise its sha256 is compared (memoised per process).
    """
    found = lock_entry(path)
    if found is None:
        return None
    lock, entry = found
    st = Path(path).stat()
    if st.st_size == entry.get("size") and st.st_mtime_ns == entry.get("mtime_ns"):
        return None
    digest = file_sha256(path)
    if st.st_size == entry.get("size") and digest == entry.get("sha256"):
        return None
    return (f"{path} changed since `pfbench fetch {entry.get('name')}` recorded it in {lock} ({st.st_size} bytes, "
            f"sha256 {digest[:16]}…; recorded {entry.get('size')} bytes, {str(entry.get('sha256'))[:16]}…); "
            f"delete it and run `pfbench fetch {entry.get('name')}` again")


# ------------------------------------------------------------------ downloads
def fetch_item(item: Item, progress: Any = None) -> tuple[Path, str]:
    """Makes sure ``item`` is at its destination, verified; returns (path, what happened).

    A file already in place is checked (published sha256, else its ``weights.lock`` entry; a file placed by
    hand is recorded). ``progress``: a ``rich.progress.Progress`` to show the download in.

    Raises:
        PfbenchError: offline (naming the URL and where to put the file by hand), a wrong checksum (the file is
            refused, the destination untouched) or an interrupted download (rerun to resume).
    """
    dest = item.dest
    if dest.is_file():
        digest = file_sha256(dest) if item.sha256 else ""
        if item.sha256 and digest != item.sha256:
            raise PfbenchError(f"{item.name}: {dest} has sha256 {digest[:16]}…, published {item.sha256[:16]}…: "
                               f"truncated, corrupt or another version; delete it and rerun `pfbench fetch {item.name}`")
        problem = check_lock(dest)
        if problem:
            raise PfbenchError(problem)
        if lock_entry(dest) is not None:
            return dest, "already in place, " + ("sha256 as published" if item.sha256 else f"as in {LOCK}")
        record(item, dest, file_sha256(dest), item.sha256 is not None)
        return dest, "already in place, " + ("sha256 as published" if item.sha256 else f"now recorded in {LOCK}")
    if item.repo:
        from pfbench.fetch_hub import hub_download

        expected = hub_download(item, dest)
        digest = file_sha256(dest)
        if expected is not None and digest != expected:
            dest.unlink()
            raise PfbenchError(_mismatch(item, dest, digest, expected))
    else:
        part = _http_download(item, dest, progress)
        digest = file_sha256(part)
        expected = item.sha256
        if expected is not None and digest != expected:
            part.unlink()
            raise PfbenchError(_mismatch(item, dest, digest, expected))
        os.replace(part, dest)
    record(item, dest, digest, expected is not None)
    return dest, "downloaded, " + ("sha256 as published" if expected else f"sha256 recorded in {LOCK}")


def _mismatch(item: Item, dest: Path, digest: str, expected: str) -> str:
    return (f"{item.name}: {item.url} gave sha256 {digest[:16]}…, published {expected[:16]}…; refused, nothing "
            f"written to {dest} (a corrupt transfer or a changed file upstream: rerun `pfbench fetch {item.name}`)")


def offline_error(item: Item, dest: Path, reason: str) -> PfbenchError:
    """The one line for a download that cannot start: the URL and where to put the file by hand."""
    return PfbenchError(f"{item.name}: cannot reach {item.url} ({reason}); on a machine with internet download it "
                        f"and put it at {dest}, then rerun `pfbench fetch {item.name}` to verify it")


def _reason(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return re.sub(r"\s*\[.*?\]$", "", text)[:160]


def _http_download(item: Item, dest: Path, progress: Any) -> Path:
    """Downloads ``item.url`` into ``<dest>.part``, continuing a partial one with range requests."""
    import aiohttp
    import fsspec

    part = dest.with_name(dest.name + ".part")
    fs = fsspec.filesystem("http")
    try:
        size = fs.info(item.url).get("size")
    except FileNotFoundError as err:  # fsspec's answer to any failed HEAD + GET: look at the cause
        cause = err.__cause__
        if isinstance(cause, aiohttp.ClientResponseError):
            raise PfbenchError(f"{item.name}: {item.url} answered HTTP {cause.status} ({cause.message}); the file "
                               "moved or the URL is wrong") from None
        raise offline_error(item, dest, _reason(cause or err)) from None
    except (OSError, aiohttp.ClientError) as err:
        raise offline_error(item, dest, _reason(err)) from None
    part.parent.mkdir(parents=True, exist_ok=True)
    done = part.stat().st_size if part.is_file() else 0
    if size is None or done > size:
        done = 0  # no known size: no range requests, start over
    task = None if progress is None else progress.add_task(item.name, total=size, completed=done)
    try:
        with fs.open(item.url, "rb", block_size=CHUNK if size else 0, cache_type="none", size=size) as src, \
                open(part, "ab" if done else "wb") as out:  # fmt: skip
            if done:
                src.seek(done)
            while chunk := src.read(CHUNK):
                out.write(chunk)
                if task is not None:
                    progress.advance(task, len(chunk))
    except (OSError, aiohttp.ClientError, TimeoutError, ValueError) as err:
        got = part.stat().st_size if part.is_file() else 0
        raise PfbenchError(f"{item.name}: download from {item.url} stopped at {got} of {size or '?'} bytes "
                           f"({_reason(err)}); rerun `pfbench fetch {item.name}` to resume from {part}") from None
    got = part.stat().st_size
    if size is not None and got != size:
        raise PfbenchError(f"{item.name}: {item.url} ended at {got} of {size} bytes; rerun `pfbench fetch "
                           f"{item.name}` to resume from {part}")
    return part


def fetch(names: list[str], console: Any = None) -> list[tuple[Item, Path, str]]:
    """``pfbench fetch NAME...``: every item of ``names`` in place and verified, with a rich progress bar.

    Returns:
        (item, path, what happened) per item.
    """
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    wanted = items(names)
    out = []
    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  TimeRemainingColumn(), console=console, transient=True) as progress:  # fmt: skip
        for item in wanted:
            path, what = fetch_item(item, progress)
            out.append((item, path, what))
    return out


__all__ = ["CATALOGUE", "GROUPS", "Item", "check_lock", "fetch", "fetch_item", "items", "lock_entry", "provider"]
