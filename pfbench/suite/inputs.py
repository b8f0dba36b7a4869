"""What a suite needs from this machine, found all at once before any work: checkpoints, decoders, the reference
set, prompts, metric weights and the device.

``find_inputs`` lists every missing or changed input with what provides it (``pfbench fetch NAME``, or how to make
it); ``check_inputs`` raises with the full list, so ``pfbench plan`` and ``pfbench run`` stop on the same list.
Only the models the grid uses (after overrides and ``sweep.exclude``) are checked. A model marked ``optional: true``
whose files are missing does not stop the run: its cells are skipped (``Inputs.skipped``, ``runnable``).

Files are verified here, before the first cell samples: a metric weights file against its known sha256 (Inception:
unless ``eval.verify_weights: false``), and every file ``pfbench fetch`` recorded against its ``weights.lock`` entry
(``pfbench.fetch.check_lock``: a file untouched since is not re-hashed). Nothing is loaded.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pfbench import PfbenchError
from pfbench.assets import asset_path
from pfbench.data.vae import vae_weights_file
from pfbench.encoders.base import weights_key
from pfbench.fetch import check_lock, provider
from pfbench.registry import FEATURES, METRICS
from pfbench.suite.spec import ModelSpec, SuiteSpec, plan, split_model
from pfbench.weights import KNOWN_WEIGHTS, OPT_OUT, candidate_paths, resolve_weights, verify_weights

TRAIN_HINT = "no download: train it (pfbench train suites/recipes/…) and put its last.pt here"


@dataclass(frozen=True)
class Missing:
    """One input a run cannot start without.

    Attributes:
        key: the suite key(s) naming it (``models.pf_b2.checkpoint``; one file wanted by several keys is one entry).
        path: the file looked for.
        problem: ``not found``, or what is wrong with the file found (checksum, changed since fetched).
        remedy: what provides it: ``pfbench fetch NAME``, or how to make it.
        models: the suite models it belongs to (empty: the whole suite needs it).
    """

    key: str
    path: str
    problem: str
    remedy: str
    models: tuple[str, ...] = ()

    def line(self) -> str:
        return f"{self.key}: {self.path} {self.problem} ({self.remedy})"


@dataclass(frozen=True)
class Inputs:
    """``missing``: what stops a run; ``skipped``: optional model -> what it lacks (its cells are skipped)."""

    missing: tuple[Missing, ...] = ()
    skipped: dict[str, tuple[Missing, ...]] = field(default_factory=dict)

    def error(self) -> PfbenchError:
        n = len(self.missing)
        return PfbenchError(f"{n} input{'s' * (n != 1)} missing or wrong: " + "; ".join(m.line() for m in self.missing))


def used_models(spec: SuiteSpec) -> list[str]:
    """The suite's models that sample at least one cell (in ``models:`` order)."""
    used = {cell.model for cell in plan(spec)}
    return [name for name in spec.models if name in used]


def skipped_models(spec: SuiteSpec) -> dict[str, tuple[Missing, ...]]:
    """Optional models the grid uses whose files are missing (existence only: a wrong file is an error, not a
    skip) -> what each lacks."""
    if not any(m.optional for m in spec.models.values()):
        return {}
    out = {}
    for name in used_models(spec):
        model = spec.models[name]
        mine = model_inputs(name, model, verify=False) if model.optional else []
        if mine:
            out[name] = tuple(mine)
    return out


def find_inputs(spec: SuiteSpec, device: bool = True, verify: bool = True) -> Inputs:
    """Every missing (or, with ``verify``, wrong) input of a suite; ``device``: also whether ``eval.device`` is here."""
    skipped = skipped_models(spec)
    found: list[Missing] = []
    for name in used_models(spec):
        if name not in skipped:
            found += model_inputs(name, spec.models[name], verify)
    found += _data_inputs(spec, verify) + _metric_inputs(spec, verify)
    ev = spec.eval
    if device and torch.device(ev.device).type == "cuda" and not torch.cuda.is_available():
        found.append(Missing("eval.device", ev.device, "not visible here (no CUDA device)",
                             "run on a GPU machine, or override eval.device=cpu"))
    return Inputs(_merged(found), skipped)


