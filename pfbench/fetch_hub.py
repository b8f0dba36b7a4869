"""``pfbench fetch`` of a Hugging Face repo's files (``pfbench.fetch.Item.repo``) through ``huggingface_hub``.

The hub client resumes partial downloads itself (its ``.incomplete`` files under ``<folder>/.cache``) and moves a
file into place only when it is complete; ``pfbench.fetch`` then checks it against the sha256 the hub publishes
for it (a large file's ETag is its LFS sha256).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from pfbench import PfbenchError

_SHA = re.compile(r"[0-9a-f]{64}")


def _offline_set() -> bool:
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    return bool(constants.HF_HUB_OFFLINE) or flag in ("1", "ON", "YES", "TRUE")


def hub_download(item: Any, dest: Path) -> str | None:
    """Downloads ``item.repo``'s ``dest.name`` and ``item.extra`` files into ``dest.parent``.

    Returns:
        The published sha256 of ``dest`` (its LFS ETag), or None when the hub publishes none.

    Raises:
        PfbenchError: offline (``HF_HUB_OFFLINE`` set, or the hub unreachable), in one line naming the repo and
            the folder to copy its files into by hand.
    """
    files = [dest.name, *item.extra]
    by_hand = (f"on a machine with internet run `hf download {item.repo} {' '.join(files)} --local-dir "
               f"{dest.parent}` (or download {item.url}/resolve/main/{dest.name}) and copy the files into "
               f"{dest.parent}, then rerun `pfbench fetch {item.name}` to verify them")
    if _offline_set():
        raise PfbenchError(f"{item.name}: HF_HUB_OFFLINE is set, so {item.url} cannot be reached; unset it, or "
                           f"{by_hand}")
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        meta = get_hf_file_metadata(hf_hub_url(item.repo, dest.name))
        for name in files:
            hf_hub_download(item.repo, name, revision=meta.commit_hash, local_dir=dest.parent)
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as err:
        reason = " ".join(str(err).split())[:160] or type(err).__name__
        raise PfbenchError(f"{item.name}: cannot fetch {item.url} ({reason}); {by_hand}") from None
    etag = (meta.etag or "").strip('"').removeprefix("W/").strip('"').lower()
    return etag if _SHA.fullmatch(etag) else None
