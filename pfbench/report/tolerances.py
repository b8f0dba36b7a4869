"""How much a metric may get worse before ``pfbench compare`` calls it a regression: per-metric ``Tolerance``s,
the defaults, and overrides from a YAML file (``--tolerances``).
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from pfbench import PfbenchError


@dataclass(frozen=True)
class Tolerance:
    """How much a metric may get worse before it counts as a regression.

    The allowance is the largest of the given parts: ``abs``; ``rel * |a|``; ``sigma * pooled std`` over seeds
    (std of one seed's value, pooled over the sides that have >= 2 seeds). All parts None: the metric is
    informational (reported, never a regression). A sigma-only tolerance without any std allows nothing.
    """

    abs: float | None = None
    rel: float | None = None
    sigma: float | None = None

    def allowed(self, ref: float, pooled: float) -> float | None:
        """Largest tolerated worsening for baseline value ``ref``; None for an informational metric."""
        if self.abs is None and self.rel is None and self.sigma is None:
            return None
        parts = [0.0]
        if self.abs is not None:
            parts.append(self.abs)
        if self.rel is not None and math.isfinite(ref):
            parts.append(self.rel * abs(ref))
        if self.sigma is not None and math.isfinite(pooled):
            parts.append(self.sigma * pooled)
        return max(parts)

    def describe(self) -> str:
        """E.g. ``max(rel 3%, 2σ)``; ``info only`` for an informational metric."""
        parts = []
        if self.abs is not None:
            parts.append(f"abs {self.abs:g}")
        if self.rel is not None:
            parts.append(f"rel {100 * self.rel:g}%")
        if self.sigma is not None:
            parts.append(f"{self.sigma:g}σ")
        if not parts:
            return "info only"
        return parts[0] if len(parts) == 1 else f"max({', '.join(parts)})"


# Exact metric names first, then fnmatch patterns in this order (overrides are looked up before these).
DEFAULT_TOLERANCES: dict[str, Tolerance] = {
    "*_std": Tolerance(),  # spread over splits (is_std, kid_std): informational
    "train_img_per_s": Tolerance(),  # depends on the machine and its load: informational
    "train_wall_s": Tolerance(),  # the same seconds seen the other way round: informational
    "fid": Tolerance(rel=0.03, sigma=2.0),
    "sfid": Tolerance(rel=0.03, sigma=2.0),
    "fd_*": Tolerance(rel=0.03, sigma=2.0),
    "kid": Tolerance(abs=5e-4, rel=0.05, sigma=2.0),
    "is": Tolerance(rel=0.03, sigma=2.0),
    "is_*": Tolerance(rel=0.03, sigma=2.0),
    "precision*": Tolerance(abs=0.01, sigma=2.0),
    "recall*": Tolerance(abs=0.01, sigma=2.0),
    "class_acc": Tolerance(abs=0.01, sigma=2.0),
    "clip_score": Tolerance(abs=0.3, sigma=2.0),
    "difficulty_*": Tolerance(abs=0.05, sigma=2.0),
    "*": Tolerance(rel=0.05, sigma=2.0),
}


def load_tolerances(spec: Path | Mapping[str, Any] | None = None) -> dict[str, Tolerance]:
    """Default tolerances overridden per metric name/pattern by a YAML file or a dict.

    Format: ``{fd_embedded: {rel: 0.02}, "precision*": {abs: 0.01, sigma: 2}}`` (optionally under a top-level
    ``tolerances:`` key). An override replaces the whole default entry for that name.
    """
    if spec is None:
        return dict(DEFAULT_TOLERANCES)
    if isinstance(spec, (str, Path)):
        path = Path(spec)
        if not path.is_file():
            raise PfbenchError(f"tolerance file {path} not found: pass a YAML mapping metric -> {{abs, rel, sigma}}")
        spec = yaml.safe_load(path.read_text()) or {}
        if not isinstance(spec, Mapping):
            raise PfbenchError(f"{path}: expected a mapping metric -> {{abs, rel, sigma}}")
    if "tolerances" in spec and isinstance(spec["tolerances"], Mapping):
        spec = spec["tolerances"]
    valid = [f.name for f in fields(Tolerance)]
    out: dict[str, Tolerance] = {}
    for name, tol in spec.items():
        if isinstance(tol, Tolerance):
            out[str(name)] = tol
            continue
        if not isinstance(tol, Mapping):
            raise PfbenchError(f"tolerances.{name}: expected a mapping with keys {valid}, got {tol!r}")
        bad = [k for k in tol if k not in valid]
        if bad:
            raise PfbenchError(f"tolerances.{name}.{bad[0]}: unknown key; valid keys are {valid}")
        out[str(name)] = Tolerance(**{k: None if v is None else float(v) for k, v in tol.items()})
    return out | {k: v for k, v in DEFAULT_TOLERANCES.items() if k not in out}


def tolerance_for(metric: str, tolerances: Mapping[str, Tolerance]) -> Tolerance:
    """Exact name, else the first matching pattern, else no tolerance at all (any worsening regresses)."""
    if metric in tolerances:
        return tolerances[metric]
    for pattern, tol in tolerances.items():
        if fnmatch.fnmatchcase(metric, pattern):
            return tol
    return Tolerance(abs=0.0)