def check_inputs(spec: SuiteSpec, device: bool = True) -> Inputs:
    """``find_inputs``, raising when a run would stop.

    Raises:
        PfbenchError: every missing or wrong input, in one line (``pfbench plan`` shows them as a table).
    """
    inputs = find_inputs(spec, device)
    if inputs.missing:
        raise inputs.error()
    return inputs


def runnable(spec: SuiteSpec, skipped: dict[str, tuple[Missing, ...]]) -> SuiteSpec:
    """The suite without the models no cell uses and without the cells of the ``skipped`` models (as
    ``sweep.exclude`` rules, so the remaining cells and their keys are unchanged).

    A suite whose grid does not expand (``validate`` names why) is returned as it is.

    Raises:
        PfbenchError: the skipped models had every cell; nothing would be left to run.
    """
    rules = []
    for name in skipped:
        base, seed = split_model(name)
        rules.append({"model": base} | ({} if seed is None else {"train_seed": seed}))
    out = dataclasses.replace(spec, sweep=dataclasses.replace(spec.sweep, exclude=[*spec.sweep.exclude, *rules]))
    try:
        cells = plan(out)
    except PfbenchError:
        return spec
    if not cells:
        if skipped:
            why = "; ".join(f"{name}: {skip_reason(m)}" for name, m in skipped.items())
            raise PfbenchError(f"every cell's model is optional and missing ({why}); nothing would run")
        return spec
    keep = {c.model for c in cells}
    return dataclasses.replace(out, models={n: m for n, m in spec.models.items() if n in keep})


def skip_reason(missing: tuple[Missing, ...]) -> str:
    """``missing <file> (<how to get it>)`` for each file an optional model lacks."""
    return "; ".join(f"missing {m.path} ({m.remedy})" for m in missing)


def skip_notes(spec: SuiteSpec, skipped: dict[str, tuple[Missing, ...]]) -> list[dict[str, object]]:
    """What the report says about skipped models: ``{"model", "cells", "reason"}`` each (``cells`` of ``spec``)."""
    cells = plan(spec) if skipped else []
    return [{"model": name, "cells": sum(c.model == name for c in cells), "reason": skip_reason(missing)}
            for name, missing in skipped.items()]


def model_inputs(name: str, model: ModelSpec, verify: bool = True) -> list[Missing]:
    """A model's missing or changed files: its checkpoint and its decoder."""
    out: list[Missing] = []
    ref = model.checkpoint
    if ref is not None and ref.startswith("asset:"):
        try:
            asset_path(ref.removeprefix("asset:"), "pfbench assets build")
        except PfbenchError as err:
            out.append(Missing(f"models.{name}.checkpoint", ref, "not found", str(err), (name,)))
    elif ref is not None:
        item = provider(ref)
        out += _file(f"models.{name}.checkpoint", Path(ref).expanduser(),
                     f"pfbench fetch {item.name}" if item else TRAIN_HINT, verify, (name,))
    if model.vae is not None:
        known = KNOWN_WEIGHTS.get(model.vae)
        try:
            path = vae_weights_file(model.vae)
        except PfbenchError as err:
            where = candidate_paths(model.vae)[0][1] if known else Path(model.vae)
            remedy = f"pfbench fetch {known.fetch}" if known and known.fetch else str(err)
            return [*out, Missing(f"models.{name}.vae", str(where), "not found", remedy, (name,))]
        out += _changed(f"models.{name}.vae", path, verify, (name,))
    return out


def _file(key: str, path: Path, remedy: str, verify: bool, models: tuple[str, ...] = ()) -> list[Missing]:
    if not path.exists():
        return [Missing(key, str(path), "not found", remedy, models)]
    return _changed(key, path, verify, models)


