"""ADM evaluator parity (docs/protocol.md §10): score the golden pair and compare with the published numbers.

A parity suite is a small standalone YAML (``suites/adm_parity.yaml``; not a runner suite)::

    kind: adm_parity
    samples: admnet_guided_upsampled_imagenet256.npz   # $PFBENCH_ADM_SAMPLES overrides
    ref: VIRTUAL_imagenet256_labeled.npz               # $PFBENCH_ADM_REF overrides
    weights: null                                      # $PFBENCH_ADM_WEIGHTS overrides
    expect: {fid: 3.9426, sfid: 6.1404, ...}
    tolerance: {fid: 0.02, sfid: 0.05, ...}            # largest accepted |measured − expected|

``run_adm_parity_suite(path)`` checks that every input exists (a missing one is a one-line error
naming the file, where it was looked for and where to get it), scores the samples with ``adm_parity``
and returns measured vs expected per metric and ``pass``.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from pfbench import PfbenchError
from pfbench.encoders.base import FeatureContext, FeatureExtractor
from pfbench.encoders.inception import INCEPTION_KEY
from pfbench.evaluate.metric_pass import evaluate
from pfbench.fetch import provider
from pfbench.weights import HOMES, home

KIND = "adm_parity"
DATA_VAR = "PFBENCH_DATA"  # relative samples/ref paths are files in this folder, as suites/imagenet.yaml's reference
ENV = {"samples": "PFBENCH_ADM_SAMPLES", "ref": "PFBENCH_ADM_REF", "weights": "PFBENCH_ADM_WEIGHTS"}
METRIC_KEYS = ("fid", "sfid", "is", "precision", "recall")  # what adm_parity measures
# ADM evaluator golden pair (docs/protocol.md §10): admnet_guided_upsampled_imagenet256.npz vs VIRTUAL_imagenet256_labeled.npz.
ADM_GOLDEN: dict[str, float] = {"fid": 3.9426, "sfid": 6.1404, "is": 215.84, "precision": 0.8265, "recall": 0.5309}


def adm_parity(
    sample_npz: str | Path, ref_npz: str | Path, weights: str | Path | None = None, *,
    extractor: FeatureExtractor | None = None, device: str | None = None, batch_size: int = 500,
    cache_dir: str | Path | None = None,
) -> dict[str, float]:  # fmt: skip
    """FID, sFID, IS, precision and recall of an ADM sample batch against an ADM reference batch.

    Mirrors the ADM evaluator (``evaluations/evaluator.py``): reference ``mu``/``sigma``/``mu_s``/
    ``sigma_s`` as stored; precision/recall (k = 3) between the reference images' and all samples'
    pool features; IS over 10 contiguous splits of the samples in file order. Compare the result
    with ``ADM_GOLDEN`` for the golden pair.

    Args:
        sample_npz: samples ``.npz`` with ``arr_0`` (N, H, W, 3) uint8.
        ref_npz: ADM reference batch (``mu``, ``sigma``, ``mu_s``, ``sigma_s``, ``arr_0``).
        weights: Inception weights file/folder (offline resolution, see ``pfbench.weights``).
        extractor: replaces the Inception network (tests); ``weights``/``device`` are then unused.
        device: ``"cuda"`` when available by default.
        batch_size: images per forward pass.
        cache_dir: cache root for the reference pool features.

    Returns:
        ``{"num_samples", "fid", "sfid", "is", "is_std", "precision", "recall"}``.
    """
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    ctx = FeatureContext(device=dev, batch_size=batch_size, weights={} if weights is None else {"inception": weights})
    return evaluate(sample_npz, ref_npz, ["fid", "sfid", "is", "pr"], ctx, cache_dir=cache_dir, extractor=extractor)


@dataclass(frozen=True)
class ParitySuite:
    """A parity suite as read from YAML (paths before environment overrides)."""

    samples: str
    ref: str
    expect: dict[str, float]
    tolerance: dict[str, float]
    kind: str = KIND
    name: str = "adm_parity"
    description: str = ""
    weights: str | None = None
    sources: dict[str, str] = field(default_factory=dict)  # download URL per input, for messages
    batch_size: int = 500
    device: str | None = None


def _check_keys(data: dict[str, Any], valid: list[str], where: str) -> None:
    for key in data:
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise PfbenchError(f"{where}: unknown key {key!r}{hint} (valid: {', '.join(valid)})")


def _numbers(data: Any, what: str, where: str) -> dict[str, float]:
    if not isinstance(data, dict) or not data:
        raise PfbenchError(f"{where}: '{what}' must be a non-empty mapping metric -> number")
    _check_keys(data, list(METRIC_KEYS), f"{where}: {what}")
    out = {}
    for key, value in data.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise PfbenchError(f"{where}: {what}.{key} must be a number, got {value!r}")
        out[str(key)] = float(value)
    return out


def load_parity_suite(path: str | os.PathLike[str]) -> ParitySuite:
    """Reads and checks a parity suite YAML (unknown keys name the nearest valid one)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise PfbenchError(f"parity suite {path} not found; e.g. suites/adm_parity.yaml")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise PfbenchError(f"{path}: not valid YAML ({' '.join(str(err).split())[:160]})") from None
    if not isinstance(data, dict):
        raise PfbenchError(f"{path}: expected a mapping of suite keys")
    _check_keys(data, [f.name for f in fields(ParitySuite)], str(path))
    if data.get("kind", KIND) != KIND:
        raise PfbenchError(f"{path}: kind is {data['kind']!r}, not {KIND!r}; this is not a parity suite")
    for key in ("samples", "ref", "expect", "tolerance"):
        if data.get(key) is None:
            raise PfbenchError(f"{path}: missing key {key!r}")
    expect = _numbers(data["expect"], "expect", str(path))
    tolerance = _numbers(data["tolerance"], "tolerance", str(path))
    if set(tolerance) != set(expect) or any(t < 0 for t in tolerance.values()):
        raise PfbenchError(
            f"{path}: 'tolerance' needs one non-negative number for each expected metric ({', '.join(expect)})"
        )
    for key in ("samples", "ref", "name", "description", "weights", "device"):
        if key in data and data[key] is not None and not isinstance(data[key], str):
            raise PfbenchError(f"{path}: {key} must be a string, got {data[key]!r}")
    batch = data.get("batch_size", 500)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise PfbenchError(f"{path}: batch_size must be a positive integer, got {batch!r}")
    sources = data.get("sources") or {}
    if not isinstance(sources, dict):
        raise PfbenchError(f"{path}: sources must map 'samples'/'ref' to download URLs")
    _check_keys(sources, ["samples", "ref"], f"{path}: sources")
    plain = {k: v for k, v in data.items() if k not in ("expect", "tolerance", "sources")}
    return ParitySuite(**{**plain, "expect": expect, "tolerance": tolerance, "sources": dict(sources)})


