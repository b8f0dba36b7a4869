"""``pfbench tune SUITE``: per budget, search each adaptive sampler's parameters on tuning seeds (Optuna), then score
the best configuration on held-out seeds the search never saw, so that the winner's curse is visible.

One study per (model, sampler, NFE budget), persisted in ``<results>/<suite>/tune/optuna.db`` (SQLite through
optuna's ``RDBStorage``, ``load_if_exists``): a killed tuner resumes where it stopped (finished trials are in the
database and count towards ``tune.trials``), and two tuners may share a study (SQLite serialises their writes;
their trials add up to ``tune.trials``). A study's name carries a hash of everything that changes its objective
(the model's spec, the budget, the search space, the tuning seeds, the sample count, the metric), so a changed
suite starts a new study instead of mixing objectives.

Every trial is ordinary suite cells, one per tuning seed, computed and cached through ``Runner.compute`` (a
repeated configuration, a rerun or a second tuner costs nothing). The first trial of each study is the
sampler's default configuration, so the tuned configuration is at least as good on the tuning seeds.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import optuna
import pandas as pd
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState

from pfbench import PfbenchError
from pfbench.io import content_hash
from pfbench.locks import hold_lock, lock_path
from pfbench.registry import METRICS, SAMPLERS
from pfbench.results import read_path
from pfbench.suite.runner import Runner
from pfbench.suite.spec import RunSpec, SamplerSpec, SuiteSpec, plan

# Rows of each of ``cells`` (every metric of the cell, as ``pfbench.results`` columns), computing what is missing.
Evaluate = Callable[[Sequence[RunSpec]], list[pd.DataFrame]]
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)  # pruned: a configuration the budget cannot run


@dataclass(frozen=True)
class Param:
    """A search range: ``low`` to ``high`` in steps of ``step`` (a grid, so that repeats are cached cells)."""

    low: float
    high: float
    step: float
    integer: bool = False


# What ``pfbench tune`` searches per sampler (the samplers' own parameters; ``tune.space`` overrides).
SPACES: dict[str, dict[str, Param]] = {
    "dual_loop": {"p": Param(0.05, 0.95, 0.05), "n_inner": Param(1, 8, 1, integer=True)},
    "look_ahead": {"p": Param(0.05, 0.95, 0.05), "r": Param(1.0, 3.0, 0.1), "t_warm": Param(0.0, 0.3, 0.05)},
}
# Searched as well where the suite guides (a CFG scale other than 1): the scale and the guidance interval.
CFG_KEYS = ("cfg_scale", "cfg_lo", "cfg_hi")


@dataclass(frozen=True)
class Config:
    """What a trial sets: the sampler (with its parameters), the CFG scale and the guidance interval."""

    sampler: SamplerSpec
    cfg_scale: float = 1.0
    cfg_interval: tuple[float, float] | None = None

    def cells(self, spec: SuiteSpec, model: str, nfe: int, seeds: Sequence[int]) -> list[RunSpec]:
        return [RunSpec(spec.name, model, self.sampler, nfe, s, spec.sweep.num_samples, self.cfg_scale,
                        self.cfg_interval) for s in seeds]

    def text(self) -> str:
        parts = [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(self.sampler.params.items())]
        if self.cfg_scale != 1.0:
            parts.append(f"cfg={self.cfg_scale:g}" + (f" in {list(self.cfg_interval)}" if self.cfg_interval else ""))
        return ", ".join(parts) or "defaults"


@dataclass(frozen=True)
class Target:
    """One study: a model's sampler (as the suite's grid sets it) at one budget; ``cfg`` the suite's largest CFG
    scale (1 = unguided: no CFG search)."""

    model: str
    sampler: SamplerSpec
    nfe: int
    cfg: float = 1.0

    def label(self) -> str:
        return f"{self.model}-{self.sampler.name}-nfe{self.nfe}"


@dataclass(frozen=True)
class Outcome:
    """A study's result: the default and the tuned configuration, the trials it ran, and the study's name."""

    target: Target
    default: Config
    tuned: Config
    trials: int
    study: str


def _mean(values: dict[int, float]) -> float:
    return float(np.mean(list(values.values())))


def _canonical(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` rounded (grid values such as 0.30000000000000004) and without entries equal to the sampler's
    default, so the default configuration is the very cell a suite computes."""
    defaults = {f.name: f.default for f in dataclasses.fields(SAMPLERS.get(name)) if f.default is not dataclasses.MISSING}
    out = {}
    for k, v in params.items():
        v = round(v, 6) if isinstance(v, float) else v
        if not (k in defaults and defaults[k] == v):
            out[k] = v
    return out


