"""Suites: YAML (hydra-core compose + overrides) -> frozen dataclasses (``pfbench.suite.spec``), checked.

YAML stops here. Everything below this module takes typed, named parameters. Unknown keys and wrong types
are errors naming the key path and the nearest valid key.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from pathlib import Path
from typing import Any

import yaml
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pfbench import PfbenchError
from pfbench.config import Builder
from pfbench.data import DATASETS
from pfbench.registry import METRICS, SAMPLERS
from pfbench.report.agreement import FullStudy
from pfbench.report.claims import PAPER_CLAIMS
from pfbench.suite.sources import check_model
from pfbench.suite.spec import SEED_SEP, ExpectedSpec, ModelSpec, SamplerSpec, SuiteSpec
from pfbench.suite.yaml_guard import check_suite_files


def expand_train_seeds(spec: SuiteSpec) -> SuiteSpec:
    """One model per training seed: ``pf`` with ``train_seeds: [0, 1]`` becomes ``pf@s0`` and ``pf@s1`` (each
    with ``train.seed`` set), and every grid block naming ``pf`` names both. Models without seeds stay as they are.
    """
    names: dict[str, list[str]] = {}
    models: dict[str, ModelSpec] = {}
    for name, m in spec.models.items():
        if not m.train_seeds:
            models[name], names[name] = m, [name]
            continue
        if m.train is None:
            raise PfbenchError(f"models.{name}.train_seeds: only models trained in the suite (train:) have seeds")
        if len(set(m.train_seeds)) != len(m.train_seeds) or min(m.train_seeds) < 0:
            raise PfbenchError(f"models.{name}.train_seeds = {m.train_seeds}: must be distinct integers >= 0")
        names[name] = [f"{name}{SEED_SEP}{s}" for s in m.train_seeds]
        for s, new in zip(m.train_seeds, names[name], strict=True):
            models[new] = dataclasses.replace(m, train={**m.train, "seed": s}, train_seeds=[])
    grid = [dataclasses.replace(g, models=[x for n in g.models for x in names[n]]) for g in spec.grid]
    if spec.sweep.pair_seeds:
        for name, m in spec.models.items():
            missing = sorted(set(m.train_seeds) - set(spec.sweep.seeds))
            if missing:
                raise PfbenchError(f"sweep.pair_seeds: models.{name} has training seeds {missing} that are not in "
                                   f"sweep.seeds {spec.sweep.seeds}; a paired instance samples with its own seed")
    return dataclasses.replace(spec, models=models, grid=grid)


_BUILDER = Builder(shorthands={SamplerSpec: "name"})  # `samplers: [euler]` reads as SamplerSpec("euler")


def build(cls: type[Any], data: dict[str, Any], path: str = "") -> Any:
    """Builds dataclass ``cls`` from a mapping; unknown keys name the nearest valid key (``pfbench.config``)."""
    return _BUILDER.build(cls, data, path)


def compose_yaml(path: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """Composes a suite file with hydra (``defaults:`` includes, command-line overrides) into plain data."""
    path = Path(path)
    if not path.is_file():
        raise PfbenchError(f"suite file not found: {path}")
    check_suite_files(path)  # size, depth, alias expansion and include cycles, before OmegaConf expands anything
    try:
        with initialize_config_dir(config_dir=str(path.parent.resolve()), version_base=None):
            cfg = compose(config_name=path.stem, overrides=list(overrides or []))
        data = OmegaConf.to_container(cfg, resolve=True)
    except (HydraException, OmegaConfBaseException) as err:
        lines = str(err).strip().splitlines() or [type(err).__name__]
        hint = next((ln for ln in lines[1:] if ln.startswith("To append")), "")  # hydra's `+key=value` advice
        raise PfbenchError(f"{path}: {lines[0]}" + (f" ({hint[0].lower()}{hint[1:]})" if hint else "")) from None
    except Exception as err:  # yaml.YAMLError and friends: malformed files
        raise yaml_error(path, err) from None
    if not isinstance(data, dict):
        raise PfbenchError(f"{path}: a suite must be a mapping")
    return data  # type: ignore[return-value]


def yaml_error(path: Path, err: Exception) -> PfbenchError:
    """One line naming the file, line and column of a YAML syntax error: ``FILE:LINE:COL: malformed YAML: …``.

    The file is the one the parser was reading, which may be a ``defaults:`` include of ``path``.
    """
    mark = getattr(err, "problem_mark", None) if isinstance(err, yaml.MarkedYAMLError) else None
    if mark is None:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return PfbenchError(f"{path}: malformed YAML: {first}")
    assert isinstance(err, yaml.MarkedYAMLError)
    name = Path(mark.name) if mark.name and not mark.name.startswith("<") else path
    name = path if name.resolve() == path.resolve() else name
    what = err.problem or err.context or type(err).__name__
    ctx = err.context_mark
    started = f" ({err.context} started at line {ctx.line + 1})" if err.problem and err.context and ctx is not None else ""
    return PfbenchError(f"{name}:{mark.line + 1}:{mark.column + 1}: malformed YAML: {what}{started}")


def suite_kind(path: str | Path) -> str | None:
    """The ``kind:`` of a suite file (``adm_parity`` for a parity suite), or None for a runner suite.

    Reads the file without composing it; an unreadable or malformed file gives None, so that
    ``compose_yaml`` reports the problem.
    """
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    kind = data.get("kind") if isinstance(data, dict) else None
    return None if kind is None else str(kind)


# Keys a suite file may leave out that an override may still set without hydra's ``+``: every key of the sections
# whose every key has a default in its dataclass (LauncherSpec, EvalSpec; a typo is still refused by the dataclass
# builder), and the two budget axes (``sweep.steps=[100]`` on a suite whose sweep gives only ``nfe``, and the reverse).
DEFAULTED = ("launcher.", "launcher=", "eval.", "eval=", "sweep.steps=", "sweep.nfe=")


def defaulted_overrides(overrides: list[str] | None) -> list[str]:
    """``launcher.KEY=VALUE``, ``eval.KEY=VALUE``, ``sweep.steps=`` and ``sweep.nfe=`` become hydra's ``++…`` (set, or
    add when absent), so a suite file without that key (e.g. ``eval.verify_weights``) takes it from the command line
    all the same; the dataclass defaults fill in the rest."""
    return [f"++{o}" if o.startswith(DEFAULTED) else o for o in overrides or []]


def load_suite(path: str | Path, overrides: list[str] | None = None) -> SuiteSpec:
    """Reads, composes and validates a suite; plugin names are checked against the registries."""
    data = compose_yaml(path, defaulted_overrides(overrides))
    if "kind" in data:  # e.g. suites/adm_parity.yaml, which `pfbench plan/run` hand to `pfbench parity`
        if data["kind"] != "adm_parity":
            raise PfbenchError(f"{path}: kind: unknown suite kind {data['kind']!r} (known: adm_parity; runner "
                               "suites have no 'kind:')")
        raise PfbenchError(f"{path}: an ADM parity suite (kind: adm_parity), not a runner suite; check it with "
                           f"`pfbench parity {path}`")
    spec: SuiteSpec = build(SuiteSpec, data)
    for name, model in spec.models.items():  # models first: a missing plugin package is named by its adapter
        if "@" in name:
            raise PfbenchError(f"models.{name}: '@' is reserved for training-seed instances (train_seeds); rename it")
        check_model(name, model)  # against its source (pfbench.suite.sources)
    for gi, grid in enumerate(spec.grid):
        for name in grid.models:
            if name not in spec.models:
                close = difflib.get_close_matches(name, list(spec.models), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise PfbenchError(f"grid[{gi}].models: unknown model {name!r}{hint}")
    samplers = [(f"grid[{gi}].samplers[{si}]", s) for gi, g in enumerate(spec.grid) for si, s in enumerate(g.samplers)]
    for where, sampler in samplers + ([("eval.curve_sampler", spec.eval.curve_sampler)] if spec.eval.curve_sampler else []):
        try:
            SAMPLERS.get(sampler.name)
        except PfbenchError as err:
            raise PfbenchError(f"{where}: {err}") from None
    cell_claims = [c.name for c in PAPER_CLAIMS if c.kind == "cell"]
    for ti, name in enumerate(spec.claims.trends):
        if name not in cell_claims:
            close = difflib.get_close_matches(name, cell_claims, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f" (cell claims: {', '.join(cell_claims)})"
            raise PfbenchError(f"claims.trends[{ti}]: {name!r} is not a cell claim of pfbench.report.claims{hint}")
    if spec.claims.agree_with is not None and spec.claims.agree_with in ("", spec.name):
        raise PfbenchError(f"claims.agree_with: {spec.claims.agree_with!r} must name another suite (the full study "
                           f"this one is checked against, e.g. 'validity'), not {spec.name!r} itself")
    for hi, metric in enumerate(spec.report.headline):
        if metric not in spec.metrics and not any(metric.startswith(f"{m}_") for m in spec.metrics):
            raise PfbenchError(f"report.headline[{hi}]: {metric!r} is not among the suite's metrics "
                               f"({', '.join(spec.metrics)}) nor one of their breakdowns")
    for mi, metric in enumerate(spec.metrics):
        try:
            METRICS.get(metric)
        except PfbenchError as err:
            raise PfbenchError(f"metrics[{mi}]: {err}") from None
    if spec.data.name not in DATASETS:
        close = difflib.get_close_matches(spec.data.name, DATASETS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f" (valid: {', '.join(DATASETS)})"
        raise PfbenchError(f"data.name: unknown dataset {spec.data.name!r}{hint}")
    if spec.data.name != "embedded" and spec.data.reference is None:
        raise PfbenchError(f"data.reference: dataset {spec.data.name!r} needs reference images or an ADM .npz")
    for ei, entry in enumerate(spec.expected):
        _check_expected(f"expected[{ei}]", entry, spec)
    return expand_train_seeds(spec)


def _check_expected(where: str, entry: ExpectedSpec, spec: SuiteSpec) -> None:
    """A published number of ``expected:``: a registered sampler, a metric value the suite's metrics produce,
    exactly one of ``steps``/``nfe`` (>= 1), a finite value and where it is published. The model may be one the
    run leaves out (``~models.pf_xl2`` for a B/2-only run): the report shows it as not measured."""
    if not entry.model.strip():
        raise PfbenchError(f"{where}.model: name the suite model the number is for")
    try:
        SAMPLERS.get(entry.sampler)
    except PfbenchError as err:
        raise PfbenchError(f"{where}.sampler: {err}") from None
    produced: list[str] = []
    for name in spec.metrics:
        cls = METRICS.get(name)
        produced += [k for k in getattr(cls, "directions", None) or {name: True} if not k.endswith("_std")]
    if entry.metric not in produced:
        close = difflib.get_close_matches(entry.metric, produced, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f" (the suite's metrics give: {', '.join(produced)})"
        raise PfbenchError(f"{where}.metric: {entry.metric!r} is not a value of the suite's metrics{hint}")
    if (entry.steps is None) == (entry.nfe is None):
        raise PfbenchError(f"{where}: give exactly one of 'steps' (outer sampling steps) or 'nfe' (an NFE budget)")
    axis, n = ("steps", entry.steps) if entry.steps is not None else ("nfe", entry.nfe)
    if n is None or n < 1:
        raise PfbenchError(f"{where}.{axis} = {n}: must be >= 1")
    if not math.isfinite(entry.value):
        raise PfbenchError(f"{where}.value = {entry.value}: must be a finite number")
    if not entry.source.strip():
        raise PfbenchError(f"{where}.source: say where the number is published (e.g. 'paper Table 2')")


def full_study(spec: SuiteSpec, suites: Path) -> FullStudy | None:
    """The full study ``spec.claims.agree_with`` names, with the trend claims of its YAML in ``suites`` (none when
    the file is missing: its claims at each basis are still compared); None when the suite declares none."""
    name = spec.claims.agree_with
    if not name:
        return None
    path = Path(suites) / f"{name}.yaml"
    trends = tuple(load_suite(path).claims.trends) if path.is_file() else ()
    return FullStudy(name, trends)