def _changed(key: str, path: Path, verify: bool, models: tuple[str, ...] = ()) -> list[Missing]:
    problem = check_lock(path) if verify and path.is_file() else None
    return [] if problem is None else [Missing(key, str(path), "changed", problem, models)]


def _data_inputs(spec: SuiteSpec, verify: bool) -> list[Missing]:
    out = []
    if spec.prompts is not None:
        out += _file("prompts", Path(spec.prompts).expanduser(), "give a prompt file (prompts.txt, one per line, or "
                     "JSONL), or remove the key to use the embedded test captions", verify)
    ref = spec.data.reference
    if ref is not None and ref != "embedded":
        item = provider(ref)
        out += _file("data.reference", Path(ref).expanduser(), f"pfbench fetch {item.name}" if item else
                     "give an ADM reference .npz or an image folder", verify)
    return out


def _metric_inputs(spec: SuiteSpec, verify: bool) -> list[Missing]:
    """The weights file of each feature network the suite's metrics read, by the weights key its registry entry
    declares (``pfbench.encoders.base.takes_weights``): a known file is found offline and checked against its sha256
    (Inception's check obeys eval.verify_weights); a plugin's own file must be set in ``eval.weights``."""
    ev = spec.eval
    given = ev.weights_map()
    networks: dict[str, list[str]] = {}
    for m in spec.metrics:
        networks.setdefault(getattr(METRICS.get(m), "features", "images"), []).append(m)
    out = []
    for network, metrics in networks.items():
        key = weights_key(FEATURES.get(network))
        if key is None:
            continue
        label = f"{_option(spec, network)} (metrics {', '.join(metrics)})"
        if key not in KNOWN_WEIGHTS:  # a plugin's own weights: no offline search
            if given.get(network) is None or not Path(given[network]).expanduser().is_file():
                out.append(Missing(label, given.get(network) or f"the weights file of feature network {network!r}",
                                   "not found" if network in given else "not set",
                                   f"set eval.weights.{network} to the file (pfbench eval: --weights {network}=PATH)"))
            continue
        w = KNOWN_WEIGHTS[key]
        try:
            path = resolve_weights(key, given.get(network), verify=False)
        except PfbenchError as err:
            remedy = f"pfbench fetch {w.fetch}" if w.fetch else f"download {w.url} into $PFBENCH_WEIGHTS"
            out.append(Missing(label, str(candidate_paths(key, given.get(network))[0][1]), "not found",
                               remedy if network not in given else str(err)))
            continue
        check = verify and (ev.verify_weights or key not in OPT_OUT)
        if check and w.sha256 is not None:
            try:
                verify_weights(key, path)
            except PfbenchError as err:
                out.append(Missing(label, str(path), "has the wrong sha256", str(err)))
                continue
        if check:
            out += _changed(label, path, verify)
    return out


def _option(spec: SuiteSpec, network: str) -> str:
    """The suite key that gives ``network``'s weights: ``eval.weights.<network>``, or the alias the suite used."""
    ev = spec.eval
    aliases = {"inception": ("eval.weights", isinstance(ev.weights, str)),
               "clip": ("eval.clip_weights", ev.clip_weights is not None),
               "dinov2": ("eval.dinov2_weights", ev.dinov2_weights is not None)}
    alias, used = aliases.get(network, ("", False))
    return alias if used else f"eval.weights.{network}"


def _merged(found: list[Missing]) -> tuple[Missing, ...]:
    """One entry per (file, problem): the VAE shared by four models is one line naming their four keys."""
    out: dict[tuple[str, str], Missing] = {}
    for m in found:
        k = (m.path, m.problem)
        if k in out:
            old = out[k]
            out[k] = dataclasses.replace(old, key=f"{old.key}, {m.key}", models=old.models + m.models)
        else:
            out[k] = m
    return tuple(out.values())


__all__ = ["Inputs", "Missing", "check_inputs", "find_inputs", "runnable", "skip_notes",
           "skipped_models", "used_models"]
