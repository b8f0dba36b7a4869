"""The Metric protocol (ARCHITECTURE.md): what a metric declares, how evaluate builds and feeds it, result directions.

A metric names the feature network it reads (``features``, a ``pfbench.registry.FEATURES`` name; "images"
means the uint8 batch as is), what it needs besides the samples (``needs``), and whether larger values are
better. ``pfbench.evaluate`` builds it with the keyword arguments its constructor asks for, out of:

- ``resolution`` (int): side of the sample images;
- ``device``: where the feature networks run;
- ``network``: the feature network instance the metric reads (e.g. a CLIP metric's text tower);
- ``reference`` (``pfbench.metrics.refstats.Reference``): the reference set as that network sees it;
- ``num_samples`` (int): how many samples will be scored;
- ``class_names`` (tuple of str or None): label → name, for class prompts;
- metric options: ``is_order`` (str), ``kid_subset_size`` (int).

Then every batch arrives as ``update(network(images), cond)`` and the result is ``compute()``. A metric
with ``features = "images"``, ``needs = frozenset()`` and ``__init__(self, resolution: int)`` needs nothing
else from pfbench.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol, runtime_checkable

from torch import Tensor

from pfbench import PfbenchError
from pfbench.types import Cond

# What a metric can need besides the samples: a reference set, class labels on the samples, or text for
# each sample (its caption, or its label read as a class prompt).
NEEDS = frozenset({"reference", "labels", "text"})


@runtime_checkable
class Metric(Protocol):
    """What every metric looks like to the evaluator (see the module docstring).

    ``directions`` (optional) maps each result key to whether higher is better when the keys are not just
    ``name`` (e.g. ``{"precision": True, "recall": True}``, ``{"is": True, "is_std": False}``).
    """

    name: ClassVar[str]
    higher_is_better: ClassVar[bool]
    features: ClassVar[str]
    needs: ClassVar[frozenset[str]]

    def update(self, features: Any, cond: Cond) -> None: ...  # the network's output for one batch

    def compute(self) -> dict[str, float]: ...


def result_keys(metric: type[Metric]) -> dict[str, bool]:
    """Result keys of a metric class → higher is better (``directions`` if declared, else its name)."""
    declared: dict[str, bool] | None = getattr(metric, "directions", None)
    return dict(declared) if declared is not None else {metric.name: bool(metric.higher_is_better)}


def higher_is_better(metrics: list[type[Metric]], key: str) -> bool:
    """Direction of result ``key`` among ``metrics``: declared by the metric that reports it.

    A key no metric declares (an extra key of a third-party metric) reads as a spread (lower is better)
    when it ends in ``_std``, else as higher is better.
    """
    for m in metrics:
        keys = result_keys(m)
        if key in keys:
            return keys[key]
    return not key.endswith("_std")


def check_labels(cond: Cond, batch: int, num_classes: int, where: str) -> Tensor:
    """Returns ``cond.y`` as (B,) int64 after checking shape and range (no null class allowed)."""
    y = cond.y
    if y.shape != (batch,):
        raise PfbenchError(f"{where}: cond.y must be ({batch},), got {tuple(y.shape)}")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise PfbenchError(
            f"{where}: labels must be in [0, {num_classes}), got range [{int(y.min())}, {int(y.max())}]; "
            "unconditional samples (null class) have no class to check"
        )
    return y.long()