@dataclass(frozen=True)
class ParityInputs:
    """Resolved input paths; ``weights`` is ``None`` for offline resolution."""

    samples: Path
    ref: Path
    weights: str | None


def resolve_inputs(suite: ParitySuite, *, check: bool = True) -> ParityInputs:
    """Applies the environment overrides; with ``check``, a missing file is a one-line ``PfbenchError``."""
    paths = {}
    for key in ("samples", "ref"):
        env = os.environ.get(ENV[key])
        p = Path(env if env else getattr(suite, key)).expanduser()
        p = p if p.is_absolute() else (Path.cwd() if env else home(DATA_VAR).absolute()) / p
        if check and not p.is_file():
            url = suite.sources.get(key)
            item = provider(p)
            get = (f"`pfbench fetch {item.name}` downloads it, or " if item else "") + \
                (f"download {url}, then " if url else "")
            fix = (
                f"point ${ENV[key]} at the file"
                if env
                else f"put it in ${DATA_VAR} (default ./{HOMES[DATA_VAR]}) or set ${ENV[key]} to its path"
            )
            origin = f"${ENV[key]}" if env else f"the suite's '{key}'; ${ENV[key]} is unset"
            raise PfbenchError(
                f"adm parity: {key} file {p.name} not found at {p} (from {origin}); {get}{fix}"
            )
        paths[key] = p
    weights = os.environ.get(ENV["weights"]) or suite.weights
    return ParityInputs(paths["samples"], paths["ref"], weights)


def run_adm_parity_suite(
    path: str | os.PathLike[str],
    *,
    extractor: FeatureExtractor | None = None,
    device: str | None = None,
    cache_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Scores the suite's samples against its reference and compares with ``expect``.

    Args:
        path: parity suite YAML (``suites/adm_parity.yaml``).
        extractor: replaces the Inception network (tests); the weights are then not needed.
        device: overrides the suite's ``device`` (default: cuda when available, else cpu).
        cache_dir: cache root for the reference pool features.

    Returns:
        ``{"suite", "samples", "ref", "num_samples", "measured", "table", "pass"}`` where ``table`` has
        one row per expected metric: ``metric``, ``measured``, ``expected``, ``diff`` (measured −
        expected), ``tolerance``, ``ok``; ``pass`` is true when every row is ok.

    Raises:
        PfbenchError: bad suite, missing samples/reference/weights file (one line each).
    """
    from pfbench.weights import resolve_weights

    suite = load_parity_suite(path)
    inputs = resolve_inputs(suite)
    if extractor is None:
        resolve_weights(INCEPTION_KEY, inputs.weights)  # fail before reading 12 GB of images
    dev = device or suite.device or ("cuda" if torch.cuda.is_available() else "cpu")
    measured = adm_parity(inputs.samples, inputs.ref, inputs.weights, extractor=extractor, device=dev,
                          batch_size=suite.batch_size, cache_dir=cache_dir)  # fmt: skip
    table = []
    for metric, expected in suite.expect.items():
        value, tol = float(measured[metric]), suite.tolerance[metric]
        table.append({"metric": metric, "measured": value, "expected": expected, "diff": value - expected,
                      "tolerance": tol, "ok": abs(value - expected) <= tol})  # fmt: skip
    return {
        "suite": suite.name,
        "samples": str(inputs.samples),
        "ref": str(inputs.ref),
        "num_samples": int(measured["num_samples"]),
        "measured": {k: float(v) for k, v in measured.items()},
        "table": table,
        "pass": all(row["ok"] for row in table),
    }


def show_parity(result: dict[str, Any]) -> None:
    """Prints ``run_adm_parity_suite``'s table with rich."""
    from rich.console import Console
    from rich.table import Table

    verdict = "[green]PASS[/]" if result["pass"] else "[red]FAIL[/]"
    table = Table(
        title=f"{result['suite']}: {result['num_samples']} samples vs {Path(result['ref']).name} {verdict}"
    )
    for col in ("metric", "measured", "expected", "diff", "tolerance", "ok"):
        table.add_column(col)
    for row in result["table"]:
        table.add_row(row["metric"], f"{row['measured']:.4f}", f"{row['expected']:.4f}", f"{row['diff']:+.4f}",
                      f"{row['tolerance']:g}", "[green]yes[/]" if row["ok"] else "[red]no[/]")  # fmt: skip
    Console().print(table)
