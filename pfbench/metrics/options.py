"""Options of the Inception metrics beyond "which metrics, which reference" (issue 9.6), and their record.

- ``verify_weights``: an Inception file that is not the official one (a mirror's re-export, a fine-tuned
  or test network) is refused by checksum unless this is off; rows then carry the file's sha256 and the
  list of result keys that are ``nonstandard`` (reports mark them), so they are never taken for FIDs
  comparable with published ones.
- ``kid_subset_size``: images per KID subset (torch-fidelity's ``kid_subset_size``, default 1,000),
  checked against both sides before any feature is computed.
- ``is_order``: ``"file"`` (default: the ADM evaluator keeps sample order) or ``"shuffle"``
  (torch-fidelity's default permutation, seed 2020); see ``standard.InceptionScore``.

``evaluate`` takes them as keyword arguments, ``pfbench eval`` as ``--no-verify``, ``--kid-subset-size``
and ``--is-order``, a suite as ``eval.verify_weights``, ``eval.kid_subset_size`` and ``eval.is_order``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from pfbench import PfbenchError
from pfbench.encoders.inception import INCEPTION_KEY
from pfbench.metrics.standard import IS_ORDERS, check_kid_sizes
from pfbench.weights import KNOWN_WEIGHTS, file_sha256, resolve_weights

# result keys of each Inception metric: what a non-standard Inception file makes incomparable
INCEPTION_KEYS: dict[str, tuple[str, ...]] = {
    "fid": ("fid",), "sfid": ("sfid",), "is": ("is", "is_std"), "pr": ("precision", "recall"), "kid": ("kid", "kid_std"),
}  # fmt: skip


def check_options(names: Sequence[str], n_samples: int, n_ref: int, *, kid_subset_size: int = 1000,
                  is_order: str = "file") -> None:  # fmt: skip
    """Refuses options that would fail only after the feature pass (``n_ref``: reference images, 0 if none)."""
    if "is" in names and is_order not in IS_ORDERS:
        raise PfbenchError(f"evaluate: is_order={is_order!r} is not one of {', '.join(IS_ORDERS)} (file: the ADM "
                           "evaluator's sample order, shuffle: torch-fidelity's default)")  # fmt: skip
    if "kid" in names and n_ref > 0:  # no reference images at all has its own error (stats-only ADM .npz)
        check_kid_sizes(kid_subset_size, n_samples, n_ref)


def metric_args(
    metrics: Sequence[str], *, resize: str = "tf1x", weights: str | os.PathLike[str] | None = None,
    verify_weights: bool = True, kid_subset_size: int = 1000, is_order: str = "file",
) -> dict[str, Any]:  # fmt: skip
    """How ``evaluate`` computes ``metrics`` with these options: a results row's ``metric_args`` (JSON).

    Always ``resize``; ``is_order`` when IS is computed and ``kid_subset_size`` when KID is. With
    ``verify_weights=False`` and an Inception metric, ``inception_sha256`` (the file resolved offline, as
    ``evaluate`` would) and, unless it is the official file, ``nonstandard``: the result keys whose values
    are not comparable with published numbers (reports mark them).
    """
    out: dict[str, Any] = {"resize": resize}
    if "is" in metrics:
        out["is_order"] = is_order
    if "kid" in metrics:
        out["kid_subset_size"] = kid_subset_size
    inc = [n for n in metrics if n in INCEPTION_KEYS]
    if inc and not verify_weights:
        sha = file_sha256(resolve_weights(INCEPTION_KEY, weights, verify=False))
        out["inception_sha256"] = sha
        if sha != KNOWN_WEIGHTS[INCEPTION_KEY].sha256:
            out["nonstandard"] = [k for n in inc for k in INCEPTION_KEYS[n]]
    return out
