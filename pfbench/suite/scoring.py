"""How a suite scores images: its metrics in one generic pass, and the row fields that say how they were computed.

``Scorer.key`` is part of every cell's and curve's result part (file) name, so a change of metrics, reference set
or metric options makes new parts instead of mixing numbers computed two ways.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from pfbench.data import class_names
from pfbench.data.heterogeneity import DEFAULT_HETEROGENEITY
from pfbench.encoders.base import FeatureContext
from pfbench.evaluate.metric_pass import evaluate
from pfbench.evaluate.sources import embedded_reference, images_from_tensor
from pfbench.io import content_hash
from pfbench.metrics.base import higher_is_better
from pfbench.metrics.options import metric_args
from pfbench.registry import METRICS
from pfbench.suite.prompts import SHUFFLED, cond_metrics, shuffle
from pfbench.suite.spec import SuiteSpec

# Metric options at their defaults; they enter ``key`` only when changed, so results made before they existed stay valid.
_DEFAULT_OPTIONS = {"is_order": "file", "kid_subset_size": 1000}


class Scorer:
    """The suite's metrics (``spec.metrics``) against its reference set, with its ``eval`` options.

    Args:
        spec: The suite.
    """

    def __init__(self, spec: SuiteSpec) -> None:
        self.spec = spec

    def score(self, images: np.ndarray | torch.Tensor, labels: torch.Tensor, captions: Sequence[str] | None = None,
              metrics: Sequence[str] | None = None) -> dict[str, tuple[float, bool]]:
        """Runs the suite's metrics over uint8 images (N, 3, H, W) in one pass per feature network.

        Args:
            images: the samples. labels: (N,) their classes. captions: their prompts (text-to-image), which
                prompt-reading metrics (CLIP score, caption attributes) judge them against.
            metrics: a subset of the suite's metrics (default: all).

        Returns:
            metric key -> (value, higher_is_better).
        """
        ev, data = self.spec.eval, self.spec.data
        names = list(self.spec.metrics if metrics is None else metrics)
        samples = images_from_tensor(torch.as_tensor(images), torch.as_tensor(labels))
        if captions is not None:
            samples = dataclasses.replace(samples, captions=tuple(captions))
        ref = data.reference or ("embedded" if data.heterogeneity == DEFAULT_HETEROGENEITY else
                                 embedded_reference(data.resolution, data.test_size, data.heterogeneity))
        ctx = FeatureContext(device=ev.device, batch_size=ev.batch_size, weights=ev.weights_map(),
                             verify=ev.verify_weights, resize=ev.resize)
        result = evaluate(samples, ref, names, ctx, ref_size=data.test_size, class_names=class_names(data.name),
                          kid_subset_size=ev.kid_subset_size, is_order=ev.is_order)
        result.pop("num_samples", None)
        classes = [METRICS.get(n) for n in names]  # each declares its keys' directions
        return {k: (v, higher_is_better(classes, k)) for k, v in result.items()}

    def shuffled(self, images: np.ndarray | torch.Tensor, labels: torch.Tensor, captions: Sequence[str],
                 seed: int) -> dict[str, tuple[float, bool]]:
        """The shuffled-prompt baseline: the prompt- or label-reading metrics of the same images against a fixed
        permutation of their prompts and labels, keyed ``<metric key>_shuffled`` (``pfbench.suite.prompts``)."""
        names = cond_metrics(self.spec.metrics)
        if not names:
            return {}
        texts, perm_labels = shuffle(captions, torch.as_tensor(labels), seed)
        return {k + SHUFFLED: v for k, v in self.score(images, perm_labels, texts, names).items()}

    def key(self) -> str:
        """Hash of everything that changes metric values besides the pixels (metrics, reference, resize, options)."""
        ev = self.spec.eval
        opts = {k: v for k, v in self.args().items() if k != "resize" and v != _DEFAULT_OPTIONS.get(k)}
        weights = ev.weights_map()  # as before the map: Inception's path (or None), then CLIP's and DINOv2's if set,
        clip, dinov2 = weights.pop("clip", None), weights.pop("dinov2", None)  # then other networks' paths if set
        used = {getattr(METRICS.get(m), "features", "images") for m in self.spec.metrics}
        others = {k: v for k, v in sorted(weights.items()) if k != "inception" and k in used}
        return content_hash([self.spec.metrics, self.spec.data.key(), ev.resize, weights.get("inception")]
                            + ([clip, dinov2] if clip or dinov2 else []) + ([others] if others else [])
                            + ([opts] if opts else []))[:8]

    def args(self) -> dict[str, Any]:
        """How the suite's metrics are computed (``pfbench.metrics.options.metric_args``): resize, IS order, KID
        subset size, and the Inception file's sha256 plus the non-standard keys when its check is off."""
        ev = self.spec.eval
        return metric_args(self.spec.metrics, resize=ev.resize, weights=ev.weights_map().get("inception"),
                           verify_weights=ev.verify_weights, kid_subset_size=ev.kid_subset_size, is_order=ev.is_order)

    def context(self) -> dict[str, str]:
        """``Row`` fields that say how metrics were computed: ``ref_id`` (reference set) and ``metric_args``."""
        data = self.spec.data
        ref = data.reference or f"embedded:test:seed{data.seed}:n{data.test_size}:r{data.resolution}" + (
            f":h{data.heterogeneity:g}" if data.heterogeneity != DEFAULT_HETEROGENEITY else "")
        return {"ref_id": ref, "metric_args": json.dumps(self.args(), sort_keys=True)}
