"""What a suite is: frozen dataclasses for its parts (built from YAML by ``pfbench.suite.parse``) and its plan,
the list of cells (``RunSpec``) that ``plan`` expands it into.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from pfbench import FieldError, PfbenchError
from pfbench.adapters.cfg import check_interval
from pfbench.data.heterogeneity import DEFAULT_HETEROGENEITY
from pfbench.io import content_hash
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
    heterogeneity: float = DEFAULT_HETEROGENEITY  # embedded: how unlike easy and hard regions are (data/heterogeneity)

    def key(self) -> dict[str, Any]:
        """What identifies the data in unit and cell keys: every field, ``heterogeneity`` only when it is not the
        default (so keys made before the knob existed stay the same)."""
        out = dataclasses.asdict(self)
        if out["heterogeneity"] == DEFAULT_HETEROGENEITY:
            del out["heterogeneity"]
        return out


@dataclass(frozen=True)
class ModelSpec:
    """A model of the suite: trained by pfbench from ``train``, loaded from ``checkpoint``, or built by a plugin.

    ``layout`` loads a checkpoint trained by another codebase: ``sit`` (SiT/DiT key layout, velocity model)
    or ``pf`` (the reference ``PatchForcingDiT``); the network size comes from the file (a release's embedded
    config, else its tensor shapes), and an optional ``preset`` (e.g. ``XL/2``) or ``overrides`` (DiTConfig
    fields) must agree with it. Without ``layout`` the checkpoint is a pfbench checkpoint.

    ``adapter`` other than ``dit`` names a registered adapter factory (``pfbench.registry.ADAPTERS``, e.g. one a
    third-party package adds through the ``pfbench.adapters`` entry-point group), called with ``params`` as
    keyword arguments; such a model has no ``train``/``checkpoint``; its id hashes the adapter name, ``params``
    and the content of the files they name, its weights (``pfbench.suite.sources``).
    """

    train: dict[str, Any] | None = None
    checkpoint: str | None = None
    adapter: str = "dit"
    params: dict[str, Any] = field(default_factory=dict)  # keyword arguments of a plugin adapter's factory
    use_ema: bool = True
    layout: str | None = None
    preset: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    vae: str | None = None  # latent models: decoder (known name like sd-vae-ft-ema, diffusers folder or file)
    # Train the recipe once per seed (``train.seed`` set): model ``pf`` becomes ``pf@s0``, ``pf@s1``, ... (see
    # ``expand_train_seeds``); grid blocks naming ``pf`` run every one of them.
    train_seeds: list[int] = field(default_factory=list)
    # A model whose files may be absent: its cells are then skipped ("skipped: missing <file>" in plan and the
    # report) and the others run; a missing file of any other model stops the run (``pfbench.suite.inputs``).
    optional: bool = False


@dataclass(frozen=True)
class SamplerSpec:
    """A registered sampler and its parameters (every field but ``steps``, which follows from the cell's NFE
    budget or is the cell's fixed step count)."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)

    def build(self, nfe: int | None = None, *, steps: int | None = None) -> Any:
        """The sampler at the largest step count whose cost fits ``nfe`` (``Sampler.from_budget``), or at ``steps``
        outer steps (``Sampler.from_steps``); give exactly one.

        Every suite path (validate, plan, run, figures) builds samplers here. Samplers are frozen dataclasses,
        so each (name, params, budget or steps) is built once per process and shared.
        """
        if (nfe is None) == (steps is None):
            raise ValueError("SamplerSpec.build: give exactly one of nfe or steps")
        mode, n = ("nfe", nfe) if steps is None else ("steps", steps)
        key = (self.name, json.dumps(self.params, sort_keys=True, default=str), mode, int(n))  # type: ignore[arg-type]
        if key not in _SAMPLERS_BUILT:
            cls = SAMPLERS.get(self.name)
            _SAMPLERS_BUILT[key] = cls.from_budget(self.params, nfe) if steps is None else cls.from_steps(self.params, steps)
        return _SAMPLERS_BUILT[key]


# (name, params as JSON, "nfe" | "steps", value) -> built sampler: a memo of immutable values, so sharing it changes
# nothing.
_SAMPLERS_BUILT: dict[tuple[str, str, str, int], Any] = {}


@dataclass(frozen=True)
class GridSpec:
    """One block of the sweep: these models × these samplers × the sweep axes."""

    models: list[str]
    samplers: list[SamplerSpec]
    nfe: list[int] | None = None  # this block's NFE budgets instead of the sweep's (e.g. a sweep at one budget)
    steps: list[int] | None = None  # or this block's fixed outer step counts (the reference scripts' convention)


@dataclass(frozen=True)
class SweepSpec:
    """Sweep axes shared by every grid block.

    A list-valued sampler parameter in a grid (``{name: dual_loop, params: {p: [0.2, 0.4]}}``) is an axis too.
    ``cfg_interval`` entries are ``null`` (guide everywhere) or ``[t_lo, t_hi]``; they apply to guided cells only.
    ``exclude`` drops every cell matching all keys of a rule (model, sampler, nfe, steps, cfg_scale, seed, or a
    sampler parameter such as p).

    Two conventions fix how long a sampler runs. ``nfe`` (pfbench's equal-compute view): each sampler runs the
    largest step count whose cost fits the budget of model calls. ``steps`` (the reference scripts'): N outer steps,
    t_k = k/N, whatever they cost (dual-loop N·n_inner calls, look-ahead about 2N). Blocks without their own
    ``nfe``/``steps`` run both lists; ``nfe`` defaults to [16] only when neither is given.
    """

    nfe: list[int] | None = None  # None: [16], or none at all when ``steps`` is given
    steps: list[int] = field(default_factory=list)
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
    # Per-patch difficulty spread (pfbench.data.heterogeneity): the test split's hard-pixel share per 2x2 patch
    # (a ``data_hard`` reference row) and each PF model's per-patch error spread at ``difficulty_ts`` (or t).
    patch_spread: bool = False
    parallel_train: bool = True  # train the suite's models in concurrent processes
    resize: str = "tf1x"  # Inception resize: "tf1x" (torch-fidelity, TF-compatible) or "clean" (clean-fid)
    # Feature network -> weights file/folder ({inception: ..., dinov2: ..., clip: ..., <plugin network>: ...}; unset:
    # $PFBENCH_WEIGHTS, then the library cache). Aliases: a bare path (Inception), clip_weights, dinov2_weights.
    weights: dict[str, str] | str | None = None
    clip_weights: str | None = None
    dinov2_weights: str | None = None
    device: str = "cpu"  # where sampling, decoding and metrics run ("cuda" on a GPU machine)
    # Inception metric options (pfbench.metrics.options): false accepts a non-official Inception file (rows
    # record its sha256 and are marked non-standard); KID subset size; IS sample order "file" (ADM) or "shuffle"
    verify_weights: bool = True
    kid_subset_size: int = 1000
    is_order: str = "file"
    # GPU sampling speed (CUDA only; on CPU pfbench samples in fp32, uncompiled): bf16 autocast of the network,
    # TF32 matmuls and convolutions (fp32 tensors, TF32 tensor-core arithmetic: what the reference's
    # ``sample_ddp.py`` does by default), and torch.compile of its blocks. Each changes the pixels slightly, so
    # it enters every cell's key.
    precision: str = "fp32"  # fp32 | tf32 | bf16
    compile: bool = False

    def weights_map(self) -> dict[str, str]:
        """One map feature network -> weights path: ``weights`` with its aliases folded in (a bare ``weights`` path is
        Inception's, ``clip_weights`` and ``dinov2_weights``); unset entries are absent."""
        legacy = {"inception": self.weights if isinstance(self.weights, str) else None,
                  "clip": self.clip_weights, "dinov2": self.dinov2_weights}
        given = self.weights if isinstance(self.weights, dict) else {}
        return {k: v for k, v in (legacy | given).items() if v is not None}

    def numerics(self) -> str:
        """What the sampling numerics add to cell keys: "" for fp32 uncompiled (keys made before these options
        existed stay valid), else e.g. ``"+bf16+compile"`` or ``"+tf32"``."""
        flags = (("+bf16", self.precision == "bf16"), ("+tf32", self.precision == "tf32"), ("+compile", self.compile))
        return "".join(s for s, on in flags if on)


@dataclass(frozen=True)
class ExpectedSpec:
    """A published number the suite should reproduce (``expected:``): the report shows it beside the measured value.

    A cell matches when its model, sampler, metric, guidance scale and outer step count agree (``steps``; or
    ``nfe``, the NFE budget, for a number published at a budget). An entry no cell matches (e.g. of a model the
    run leaves out) is shown as not measured.
    """

    model: str
    sampler: str
    metric: str
    value: float
    source: str  # where the number is published, e.g. "paper Table 2"
    steps: int | None = None
    nfe: int | None = None
    cfg_scale: float = 1.0


@dataclass(frozen=True)
class LauncherSpec:
    """Where a suite's work runs: ``local`` (this process, the default) or ``submitit`` (one job per pending cell and
    per model to train, through submitit's Slurm executor, or its ``local`` executor of subprocesses; see
    ``pfbench.suite.launch``). The fields below ``executor`` are submitit's executor parameters; ``train_*`` set
    them for training jobs (default: as for cells). A command-line ``launcher.KEY=VALUE`` overrides any of them.
    """

    name: str = "local"  # local | submitit
    executor: str = "slurm"  # submitit executor: slurm (a cluster) | local (subprocesses here: tests, one machine)
    folder: str | None = None  # submitit's job files and logs; default <results>/<suite>/.submitit
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    nodes: int = 1
    gpus_per_node: int = 1
    tasks_per_node: int | None = None  # processes per node; default one per GPU (at least 1)
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    timeout_min: int = 24 * 60
    array_parallelism: int = 256  # cell jobs of one array running at a time
    slurm_additional_parameters: dict[str, Any] = field(default_factory=dict)  # any other #SBATCH key: value
    setup: list[str] = field(default_factory=list)  # shell lines run before the job (module load, env activate)
    max_requeues: int = 3  # times a timed-out job is requeued (pre-emptions do not count)
    shard_size: int = 1000  # samples per resumable shard of a cell job
    keep_shards: bool = False  # keep a cell's uint8 shards after scoring (else deleted: 50k images are ~10 GB)
    train_nodes: int | None = None
    train_gpus_per_node: int | None = None
    train_tasks_per_node: int | None = None
    train_timeout_min: int | None = None


@dataclass(frozen=True)
class ClaimsSpec:
    """What the report tests beyond the paper's claims (``pfbench.report.claims``); read by ``pfbench report``,
    never by the runner, so it changes no cell."""

    # Cell claims (by name, e.g. "look_ahead < dual_loop") whose effect is also tested for a trend with log2(NFE):
    # per replicate slope of the paired difference, t test of the slopes (pfbench.report.trends).
    trends: list[str] = field(default_factory=list)
    # The full study a quick suite checks (a suite name, e.g. "validity"): the report sets the two studies'
    # verdicts side by side, reading that suite's results beside this one's (pfbench.report.agreement).
    agree_with: str | None = None


@dataclass(frozen=True)
class TuneSpec:
    """``pfbench tune``: search the adaptive samplers' parameters per budget (``pfbench.suite.tune``).

    Trials are scored on ``tuning_seeds`` only; the best configuration of each study is then scored on
    ``heldout_seeds``, which the search never sees (the two must not overlap). ``space`` overrides a sampler's
    search range: ``{look_ahead: {r: [1.0, 2.5, 0.1]}}`` (low, high, step; integers for integer parameters).
    """

    samplers: list[str] = field(default_factory=lambda: ["dual_loop", "look_ahead"])
    trials: int = 20
    tuning_seeds: list[int] = field(default_factory=lambda: [100, 101])
    heldout_seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    metric: str | None = None  # the objective; default: the suite's first metric
    space: dict[str, dict[str, list[float]]] = field(default_factory=dict)


@dataclass(frozen=True)
class ReportSpec:
    """How ``pfbench report`` presents the suite; read by the report, never by the runner, so it changes no cell."""

    # The main results table's metric columns, in this order (e.g. [fd_embedded, class_acc]); empty: the suite's
    # ``metrics:`` less breakdowns (``attr_acc_*``, ``*_shuffled``), which get a section of their own.
    headline: list[str] = field(default_factory=list)


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
    launcher: LauncherSpec = field(default_factory=LauncherSpec)
    # Text-to-image models' prompts: None = the embedded test split's captions (data.test_size of them, with their
    # shapes as labels); else a prompt file (COCO-style prompts.txt, one per line, or JSONL). Sample i of every
    # cell gets prompt i mod len (``pfbench.sample.generate.Prompts``).
    prompts: str | None = None
    claims: ClaimsSpec = field(default_factory=ClaimsSpec)
    expected: list[ExpectedSpec] = field(default_factory=list)  # published numbers, shown beside the measured ones
    tune: TuneSpec = field(default_factory=TuneSpec)
    report: ReportSpec = field(default_factory=ReportSpec)

    def headline(self) -> tuple[str, ...]:
        """The report's headline metrics: ``report.headline``, else ``metrics``."""
        return tuple(self.report.headline or self.metrics)


@dataclass(frozen=True)
class RunSpec:
    """One cell: everything that changes its pixels (plus the sample count and seed).

    A cell runs either at an NFE budget (``nfe``; the sampler takes the largest step count that fits) or at a
    fixed outer step count (``steps``); exactly one of the two is set.
    """

    suite: str
    model: str
    sampler: SamplerSpec
    nfe: int | None
    seed: int
    num_samples: int
    cfg_scale: float
    cfg_interval: tuple[float, float] | None = None
    steps: int | None = None

    def __post_init__(self) -> None:
        if (self.nfe is None) == (self.steps is None):
            raise ValueError(f"RunSpec: give exactly one of nfe or steps (nfe={self.nfe}, steps={self.steps})")

    def key(self, model_id: str) -> str:
        """Content hash of the cell; ``model_id`` identifies the weights (checkpoint sha256 or recipe hash)."""
        payload = dataclasses.asdict(self) | {"model_id": model_id}
        payload.pop("suite")
        if payload["cfg_interval"] is None:  # keeps keys of unguided-interval cells stable
            payload.pop("cfg_interval")
        # NFE cells hash as they did before steps existed (their results stay found); a steps cell has no "nfe"
        payload.pop("steps" if self.steps is None else "nfe")
        revision = getattr(SAMPLERS.get(self.sampler.name), "revision", 1)
        if revision != 1:  # a fixed sampler: cells computed before the fix are not reused
            payload["sampler_revision"] = revision
        return content_hash(payload)

    def build_sampler(self) -> Any:
        """The cell's sampler (``SamplerSpec.build`` at its budget or step count)."""
        return self.sampler.build(self.nfe) if self.steps is None else self.sampler.build(steps=self.steps)

    def axis(self) -> str:
        """``nfe=16`` or ``steps=100``: how long the cell's sampler runs, for progress lines and titles."""
        return f"nfe={self.nfe}" if self.steps is None else f"steps={self.steps}"

    def fields(self) -> dict[str, Any]:
        """Flat view for ``exclude`` rules: model, sampler, nfe, steps, cfg_scale, seed and sampler parameters.

        A model trained per seed is matched by its suite name (``pf``) and ``train_seed``.
        """
        model, train_seed = split_model(self.model)
        return {"model": model, "sampler": self.sampler.name, "nfe": self.nfe, "steps": self.steps,
                "cfg_scale": self.cfg_scale, "seed": self.seed, **self.sampler.params} | (
                    {} if train_seed is None else {"train_seed": train_seed})


def block_axes(grid: GridSpec, sweep: SweepSpec, gi: int) -> list[tuple[str, list[int]]]:
    """The length axes of grid block ``gi``: ``[(key path, values)]``, e.g. ``[("sweep.nfe", [8, 16]),
    ("sweep.steps", [100])]`` or ``[("grid[1].steps", [100])]``; the path ends in ``.nfe`` or ``.steps``.

    Raises:
        PfbenchError: the block gives both ``nfe`` and ``steps``.
    """
    if grid.nfe is not None and grid.steps is not None:
        raise PfbenchError(f"grid[{gi}]: give nfe (NFE budgets) or steps (fixed outer step counts), not both; "
                           "use two blocks for both")
    if grid.nfe is not None:
        return [(f"grid[{gi}].nfe", grid.nfe)]
    if grid.steps is not None:
        return [(f"grid[{gi}].steps", grid.steps)]
    nfe = sweep.nfe if sweep.nfe is not None else ([] if sweep.steps else [16])
    return [(path, values) for path, values in (("sweep.nfe", nfe), ("sweep.steps", sweep.steps)) if values]


SEED_SEP = "@s"  # "pf@s1": suite model "pf" trained with seed 1 (``ModelSpec.train_seeds``)


def split_model(name: str) -> tuple[str, int | None]:
    """``"pf@s1"`` -> ``("pf", 1)``; a name without a training-seed suffix -> ``(name, None)``."""
    base, sep, seed = name.rpartition(SEED_SEP)
    return (base, int(seed)) if sep and base and seed.isdigit() else (name, None)


def expand_sampler(spec: SamplerSpec) -> list[SamplerSpec]:
    """One SamplerSpec per combination of list-valued parameters (sweep axes), in a stable order."""
    axes = {k: v for k, v in spec.params.items() if isinstance(v, list)}
    if not axes:
        return [spec]
    fixed = {k: v for k, v in spec.params.items() if k not in axes}
    return [SamplerSpec(spec.name, fixed | dict(zip(axes, combo, strict=True)))
            for combo in itertools.product(*axes.values())]


def excluded(cell: RunSpec, rules: list[dict[str, Any]]) -> bool:
    """Whether ``cell`` matches one of the ``sweep.exclude`` rules (every key of the rule equal)."""
    fields = cell.fields()
    return any(all(fields.get(k) == v for k, v in rule.items()) for rule in rules)


def plan(spec: SuiteSpec) -> list[RunSpec]:
    """Expands the suite into cells, in a stable order (grid blocks × samplers × axes), minus exclusions."""
    cells = []
    sw = spec.sweep
    valid = {"model", "sampler", "nfe", "steps", "cfg_scale", "seed", "train_seed"}
    for k, interval in enumerate(sw.cfg_interval):
        try:
            check_interval(interval)
        except FieldError as err:
            raise err.under(f"sweep.cfg_interval[{k}]") from None
    for gi, grid in enumerate(spec.grid):
        samplers = [x for s in grid.samplers for x in expand_sampler(s)]
        for sampler in samplers:
            valid |= set(sampler.params)
        lengths = [(path.endswith(".steps"), n) for path, values in block_axes(grid, sw, gi) for n in values]
        for model, sampler, (fixed, n), scale, interval, seed in itertools.product(
            grid.models, samplers, lengths, sw.cfg_scale, sw.cfg_interval, sw.seeds
        ):
            if interval is not None and scale == 1.0:
                continue  # an interval changes nothing without guidance
            if sw.pair_seeds and split_model(model)[1] not in (None, seed):
                continue  # a per-seed instance samples with its own seed only
            iv = None if interval is None else (float(interval[0]), float(interval[1]))
            nfe, steps = (None, n) if fixed else (n, None)
            cells.append(RunSpec(spec.name, model, sampler, nfe, seed, sw.num_samples, scale, iv, steps))
    for i, rule in enumerate(sw.exclude):
        for key in rule:
            if key not in valid:
                close = difflib.get_close_matches(key, sorted(valid), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f" (valid: {', '.join(sorted(valid))})"
                raise PfbenchError(f"unknown key 'sweep.exclude[{i}].{key}'{hint}")
    return [c for c in cells if not excluded(c, sw.exclude)]