class Tuner:
    """Runs ``pfbench tune`` for one suite (see the module docstring).

    Args:
        spec: the suite (its ``tune`` section says what to search and on which seeds).
        results_root, reports_root: roots of ``<suite>/`` folders (cells, studies; the tune report).
        evaluate: how cells get their rows; default: the suite's ``Runner`` (cached suite cells). Tests pass
            an analytic stand-in.
    """

    def __init__(self, spec: SuiteSpec, results_root: Path = Path("results"), reports_root: Path = Path("reports"),
                 evaluate: Evaluate | None = None, progress: bool = True) -> None:
        self.spec, self.tune = spec, spec.tune
        self.results = Path(results_root) / spec.name
        self.reports = Path(reports_root) / spec.name
        self.metric = self.tune.metric or spec.metrics[0]
        self.progress = progress
        self._check()
        self.evaluate = evaluate if evaluate is not None else RunnerCells(
            Runner(spec, Path(results_root), Path(reports_root), progress=progress))
        # (phase, cell) of every cell scored: "search" (a trial), "tuning" (default and tuned re-read on the tuning
        # seeds, cached), "heldout" (after every search)
        self.evaluated: list[tuple[str, RunSpec]] = []

    def _check(self) -> None:
        t = self.tune
        if t.trials < 1:
            raise PfbenchError(f"tune.trials: {t.trials} must be >= 1")
        if not t.tuning_seeds or not t.heldout_seeds:
            raise PfbenchError("tune.tuning_seeds and tune.heldout_seeds must each name at least one seed")
        if overlap := sorted(set(t.tuning_seeds) & set(t.heldout_seeds)):
            raise PfbenchError(f"tune: seeds {overlap} are both tuning and held-out seeds; held-out seeds must never "
                               "be seen by the search")
        if self.metric not in self.spec.metrics:
            raise PfbenchError(f"tune.metric: {self.metric!r} is not one of the suite's metrics {self.spec.metrics}")
        for name in [*t.samplers, *t.space]:
            if name not in SPACES:
                raise PfbenchError(f"tune: no search space for sampler {name!r} (tunable: {', '.join(SPACES)})")
        if not self.targets():
            raise PfbenchError(f"tune: the suite's grid has none of the samplers to tune ({', '.join(t.samplers)})")

    # ------------------------------------------------------------------ what is searched
    def targets(self) -> list[Target]:
        """One study per (model, tunable sampler of its grid block, NFE budget), in grid order."""
        cfg = max(self.spec.sweep.cfg_scale)
        out: list[Target] = []
        for grid in self.spec.grid:
            for model in grid.models:
                for sampler in grid.samplers:
                    if sampler.name in self.tune.samplers:
                        out += [Target(model, sampler, nfe, cfg) for nfe in grid.nfe or self.spec.sweep.nfe]
        return list({t.label() + str(sorted(t.sampler.params.items())): t for t in out}.values())

    def space(self, target: Target) -> dict[str, Param]:
        """The search range of each parameter (``SPACES`` with ``tune.space`` overrides; n_inner fits the budget)."""
        space = dict(SPACES[target.sampler.name])
        for key, (lo, hi, *step) in self.tune.space.get(target.sampler.name, {}).items():
            if key not in space:
                raise PfbenchError(f"tune.space.{target.sampler.name}.{key}: not a searched parameter "
                                   f"({', '.join(space)})")
            space[key] = Param(lo, hi, step[0] if step else space[key].step, space[key].integer)
        if "n_inner" in space:  # one outer step of n_inner calls must fit the budget
            space["n_inner"] = dataclasses.replace(space["n_inner"], high=min(space["n_inner"].high, target.nfe))
        if target.cfg != 1.0:
            space |= {"cfg_scale": Param(1.0, 2 * target.cfg, 0.25), "cfg_lo": Param(0.0, 0.5, 0.05),
                      "cfg_hi": Param(0.5, 1.0, 0.05)}
        return space

    def default(self, target: Target) -> Config:
        return Config(target.sampler, target.cfg)

    def config(self, target: Target, params: dict[str, Any]) -> Config:
        """The configuration of a trial's parameters (the grid's fixed sampler parameters kept)."""
        sampler_params = {k: v for k, v in params.items() if k not in CFG_KEYS}
        sampler = SamplerSpec(target.sampler.name, _canonical(target.sampler.name,
                                                               {**target.sampler.params, **sampler_params}))
        if "cfg_scale" not in params:
            return Config(sampler)
        scale, iv = round(params["cfg_scale"], 6), (round(params["cfg_lo"], 6), round(params["cfg_hi"], 6))
        return Config(sampler, scale, None if iv == (0.0, 1.0) or scale == 1.0 else iv)  # no guidance: no interval

    def default_params(self, target: Target) -> dict[str, Any] | None:
        """The default configuration as trial parameters (enqueued first), None where it lies outside the space."""
        cls = SAMPLERS.get(target.sampler.name)
        fields = {f.name: f.default for f in dataclasses.fields(cls)}
        params: dict[str, Any] = {}
        for key, prm in self.space(target).items():
            value = {"cfg_scale": target.cfg, "cfg_lo": 0.0, "cfg_hi": 1.0}.get(key, target.sampler.params.get(
                key, fields.get(key)))
            if not isinstance(value, (int, float)) or not prm.low <= value <= prm.high:
                return None
            params[key] = value
        return params

    def study_name(self, target: Target) -> str:
        key = {"model": dataclasses.asdict(self.spec.models[target.model]), "target": dataclasses.asdict(target),
               "space": {k: dataclasses.asdict(v) for k, v in self.space(target).items()},
               "seeds": self.tune.tuning_seeds, "n": self.spec.sweep.num_samples, "metric": self.metric,
               "data": self.spec.data.key(), "eval": self.spec.eval.numerics()}
        return f"{target.label()}-{content_hash(key)[:10]}"

    # ------------------------------------------------------------------ scoring
    def score(self, phase: str, cells: Sequence[RunSpec]) -> list[pd.DataFrame]:
        """The rows of ``cells`` (computed or read from the cache); every cell is recorded in ``evaluated``."""
        self.evaluated += [(phase, c) for c in cells]
        return self.evaluate(cells)

    def value(self, rows: pd.DataFrame) -> float:
        hit = rows.loc[rows["metric"] == self.metric, "value"]
        if hit.empty:
            raise PfbenchError(f"tune: a cell has no {self.metric!r} row")
        return float(hit.iloc[0])

    def higher_is_better(self) -> bool:
        return bool(METRICS.get(self.metric).higher_is_better)

    # ------------------------------------------------------------------ search
    def storage(self) -> optuna.storages.RDBStorage:
        db = self.results / "tune" / "optuna.db"
        db.parent.mkdir(parents=True, exist_ok=True)
        # heartbeat: a trial of a killed tuner is marked failed after the grace period (it never counts as finished)
        # two tuners starting at once on a new database would both create its tables: one at a time
        with hold_lock(lock_path(self.results, "tune-optuna-db")), warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeat_interval
            return optuna.storages.RDBStorage(f"sqlite:///{db}", heartbeat_interval=30, grace_period=120,
                                              engine_kwargs={"connect_args": {"timeout": 120}})

    def search(self, target: Target, storage: optuna.storages.BaseStorage) -> optuna.Study:
        """Runs (or resumes) the target's study until it holds ``tune.trials`` finished trials."""
        name = self.study_name(target)
        direction: Literal["minimize", "maximize"] = "maximize" if self.higher_is_better() else "minimize"
        with hold_lock(lock_path(self.results, "tune-optuna-db")):
            study = optuna.create_study(storage=storage, study_name=name, direction=direction, load_if_exists=True)
            done = len(study.get_trials(deepcopy=False, states=FINISHED))
            default = self.default_params(target)
            # the default first, unless a trial already has it (not counting one a killed tuner left running:
            # optuna's own skip_if_exists would, and the default would then never be scored)
            if default is not None and not any(
                    t.system_attrs.get("fixed_params", t.params) == default
                    for t in study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.WAITING))):
                study.enqueue_trial(default)
        # seeded by how far the study got, so a resumed tuner does not retrace the killed one's random start
        study.sampler = optuna.samplers.TPESampler(
            seed=int(content_hash([name, done])[:8], 16), n_startup_trials=max(2, min(10, self.tune.trials // 3)))
        space = self.space(target)

        def objective(trial: optuna.Trial) -> float:
            params = {k: trial.suggest_int(k, int(p.low), int(p.high), step=int(p.step)) if p.integer
                      else trial.suggest_float(k, p.low, p.high, step=p.step) for k, p in space.items()}
            config = self.config(target, params)
            cells = config.cells(self.spec, target.model, target.nfe, self.tune.tuning_seeds)
            try:
                values = [self.value(r) for r in self.score("search", cells)]
            except PfbenchError as err:  # e.g. parameters the budget cannot run: not a finding about quality
                raise optuna.TrialPruned(str(err)) from None
            trial.set_user_attr("seeds", [c.seed for c in cells])
            trial.set_user_attr("values", values)
            return float(np.mean(values))

        left = self.tune.trials - done
        if left > 0:
            optuna.logging.set_verbosity(optuna.logging.WARNING)
            study.optimize(objective, n_trials=left,
                           callbacks=[MaxTrialsCallback(self.tune.trials, states=FINISHED)])
        return study

    def run(self) -> tuple[list[Outcome], pd.DataFrame, list[dict[str, Any]]]:
        """Searches every target on the tuning seeds, then scores the defaults of every suite sampler and each
        tuned configuration on the held-out seeds.

        Returns:
            The outcomes; the held-out rows (column ``tuned``: the row is a tuned configuration's); and per outcome
            the per-seed values of the default and the tuned configuration on the tuning and held-out seeds.
        """
        storage = self.storage()
        outcomes, scores = [], []
        sign = 1.0 if self.higher_is_better() else -1.0
        for target in self.targets():
            t0 = time.perf_counter()
            study = self.search(target, storage)
            completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if not completed:
                raise PfbenchError(f"tune: study {study.study_name} has no completed trial (every configuration "
                                   "failed); see its trials in the optuna database")
            default, best = self.default(target), self.config(target, study.best_trial.params)
            entry: dict[str, Any] = {f"{w}_tuning": self.tuning_values(target, c)
                                     for w, c in (("default", default), ("tuned", best))}
            if sign * _mean(entry["default_tuning"]) >= sign * _mean(entry["tuned_tuning"]):
                best, entry["tuned_tuning"] = default, entry["default_tuning"]  # the default wins on the tuning seeds
            outcome = Outcome(target, default, best, len(completed), study.study_name)
            outcomes.append(outcome)
            scores.append(entry | {"outcome": outcome})
            if self.progress:
                print(f"tuned {target.label()}: {best.text()} ({len(completed)} trials, "
                      f"{time.perf_counter() - t0:.0f} s)", flush=True)
        rows, by_key = self.heldout(outcomes)  # the held-out seeds, after every search has ended
        for entry, o in zip(scores, outcomes, strict=True):
            for which, config in (("default", o.default), ("tuned", o.tuned)):
                cells = config.cells(self.spec, o.target.model, o.target.nfe, self.tune.heldout_seeds)
                entry[f"{which}_heldout"] = {c.seed: self.value(by_key[c.key("")]) for c in cells}
        return outcomes, rows, scores

    def tuning_values(self, target: Target, config: Config) -> dict[int, float]:
        """``config``'s metric per tuning seed (cells the search computed are read back from the cache)."""
        cells = config.cells(self.spec, target.model, target.nfe, self.tune.tuning_seeds)
        return {c.seed: self.value(r) for c, r in zip(cells, self.score("tuning", cells), strict=True)}

    def heldout(self, outcomes: Sequence[Outcome]) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
        """Rows on the held-out seeds: the suite's own cells (every sampler at its defaults) and each tuned
        configuration (columns ``tuned``, and ``before``: a default configuration's), and the rows of each cell by
        its key (``RunSpec.key("")``)."""
        seeds = self.tune.heldout_seeds
        suite_cells = plan(dataclasses.replace(self.spec, sweep=dataclasses.replace(self.spec.sweep, seeds=seeds)))
        tuned = {c.key(""): c for o in outcomes for c in o.tuned.cells(self.spec, o.target.model, o.target.nfe, seeds)}
        default = {c.key(""): c for o in outcomes for c in o.default.cells(self.spec, o.target.model, o.target.nfe,
                                                                            seeds)}
        cells = {c.key(""): c for c in suite_cells} | default | tuned
        frames = self.score("heldout", list(cells.values()))
        by_key = dict(zip(cells, frames, strict=True))
        before = {c.key("") for c in suite_cells} | set(default)
        rows = pd.concat([f.assign(tuned=k in tuned, before=k in before) for k, f in by_key.items()], ignore_index=True)
        return rows, by_key


class RunnerCells:
    """The default ``Evaluate``: suite cells through the suite's ``Runner`` (computed once, then read back)."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.models: dict[str, Any] = {}

    def __call__(self, cells: Sequence[RunSpec]) -> list[pd.DataFrame]:
        r = self.runner
        if not self.models:
            r.preflight()
            r.train_all()
        for name in dict.fromkeys(c.model for c in cells):
            if name not in self.models:
                self.models[name] = r.load_model(name, r.spec.models[name])
        parts = [r.cell_part(c, self.models[c.model].key_id) for c in cells]
        r.compute(list(cells), parts, self.models)
        return [read_path(r.results / f"{p}.parquet") for p in parts]


def snippet(spec: SuiteSpec, outcomes: Sequence[Outcome]) -> str:
    """A suite snippet (YAML) with one grid block per tuned configuration (model, sampler, budget)."""
    import yaml

    blocks = []
    for o in outcomes:
        sampler: Any = {"name": o.tuned.sampler.name, "params": o.tuned.sampler.params} if o.tuned.sampler.params \
            else o.tuned.sampler.name
        block: dict[str, Any] = {"models": [o.target.model], "samplers": [sampler], "nfe": [o.target.nfe]}
        blocks.append(block)
    head = [f"# pfbench tune {spec.name}: the best configuration per budget on tuning seeds {spec.tune.tuning_seeds}",
            f"# ({spec.tune.trials} trials each, metric {spec.tune.metric or spec.metrics[0]}); held-out scores: tune.md"]
    guided = [f"#   {o.target.label()}: cfg_scale {o.tuned.cfg_scale:g}, cfg_interval {list(o.tuned.cfg_interval or [0, 1])}"
              for o in outcomes if o.tuned.cfg_scale != 1.0]
    if guided:
        head += ["# tuned guidance (sweep-level keys in a suite; set them per run):", *guided]
    return "\n".join(head) + "\n" + yaml.safe_dump({"grid": blocks}, sort_keys=False, default_flow_style=None)


def studies(scores: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``Tuner.run``'s per-outcome scores as plain data for the report (``pfbench.report.tuning``)."""
    out = []
    for e in scores:
        o: Outcome = e["outcome"]
        out.append({"model": o.target.model, "sampler": o.target.sampler.name, "nfe": o.target.nfe,
                    "default": o.default.text(), "tuned": o.tuned.text(), "trials": o.trials, "study": o.study,
                    **{k: v for k, v in e.items() if k != "outcome"}})
    return out


def write_report(tuner: Tuner, outcomes: Sequence[Outcome], heldout: pd.DataFrame, scores: Sequence[dict[str, Any]],
                 wall_s: float, cpu_s: float) -> tuple[Path, Path]:
    """Writes ``<reports>/<suite>/tune.md`` (+ figures) and ``tuned.yaml``; returns both paths."""
    from pfbench.io import atomic_write_text
    from pfbench.report.tuning import tuning_report

    spec, t = tuner.spec, tuner.tune
    header = [f"Suite `{spec.name}`: {len(outcomes)} studies (model × sampler × NFE budget), {t.trials} trials each "
              f"(Optuna TPE, the default configuration first), objective {tuner.metric} on tuning seeds "
              f"{t.tuning_seeds}; the best of each study and every suite sampler's defaults scored on held-out seeds "
              f"{t.heldout_seeds}, never used by the search. {spec.sweep.num_samples} samples per cell.",
              f"This run: {wall_s / 60:.1f} min wall-clock, {cpu_s / 60:.1f} min CPU time of the tuner process "
              "(cached cells cost nothing). Studies: `tune/optuna.db` in the results folder.",
              "Tuned configurations as a suite snippet: [tuned.yaml](tuned.yaml)."]
    tuner.reports.mkdir(parents=True, exist_ok=True)
    yaml_path = atomic_write_text(tuner.reports / "tuned.yaml", snippet(spec, outcomes))
    md = tuning_report(studies(scores), heldout, tuner.reports, tuner.metric, tuner.higher_is_better(), header)
    return md, yaml_path
