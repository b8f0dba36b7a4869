"""Suites: YAML (hydra-core compose + overrides) -> frozen dataclasses -> list of cells (RunSpec).

YAML stops here. Everything below this module takes typed, named parameters. Unknown keys and wrong types
are errors naming the key path and the nearest valid key.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pfbench import PfbenchError
from pfbench.config import Builder
from pfbench.registry import SAMPLERS


@dataclass(frozen=True)
class DataSpec:
    """Evaluation data of a suite (reference images for metrics, held-out diagnostics).

    ``embedded``: the built-in dataset (reference = its test split unless ``reference`` is given).
    ``imagenet``: 1000 ImageNet classes (names for CLIP prompts and figures); ``reference`` is required, e.g.
    ADM's ``VIRTUAL_imagenet256_labeled.npz``.
    """

    name: str = "embedded"
    resolution: int = 16
    seed: int = 0
    test_size: int = 2000
    reference: str | None = None  # ADM reference .npz or image folder for FID & co.; None = embedded test split


@dataclass(frozen=True)
class ModelSpec:
    """A model of the suite: trained by pfbench from ``train`` or loaded from ``checkpoint``.

    ``layout`` loads a checkpoint trained by another codebase: ``sit`` (SiT/DiT key layout, velocity model)
    or ``pf`` (the reference ``PatchForcingDiT``); the network size comes from the file (a release's embedded
    config, else its tensor shapes), and an optional ``preset`` (e.g. ``XL/2``) or ``overrides`` (DiTConfig
    fields) must agree with it. Without ``layout`` the checkpoint is a pfbench checkpoint.
    """

    train: dict[str, Any] | None = None
    checkpoint: str | None = None
    adapter: str = "dit"
    use_ema: bool = True
    layout: str | None = None
    preset: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    vae: str | None = None  # latent models: decoder (known name like sd-vae-ft-ema, diffusers folder or file)
    # Train the recipe once per seed (``train.seed`` set): model ``pf`` becomes ``pf@s0``, ``pf@s1``, ... (see
    # ``expand_train_seeds``); grid blocks naming ``pf`` run every one of them.
    train_seeds: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class SamplerSpec:
    name: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class GridSpec:
    """One block of the sweep: these models × these samplers × the sweep axes."""

    models: list[str]
    samplers: list[SamplerSpec]
    nfe: list[int] | None = None  # this block's NFE budgets instead of ``sweep.nfe`` (e.g. a sweep at one budget)


@dataclass(frozen=True)
class SweepSpec:
    """Sweep axes shared by every grid block.

    A list-valued sampler parameter in a grid (``{name: dual_loop, params: {p: [0.2, 0.4]}}``) is an axis too.
    ``cfg_interval`` entries are ``null`` (guide everywhere) or ``[t_lo, t_hi]``; they apply to guided cells only.
    ``exclude`` drops every cell matching all keys of a rule (model, sampler, nfe, cfg_scale, seed, or a
    sampler parameter such as p).
    """

    nfe: list[int] = field(default_factory=lambda: [16])
    seeds: list[int] = field(default_factory=lambda: [0])
    num_samples: int = 1000
    cfg_scale: list[float] = field(default_factory=lambda: [1.0])
    cfg_interval: list[list[float] | None] = field(default_factory=lambda: [None])
    exclude: list[dict[str, Any]] = field(default_factory=list)
    # With models trained per seed (``train_seeds``): instance ``pf@sK`` samples only with sampling seed K, so
    # every (training seed, sampling seed) replicate is distinct at a third of the cost of the full cross.
    pair_seeds: bool = False


@dataclass(frozen=True)
class EvalSpec:
    batch_size: int = 250
    learning_curve: bool = True  # score intermediate checkpoints of trained models
    curve_sampler: SamplerSpec | None = None
    curve_nfe: int = 16
    curve_samples: int = 500
    difficulty_t: float = 0.6
    # PF models (embedded data): per-patch corr(predicted variance, squared error) at each of these t, and the
    # "context helps" curve (loss on hard patches at each t_hard as their easy context moves to t = 1).
    difficulty_ts: list[float] = field(default_factory=list)
    context_ts: list[float] = field(default_factory=list)
    parallel_train: bool = True  # train the suite's models in concurrent processes
    resize: str = "tf1x"  # Inception resize: "tf1x" (torch-fidelity, TF-compatible) or "clean" (clean-fid)
    weights: str | None = None  # Inception weights file/folder (else $PFBENCH_WEIGHTS, then the library cache)
    clip_weights: str | None = None  # open_clip ViT-L/14 file for clip_score (else the same search)
    dinov2_weights: str | None = None  # DINOv2 ViT-L/14 file for fd_dinov2 (else the same search)
    device: str = "cpu"  # where sampling, decoding and metrics run ("cuda" on a GPU machine)
    # Inception metric options (pfbench.metrics.options): false accepts a non-official Inception file (rows
    # record its sha256 and are marked non-standard); KID subset size; IS sample order "file" (ADM) or "shuffle"
    verify_weights: bool = True
    kid_subset_size: int = 1000
    is_order: str = "file"


@dataclass(frozen=True)
class SuiteSpec:
    name: str
    grid: list[GridSpec]
    models: dict[str, ModelSpec]
    data: DataSpec = field(default_factory=DataSpec)
    sweep: SweepSpec = field(default_factory=SweepSpec)
    metrics: list[str] = field(default_factory=lambda: ["fd_embedded", "class_acc"])
    eval: EvalSpec = field(default_factory=EvalSpec)
    description: str = ""


@dataclass(frozen=True)
class RunSpec:
    """One cell: everything that changes its pixels (plus the sample count and seed)."""

    suite: str
    model: str
    sampler: SamplerSpec
    nfe: int
    seed: int
    num_samples: int
    cfg_scale: float
    cfg_interval: tuple[float, float] | None = None

    def key(self, model_id: str) -> str:
        """Content hash of the cell; ``model_id`` identifies the weights (checkpoint sha256 or recipe hash)."""
        payload = dataclasses.asdict(self) | {"model_id": model_id}
        payload.pop("suite")
        if payload["cfg_interval"] is None:  # keeps keys of unguided-interval cells stable
            payload.pop("cfg_interval")
        revision = getattr(SAMPLERS.get(self.sampler.name), "revision", 1)
        if revision != 1:  # a fixed sampler: cells computed before the fix are not reused
            payload["sampler_revision"] = revision
        return content_hash(payload)

    def fields(self) -> dict[str, Any]:
        """Flat view for ``exclude`` rules: model, sampler, nfe, cfg_scale, seed and sampler parameters.

        A model trained per seed is matched by its suite name (``pf``) and ``train_seed``.
        """
        model, train_seed = split_model(self.model)
        return {"model": model, "sampler": self.sampler.name, "nfe": self.nfe, "cfg_scale": self.cfg_scale,
                "seed": self.seed, **self.sampler.params} | ({} if train_seed is None else {"train_seed": train_seed})


SEED_SEP = "@s"  # "pf@s1": suite model "pf" trained with seed 1 (``ModelSpec.train_seeds``)


def split_model(name: str) -> tuple[str, int | None]:
    """``"pf@s1"`` -> ``("pf", 1)``; a name without a training-seed suffix -> ``(name, None)``."""
    base, sep, seed = name.rpartition(SEED_SEP)
    return (base, int(seed)) if sep and base and seed.isdigit() else (name, None)


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


def content_hash(obj: Any) -> str:
    """Stable short sha256 of JSON-serialisable data."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


