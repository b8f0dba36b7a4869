"""Up-front checks of a suite: everything a run could trip on later, found in seconds before any work.

``pfbench plan`` and ``Runner.run`` call ``validate`` first, so a bad value fails before reference rows,
difficulty diagnostics or training, with its key path in a one-line message, e.g.
``grid[1].samplers[0].params.p = 1.5: must be in [0, 1]``. ``check_inputs`` finds a missing device or
checkpoint, decoder, reference set or metric weights file without loading them; ``check_writable`` proves the
output folders take a file. Nothing here loads a network. The input files are checked in
``pfbench.suite.inputs`` (``check_inputs``, re-exported here).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import tempfile
import typing
from pathlib import Path
from typing import Any

import torch

from pfbench import FieldError, PfbenchError
from pfbench.config import Builder
from pfbench.data.heterogeneity import DEFAULT_HETEROGENEITY, check_heterogeneity
from pfbench.evaluate.metric_pass import check_weights
from pfbench.metrics.standard import check_is_order, check_kid_sizes
from pfbench.registry import SAMPLERS
from pfbench.suite.inputs import check_inputs
from pfbench.suite.spec import (
    LauncherSpec,
    RunSpec,
    SamplerSpec,
    SuiteSpec,
    block_axes,
    excluded,
    expand_sampler,
    plan,
    split_model,
)
from pfbench.train.spec import spec_from_dict

# Largest NFE budget a suite may ask for. Far above any protocol (the paper's samplers use <= 250 steps; SiT's
# SDE 250, DDPM 1000), so a larger value is a typo; it also bounds ``from_budget``'s search over step counts.
MAX_NFE = 4096
# Largest fixed outer step count (``steps``): the reference samples with 100, SiT's SDE with 250, DDPM 1000.
MAX_STEPS = 1024

_TYPES = Builder()  # typed checks of sampler parameters against the sampler dataclass's annotations


def validate(spec: SuiteSpec) -> None:
    """Checks every value of a suite that would otherwise fail mid-run; builds each sampler once per budget.

    Raises:
        PfbenchError: the first problem, as ``<key path> = <value>: <what is wrong>`` on one line.
    """
    _check_axes(spec)
    _check_eval(spec)
    _check_launcher(spec.launcher)
    built: dict[str, Any] = {}  # "name|params|axis|n" -> done, so 144 cells build a handful of samplers
    for gi, grid in enumerate(spec.grid):
        for si, sampler in enumerate(grid.samplers):
            where = f"grid[{gi}].samplers[{si}]"
            for one in _build_sampler(sampler, where):
                for axis, values in block_axes(grid, spec.sweep, gi):  # a block may have its own budgets or steps
                    fixed = axis.endswith(".steps")
                    for k, n in enumerate(values):
                        key = f"{one.name}|{json.dumps(one.params, sort_keys=True, default=str)}|{fixed}|{n}"
                        if key in built or _all_excluded(spec, grid.models, one, n, fixed):
                            continue
                        built[key] = _fit(one, n, where, f"{axis}[{k}]", fixed)
    ev = spec.eval
    if ev.learning_curve and ev.curve_sampler is not None and any(m.train for m in spec.models.values()):
        for one in _build_sampler(ev.curve_sampler, "eval.curve_sampler"):
            _fit(one, ev.curve_nfe, "eval.curve_sampler", "eval.curve_nfe")
    for name, model in spec.models.items():
        if model.train is not None:
            try:
                train = spec_from_dict(model.train)
            except FieldError as err:  # a plugin's (field, reason), e.g. timesteps.params.s: must be >= 0
                raise err.under(f"models.{name}.train") from None
            except PfbenchError as err:
                raise PfbenchError(f"models.{name}.train: {err}") from None
            _check_heterogeneity(spec, name, train.data.name, train.data.heterogeneity)
    if not plan(spec):  # also checks cfg intervals and exclude keys
        raise PfbenchError("sweep.exclude: the rules remove every cell; nothing would run")


def _check_heterogeneity(spec: SuiteSpec, name: str, train_data: str, train_h: float) -> None:
    """``data.heterogeneity`` is a number in [0, 1], only for embedded data, and the one the suite's embedded
    models train at (the diagnostics and the reference read the suite's level)."""
    d = spec.data
    if d.name == "embedded" and train_data == "embedded" and train_h != d.heterogeneity:
        raise PfbenchError(f"models.{name}.train.data.heterogeneity = {train_h}: the suite's data.heterogeneity is "
                           f"{d.heterogeneity}; train at the level the suite evaluates")


def _check_axes(spec: SuiteSpec) -> None:
    """Non-empty grid, models, samplers and sweep axes; NFE, sample count and guidance in range."""
    if not spec.grid:
        raise PfbenchError("grid: empty; a suite needs at least one block, e.g. grid: [{models: [m], samplers: [euler]}]")
    for gi, grid in enumerate(spec.grid):
        for key in ("models", "samplers"):
            if not getattr(grid, key):
                raise PfbenchError(f"grid[{gi}].{key}: empty list; name at least one (a block without {key} has no cells)")
    sw = spec.sweep
    own = []  # a block's own budgets or step counts
    for gi, g in enumerate(spec.grid):
        block_axes(g, sw, gi)  # a block with both nfe and steps is an error
        own += [(f"grid[{gi}].{key}", getattr(g, key)) for key in ("nfe", "steps") if getattr(g, key) is not None]
    for key in ("seeds", "cfg_scale", "cfg_interval"):
        if not getattr(sw, key):
            raise PfbenchError(f"sweep.{key}: empty list; give at least one value (an empty axis leaves no cells)")
    if any(g.nfe is None and g.steps is None for g in spec.grid) and sw.nfe == [] and not sw.steps:
        raise PfbenchError("sweep.nfe: empty list; give at least one value (an empty axis leaves no cells), or "
                           "fixed step counts in sweep.steps")
    for path, values in [("sweep.nfe", sw.nfe or []), ("sweep.steps", sw.steps), *own]:
        steps = path.endswith(".steps")
        if not values and path.startswith("grid"):
            what = "step count" if steps else "budget"
            raise PfbenchError(f"{path}: empty list; give at least one {what}, or drop the key to use the sweep's")
        top, unit = (MAX_STEPS, "outer sampling steps") if steps else (MAX_NFE, "model calls per sample")
        for k, n in enumerate(values):  # integers: the config builder checked the type (pfbench.config)
            if not 1 <= n <= top:
                raise PfbenchError(f"{path}[{k}] = {n}: must be in [1, {top}] ({unit})")
    if sw.num_samples < 1:
        raise PfbenchError(f"sweep.num_samples = {sw.num_samples}: must be >= 1 (images per cell)")
    for k, seed in enumerate(sw.seeds):
        if seed < 0:
            raise PfbenchError(f"sweep.seeds[{k}] = {seed}: must be >= 0 (a sampling seed)")
    for k, scale in enumerate(sw.cfg_scale):
        if not math.isfinite(scale):
            raise PfbenchError(f"sweep.cfg_scale[{k}] = {scale}: must be a finite number (1 = no guidance)")
    if not spec.metrics:
        raise PfbenchError("metrics: empty list; name at least one metric, e.g. metrics: [fd_embedded]")


def _check_launcher(ls: LauncherSpec) -> None:
    """One-line errors for launcher values submitit would reject late (or never)."""
    for key, valid in (("name", ("local", "submitit")), ("executor", ("slurm", "local"))):
        if getattr(ls, key) not in valid:
            raise PfbenchError(f"launcher.{key} = {getattr(ls, key)!r}: must be one of {', '.join(valid)}")
    for key in ("nodes", "timeout_min", "array_parallelism", "shard_size", "train_nodes", "train_timeout_min",
                "tasks_per_node", "train_tasks_per_node", "cpus_per_task"):
        value = getattr(ls, key)
        if value is not None and value < 1:
            raise PfbenchError(f"launcher.{key} = {value}: must be >= 1")
    for key in ("gpus_per_node", "train_gpus_per_node", "max_requeues"):
        value = getattr(ls, key)
        if value is not None and value < 0:
            raise PfbenchError(f"launcher.{key} = {value}: must be >= 0")
    if ls.executor == "local" and max(ls.nodes, ls.train_nodes or 1) > 1:
        raise PfbenchError("launcher.nodes: the local executor runs on one node; use nodes=1 or executor=slurm")


def _check_eval(spec: SuiteSpec) -> None:
    """Batch sizes, learning-curve settings, resize mode and device."""
    ev = spec.eval
    for key in ("batch_size", "curve_samples"):
        if getattr(ev, key) < 1:
            raise PfbenchError(f"eval.{key} = {getattr(ev, key)}: must be >= 1")
    if not 1 <= ev.curve_nfe <= MAX_NFE:
        raise PfbenchError(f"eval.curve_nfe = {ev.curve_nfe}: must be in [1, {MAX_NFE}]")
    if not 0.0 <= ev.difficulty_t <= 1.0:
        raise PfbenchError(f"eval.difficulty_t = {ev.difficulty_t}: must be in [0, 1] (0 = noise, 1 = data)")
    for key in ("difficulty_ts", "context_ts"):
        for k, t in enumerate(getattr(ev, key)):
            if not 0.0 <= t < 1.0:
                raise PfbenchError(f"eval.{key}[{k}] = {t}: must be in [0, 1) (0 = noise, 1 = data)")
    if spec.data.name == "embedded" and spec.data.test_size < 1:
        raise PfbenchError(f"data.test_size = {spec.data.test_size}: must be >= 1")
    check_heterogeneity(spec.data.heterogeneity, "data")
    if spec.data.name != "embedded" and spec.data.heterogeneity != DEFAULT_HETEROGENEITY:
        raise PfbenchError(f"data.heterogeneity = {spec.data.heterogeneity}: only for data.name 'embedded'")
    if ev.resize not in ("tf1x", "clean"):
        close = difflib.get_close_matches(ev.resize, ["tf1x", "clean"], n=1)
        hint = f"; did you mean {close[0]!r}?" if close else " (valid: tf1x, clean)"
        raise PfbenchError(f"eval.resize = {ev.resize!r}: unknown Inception resize{hint}")
    _check_metric_options(spec)
    given = ev.weights if isinstance(ev.weights, dict) else {}
    for network, alias in (("clip", "clip_weights"), ("dinov2", "dinov2_weights")):
        if network in given and getattr(ev, alias) is not None:
            raise PfbenchError(f"eval.{alias}: also given as eval.weights.{network}; keep one (eval.weights.{network})")
    try:
        check_weights(ev.weights_map())
    except FieldError as err:
        raise err.under("eval.weights") from None
    try:
        device = torch.device(ev.device)
    except (RuntimeError, TypeError):
        raise PfbenchError(f"eval.device = {ev.device!r}: not a torch device; use cpu, cuda or cuda:N") from None
    if ev.precision not in ("fp32", "tf32", "bf16"):
        raise PfbenchError(f"eval.precision = {ev.precision!r}: must be fp32, tf32 or bf16")
    for key, on in (("precision", ev.precision != "fp32"), ("compile", ev.compile)):
        if on and device.type != "cuda":
            raise PfbenchError(f"eval.{key} = {getattr(ev, key)!r}: needs eval.device=cuda (on CPU pfbench samples "
                               "in fp32, uncompiled)")


def _check_metric_options(spec: SuiteSpec) -> None:
    """IS order and KID subset size (``pfbench.metrics.standard``'s own checks) against the images each evaluation
    of the suite gets."""
    ev = spec.eval
    try:
        if "is" in spec.metrics:
            check_is_order(ev.is_order)
        if "kid" in spec.metrics:
            sizes = {"sweep.num_samples": spec.sweep.num_samples}
            if ev.learning_curve and any(m.train for m in spec.models.values()):
                sizes["eval.curve_samples"] = ev.curve_samples
            if spec.data.name == "embedded" and spec.data.reference is None:
                sizes["data.test_size"] = spec.data.test_size  # the reference images
            check_kid_sizes(ev.kid_subset_size, sizes)
    except FieldError as err:
        raise err.under("eval") from None


def _build_sampler(spec: SamplerSpec, where: str) -> list[SamplerSpec]:
    """Checks a grid sampler's name and parameters (each value of a list-valued axis); returns its expansion."""
    cls = SAMPLERS.get(spec.name)  # the name was checked, with its key path, by load_suite
    if "steps" in spec.params:
        raise PfbenchError(f"{where}.params.steps: the step count follows from the NFE budget (nfe) or is the cell's "
                           "fixed step count (sweep.steps, or steps: in the grid block); remove it")
    if dataclasses.is_dataclass(cls):
        valid = [f.name for f in dataclasses.fields(cls) if f.name != "steps"]
        hints = typing.get_type_hints(cls)
        for key, value in spec.params.items():
            if key not in valid:
                close = difflib.get_close_matches(key, valid, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f" (valid: {', '.join(valid) or 'none'})"
                raise PfbenchError(f"unknown key '{where}.params.{key}' for sampler {spec.name!r}{hint}")
            for path, item in _items(f"{where}.params.{key}", value):
                _TYPES.convert(item, hints[key], path)
    expanded = expand_sampler(spec)
    for one in expanded:
        problem = _make(cls, one.params)
        if problem is None:
            continue
        if isinstance(problem, FieldError):  # a sampler that names its field: its key path, its reason
            raise problem.under(f"{where}.params") from None
        for key, value in one.params.items():  # find the parameter that fails on its own, for the key path
            problem = _make(cls, {key: value})
            if problem is not None:
                path = f"{where}.params.{key}" + _index(spec.params[key], value)
                raise PfbenchError(f"{path} = {value!r}: {_reason(problem, spec.name, key, value)}")
        raise PfbenchError(f"{where}.params = {one.params}: {_reason(_make(cls, one.params), spec.name, '', None)}")
    return expanded


def _items(path: str, value: Any) -> list[tuple[str, Any]]:
    """The values to check of one parameter: itself, or each entry of a list-valued sweep axis."""
    return [(f"{path}[{i}]", v) for i, v in enumerate(value)] if isinstance(value, list) else [(path, value)]


def _index(original: Any, value: Any) -> str:
    return f"[{original.index(value)}]" if isinstance(original, list) else ""


def _make(cls: Any, params: dict[str, Any]) -> Exception | None:
    """The error building ``cls(steps=1, **params)`` raises, or None."""
    try:
        cls(steps=1, **params)
    except (PfbenchError, TypeError, ValueError) as err:
        return err
    return None


def _reason(err: Exception | None, name: str, key: str, value: Any) -> str:
    """A sampler's complaint without the parts the key path already says ("sampler 'x': p ... got 1.5")."""
    text = str(err).removeprefix(f"sampler {name!r}: ")
    if key:
        text = text.removeprefix(f"{key} ")
        for got in (f", got {value!r}", f", got {value}"):
            text = text.removesuffix(got)
    return text


def _all_excluded(spec: SuiteSpec, models: list[str], sampler: SamplerSpec, n: int, fixed: bool) -> bool:
    """True when ``sweep.exclude`` drops every cell of this sampler at this budget, or at this step count when
    ``fixed`` (its value is then moot)."""
    sw = spec.sweep
    nfe, steps = (None, n) if fixed else (n, None)
    return all(excluded(RunSpec(spec.name, m, sampler, nfe, seed, sw.num_samples, scale, None, steps), sw.exclude)
               for m in models for seed in sw.seeds for scale in sw.cfg_scale
               if not sw.pair_seeds or split_model(m)[1] in (None, seed))  # as ``plan`` pairs them


def _fit(spec: SamplerSpec, n: int, where: str, path: str, fixed: bool = False) -> Any:
    """The sampler with the largest step count fitting budget ``n``, or at ``n`` steps when ``fixed``
    (``SamplerSpec.build``, the one the run then reuses); a value below one run names both keys."""
    try:
        return spec.build(steps=n) if fixed else spec.build(n)
    except PfbenchError as err:
        raise PfbenchError(f"{path} = {n}: too small for {where} ({spec.name}): {err}") from None


def check_writable(folders: list[Path]) -> None:
    """Creates each output folder and writes and removes a probe file in it, so a run cannot compute a cell and
    then lose it to "Permission denied" or "Not a directory" (a real write: ``os.access`` says yes to root).

    Raises:
        PfbenchError: a folder that cannot be created or written, with the reason.
    """
    for folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            # hidden (".pfbench-probe-*"): a probe left by a kill at this very line is skipped by every reader
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".pfbench-probe-", suffix=".tmp"):
                pass
        except OSError as err:
            raise PfbenchError(f"cannot write to {folder}: {err.strerror or err}"
                               f"{f' ({err.filename})' if err.filename and str(err.filename) != str(folder) else ''}; "
                               "choose writable --results/--reports/--runs folders") from None


__all__ = ["MAX_NFE", "MAX_STEPS", "check_inputs", "check_writable", "validate"]
