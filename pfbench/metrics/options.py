"""The record of how metrics were computed (issue 9.6): a results row's ``metric_args``.

Options beyond "which metrics, which reference":

- ``verify_weights``: an Inception file that is not the official one (a mirror's re-export, a fine-tuned
  or test network) is refused by checksum unless this is off; rows then carry the file's sha256 and the
  list of result keys that are ``nonstandard`` (reports mark them), so they are never taken for FIDs
  comparable with published ones.
- ``kid_subset_size``: images per KID subset (torch-fidelity's ``kid_subset_size``, default 1,000),
  checked against both sides before any feature is computed (``standard.KID``).
- ``is_order``: ``"file"`` (default: the ADM evaluator keeps sample order) or ``"shuffle"``
  (torch-fidelity's default permutation, seed 2020); see ``standard.InceptionScore``.

A metric takes an option by naming it in its constructor; ``evaluate`` passes it (``pfbench eval``:
``--no-verify``, ``--kid-subset-size``, ``--is-order``; a suite: ``eval.verify_weights``,
``eval.kid_subset_size``, ``eval.is_order``).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from typing import Any

from pfbench.encoders.inception import INCEPTION_KEY
from pfbench.metrics.base import result_keys
from pfbench.registry import METRICS
from pfbench.weights import KNOWN_WEIGHTS, file_sha256, resolve_weights

OPTIONS = ("is_order", "kid_subset_size")  # metric options a constructor may ask for (evaluate passes them)


def metric_args(
    metrics: Sequence[str], *, resize: str = "tf1x", weights: str | os.PathLike[str] | None = None,
    verify_weights: bool = True, kid_subset_size: int = 1000, is_order: str = "file",
) -> dict[str, Any]:  # fmt: skip
    """How ``evaluate`` computes ``metrics`` with these options: a results row's ``metric_args`` (JSON).

    Always ``resize``; each option that one of the metrics takes (``is_order`` for IS, ``kid_subset_size`` for
    KID). With ``verify_weights=False`` and a metric on the Inception network, ``inception_sha256`` (the file
    resolved offline, as ``evaluate`` would) and, unless it is the official file, ``nonstandard``: the result
    keys whose values are not comparable with published numbers (reports mark them).
    """
    classes = [METRICS.get(n) for n in metrics]
    values = {"is_order": is_order, "kid_subset_size": kid_subset_size}
    out: dict[str, Any] = {"resize": resize}
    for opt in OPTIONS:
        if any(opt in inspect.signature(c).parameters for c in classes):
            out[opt] = values[opt]
    inception = [c for c in classes if getattr(c, "features", "images") == "inception"]
    if inception and not verify_weights:
        sha = file_sha256(resolve_weights(INCEPTION_KEY, weights, verify=False))
        out["inception_sha256"] = sha
        if sha != KNOWN_WEIGHTS[INCEPTION_KEY].sha256:
            out["nonstandard"] = [k for c in inception for k in result_keys(c)]
    return out