_BUILDER = Builder(shorthands={SamplerSpec: "name"})  # `samplers: [euler]` reads as SamplerSpec("euler")


def build(cls: type[Any], data: dict[str, Any], path: str = "") -> Any:
    """Builds dataclass ``cls`` from a mapping; unknown keys name the nearest valid key (``pfbench.config``)."""
    return _BUILDER.build(cls, data, path)


def compose_yaml(path: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """Composes a suite file with hydra (``defaults:`` includes, command-line overrides) into plain data."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    path = Path(path)
    if not path.is_file():
        raise PfbenchError(f"suite file not found: {path}")
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
    import yaml

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
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    kind = data.get("kind") if isinstance(data, dict) else None
    return None if kind is None else str(kind)


def load_suite(path: str | Path, overrides: list[str] | None = None) -> SuiteSpec:
    """Reads, composes and validates a suite; plugin names are checked against the registries."""
    from pfbench.data import DATASETS
    from pfbench.registry import METRICS

    data = compose_yaml(path, overrides)
    if "kind" in data:  # e.g. suites/adm_parity.yaml, which `pfbench plan/run` hand to `pfbench parity`
        if data["kind"] != "adm_parity":
            raise PfbenchError(f"{path}: kind: unknown suite kind {data['kind']!r} (known: adm_parity; runner "
                               "suites have no 'kind:')")
        raise PfbenchError(f"{path}: an ADM parity suite (kind: adm_parity), not a runner suite; check it with "
                           f"`pfbench parity {path}`")
    spec: SuiteSpec = build(SuiteSpec, data)
    for gi, grid in enumerate(spec.grid):
        for name in grid.models:
            if name not in spec.models:
                close = difflib.get_close_matches(name, list(spec.models), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise PfbenchError(f"grid[{gi}].models: unknown model {name!r}{hint}")
        for si, sampler in enumerate(grid.samplers):
            try:
                SAMPLERS.get(sampler.name)
            except PfbenchError as err:
                raise PfbenchError(f"grid[{gi}].samplers[{si}]: {err}") from None
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
    for name, model in spec.models.items():
        if (model.train is None) == (model.checkpoint is None):
            raise PfbenchError(f"models.{name}: give exactly one of 'train' or 'checkpoint'")
        if model.layout is not None and model.checkpoint is None:
            raise PfbenchError(f"models.{name}: 'layout' needs 'checkpoint' (an external checkpoint file)")
        if "@" in name:
            raise PfbenchError(f"models.{name}: '@' is reserved for training-seed instances (train_seeds); rename it")
    return expand_train_seeds(spec)


def expand_sampler(spec: SamplerSpec) -> list[SamplerSpec]:
    """One SamplerSpec per combination of list-valued parameters (sweep axes), in a stable order."""
    axes = {k: v for k, v in spec.params.items() if isinstance(v, list)}
    if not axes:
        return [spec]
    fixed = {k: v for k, v in spec.params.items() if k not in axes}
    return [SamplerSpec(spec.name, fixed | dict(zip(axes, combo, strict=True)))
            for combo in itertools.product(*axes.values())]


def _excluded(cell: RunSpec, rules: list[dict[str, Any]]) -> bool:
    fields = cell.fields()
    return any(all(fields.get(k) == v for k, v in rule.items()) for rule in rules)


def plan(spec: SuiteSpec) -> list[RunSpec]:
    """Expands the suite into cells, in a stable order (grid blocks × samplers × axes), minus exclusions."""
    cells = []
    sw = spec.sweep
    valid = {"model", "sampler", "nfe", "cfg_scale", "seed", "train_seed"}
    for grid in spec.grid:
        samplers = [x for s in grid.samplers for x in expand_sampler(s)]
        for sampler in samplers:
            valid |= set(sampler.params)
        for model, sampler, nfe, scale, interval, seed in itertools.product(
            grid.models, samplers, grid.nfe or sw.nfe, sw.cfg_scale, sw.cfg_interval, sw.seeds
        ):
            if interval is not None and scale == 1.0:
                continue  # an interval changes nothing without guidance
            if sw.pair_seeds and split_model(model)[1] not in (None, seed):
                continue  # a per-seed instance samples with its own seed only
            if interval is not None and (len(interval) != 2 or not 0 <= interval[0] <= interval[1] <= 1):
                raise PfbenchError(f"sweep.cfg_interval: {interval} must be [t_lo, t_hi] with 0 <= t_lo <= t_hi <= 1")
            iv = None if interval is None else (float(interval[0]), float(interval[1]))
            cells.append(RunSpec(spec.name, model, sampler, nfe, seed, sw.num_samples, scale, iv))
    for i, rule in enumerate(sw.exclude):
        for key in rule:
            if key not in valid:
                close = difflib.get_close_matches(key, sorted(valid), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f" (valid: {', '.join(sorted(valid))})"
                raise PfbenchError(f"unknown key 'sweep.exclude[{i}].{key}'{hint}")
    return [c for c in cells if not _excluded(c, sw.exclude)]
