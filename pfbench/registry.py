"""One small plugin registry: lazy ``"module:attr"`` targets (``pfbench.plugins``) plus entry-point groups.

Plugin names resolve only through these maps and installed entry points, never through
arbitrary import paths taken from a config file. A third-party distribution adds names by declaring
entry points (``[project.entry-points."pfbench.samplers"] ralston = "pkg.mod:Ralston"``) in the groups
``pfbench.adapters``, ``pfbench.samplers``, ``pfbench.metrics``, ``pfbench.features``, ``pfbench.timesteps`` and
``pfbench.text_encoders``:

- an adapter is a factory (a class or function) taking keyword parameters (a suite model's ``params:``)
  and returning an ``Adapter`` (``pfbench.adapters.base``);
- a sampler is a ``Sampler`` class with ``from_budget(params, nfe)`` (subclass
  ``pfbench.samplers.base.StepSampler``);
- a metric is a ``Metric`` class (``pfbench.metrics.base``): it declares its feature network, needs and
  direction and is built from keyword arguments such as ``resolution``/``device``;
- a feature network is a builder ``(pfbench.encoders.base.FeatureContext) -> FeatureExtractor``; one that reads a
  weights file declares its weights key (``@pfbench.encoders.base.takes_weights(KEY)``) and gets the file from the
  one weights map (``ctx.weights[NAME]``: a suite's ``eval.weights.NAME``, ``pfbench eval --weights NAME=PATH``);
- a timestep sampler is a training timestep sampler class (``pfbench.train.timesteps``);
- a text encoder is a loader ``(device=..., weights=...) -> TextEncoder`` (``pfbench.encoders.text``).

A built-in name wins over an entry point of the same name.
"""

from __future__ import annotations

import difflib
import importlib
from importlib.metadata import entry_points
from typing import Any

from pfbench import PfbenchError
from pfbench.plugins import BUILTINS


class Registry:
    """Maps a plugin name to a lazily imported object.

    Args:
        kind: human name of what is registered ("sampler", "adapter", ...), used in errors.
        group: entry-point group third-party packages can register under.
    """

    def __init__(self, kind: str, group: str | None = None) -> None:
        self.kind = kind
        self.group = group
        self._targets: dict[str, str] = {}
        self._objects: dict[str, Any] = {}

    def add(self, name: str, target: str) -> None:
        """Registers ``target`` ("package.module:attr") under ``name``."""
        if name in self._targets and self._targets[name] != target:
            raise ValueError(f"{self.kind} {name!r} registered twice")
        self._targets[name] = target

    def _entry_points(self) -> dict[str, str]:
        if self.group is None:
            return {}
        return {ep.name: ep.value for ep in entry_points(group=self.group)}

    def names(self) -> list[str]:
        """All registered names, built-in and from entry points, sorted."""
        return sorted({**self._entry_points(), **self._targets})

    def get(self, name: str) -> Any:
        """Returns the object registered as ``name``; unknown names raise with a suggestion."""
        if name in self._objects:
            return self._objects[name]
        targets = {**self._entry_points(), **self._targets}
        if name not in targets:
            close = difflib.get_close_matches(name, list(targets), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise PfbenchError(f"unknown {self.kind} {name!r}{hint} (known: {', '.join(sorted(targets))})")
        module, _, attr = targets[name].partition(":")
        obj = getattr(importlib.import_module(module), attr)
        self._objects[name] = obj
        return obj

    def __contains__(self, name: str) -> bool:
        return name in self._targets or name in self._entry_points()


def _builtin(kind: str, table: str, group: str | None) -> Registry:
    reg = Registry(kind, group)
    for name, target in BUILTINS[table].items():
        reg.add(name, target)
    return reg


TIMESTEPS = _builtin("timestep sampler", "timesteps", "pfbench.timesteps")
SAMPLERS = _builtin("sampler", "samplers", "pfbench.samplers")
ADAPTERS = _builtin("adapter", "adapters", "pfbench.adapters")
METRICS = _builtin("metric", "metrics", "pfbench.metrics")
FEATURES = _builtin("feature network", "features", "pfbench.features")
TEXT_ENCODERS = _builtin("text encoder", "text_encoders", "pfbench.text_encoders")
