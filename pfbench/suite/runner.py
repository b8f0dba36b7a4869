"""Orchestration of a suite: run cells, write their Parquet rows, draw figures and the report.

The suite's models live in ``pfbench.suite.models``, its scoring in ``pfbench.suite.scoring`` and its units besides
the cells (reference rows, learning curves, diagnostics) in ``pfbench.suite.units``.

Every finished unit (a trained model, a cell, a diagnostic) is written atomically as soon as it is done and
skipped on the next run, so a killed run resumes where it stopped without recomputing or losing rows.
Several runners may share one results folder (two terminals, cluster jobs): each unit is computed under a
per-unit file lock (``pfbench.locks``), so they split the cells and never compute one twice; a runner that
finds a cell locked does the others first, then takes over the cells whose holder died or stopped heart-beating
(a stopped or hung runner), and a runner whose lock was taken over discards its cell instead of writing it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.markup import escape

from pfbench.adapters.base import Adapter, gflops_once
from pfbench.io import atomic_write_text
from pfbench.locks import describe_holder, lock_path, try_lock
from pfbench.nets import DiT
from pfbench.registry import ADAPTERS
from pfbench.report.html import SKIPPED_FILE, report
from pfbench.report.paper import write_expected
from pfbench.report.tables import print_run_summary
from pfbench.results import Row, has_part, metric_rows, read_results, write_rows
from pfbench.sample.generate import Prompts
from pfbench.sample.generate import generate as sample_images
from pfbench.suite.figures import grid_title, suite_figures
from pfbench.suite.identity import SuiteIdentity
from pfbench.suite.inputs import runnable, skip_notes, skipped_models
from pfbench.suite.models import LoadedModel, SuiteModels
from pfbench.suite.parse import full_study
from pfbench.suite.prompts import suite_prompts
from pfbench.suite.rerun import check_rerun
from pfbench.suite.scoring import Scorer
from pfbench.suite.sources import resolve_checkpoint
from pfbench.suite.spec import ModelSpec, RunSpec, SuiteSpec, plan
from pfbench.suite.units import ModelUnits
from pfbench.suite.validate import check_inputs, check_writable, validate

__all__ = ["LoadedModel", "Runner", "cell_variant", "resolve_checkpoint"]

console = Console()


class Runner:
    """Runs one suite. See ``pfbench run --help``.

    It runs the models the grid uses: ``spec`` minus models in no cell, and minus the cells of optional models
    whose files are missing (``skipped``: model -> what it lacks; ``pfbench.suite.inputs``).
    """

    def __init__(
        self, spec: SuiteSpec, results_root: Path = Path("results"), reports_root: Path = Path("reports"),
        runs_root: Path = Path("runs"), progress: bool = True, new_instance: bool = False,
    ) -> None:
        self.skipped = skipped_models(spec)
        self.skip_notes = skip_notes(spec, self.skipped)
        spec = runnable(spec, self.skipped)
        self.spec = spec
        self.results = Path(results_root) / spec.name
        self.reports = Path(reports_root) / spec.name
        self.runs = Path(runs_root) / spec.name
        self.progress = progress
        self.new_instance = new_instance  # train even where the results hold another instance (suite.rerun)
        self.suite_models = SuiteModels(spec, self.runs, progress, console)
        self.scorer = Scorer(spec)
        self.identity = SuiteIdentity(spec, self.scorer)  # every unit's key (pfbench.suite.identity)
        self.units = ModelUnits(spec, self.results, self.reports, self.identity, self.suite_models, self.generate,
                                console if progress else None)
        # model -> images, labels, prompts and grid title of its last cell (the sample grid)
        self._last_samples: dict[str, tuple[Any, Any, Any, str]] = {}

    # ------------------------------------------------------------------ models (see pfbench.suite.models)
    def estimate(self, cell: RunSpec) -> tuple[int, float]:
        """(network forwards per image, total GFLOPs) of a cell, before running it.

        Asks the adapter (``forwards_per_call``/``gflops``, so CFG pairs count twice by ``CFG``'s own rule) at one
        call with every patch at the same time (per-token modulation once per sample, as with dedup), times the
        sampler's NFE. A CFG interval is ignored: guidance is counted on every call (an upper bound).
        """
        if not hasattr(self, "_cost_models"):
            self._cost_models: dict[str, Adapter] = {}
        if cell.model not in self._cost_models:
            self._cost_models[cell.model] = self.suite_models.cost_adapter(cell.model)
        model = self.guided(self._cost_models[cell.model], cell.cfg_scale)
        _, h, w = model.input_shape
        t = torch.zeros(1, (h // model.patch_size) * (w // model.patch_size))  # (1, T): one sample, one time
        sampler = self.make_sampler(cell)
        calls = sampler.cost(sampler.steps)  # model calls per image; a text encoder runs once per image
        return calls * model.forwards_per_call(t), (calls * model.gflops(t) + gflops_once(model)) * cell.num_samples

    def known_model_id(self, name: str) -> str | None:
        """``LoadedModel.key_id`` if it can be known without loading (see ``SuiteModels.known_model_id``)."""
        return self.suite_models.known_model_id(name)

    def train_all(self) -> dict[str, float]:
        """Trains every suite model that needs it, concurrently; returns training img/s per model."""
        return self.suite_models.train_all()

    def load_model(self, name: str, model: ModelSpec) -> LoadedModel:
        """Loads a suite model (trained by ``train_all`` first, if it is trained) onto ``eval.device``."""
        return self.suite_models.load_model(name, model)

    # ------------------------------------------------------------------ sampling + scoring
    def make_sampler(self, cell: RunSpec) -> Any:
        """The sampler of a cell (``SamplerSpec.build``: built once per name, params and budget or step count)."""
        return cell.build_sampler()

    @staticmethod
    def guided(model: Adapter, cfg_scale: float, cfg_interval: tuple[float, float] | None = None) -> Adapter:
        """``model`` under classifier-free guidance (the registered ``cfg`` adapter), or as is at scale 1."""
        if cfg_scale == 1.0:
            return model
        return ADAPTERS.get("cfg")(model, cfg_scale, interval=cfg_interval)  # type: ignore[no-any-return]

    def generate(self, lm: LoadedModel, sampler: Any, n: int, seed: int, cfg_scale: float,
                 cfg_interval: tuple[float, float] | None = None) -> Any:
        """Samples ``n`` images of model ``lm`` (guided at ``cfg_scale``) with the suite's batch size and device."""
        model = self.guided(self.prepared(lm).adapter(), cfg_scale, cfg_interval)
        with self.numerics():
            return sample_images(model, sampler, n=n, seed=seed, batch_size=self.spec.eval.batch_size,
                                 progress=self.progress, decode=lm.decode, device=self.spec.eval.device,
                                 prompts=self.prompts(lm))

    def prompts(self, lm: LoadedModel) -> Prompts | None:
        """The suite's prompts for a text-to-image model (``pfbench.suite.prompts``), else None."""
        return suite_prompts(self.spec) if lm.t2i else None

    @contextlib.contextmanager
    def numerics(self) -> Iterator[None]:
        """Where suite sampling and decoding run: under bf16 autocast with ``eval.precision: bf16``, with TF32
        matmuls and convolutions with ``tf32`` (CUDA; the flags are restored after), else as is."""
        ev = self.spec.eval
        tf32 = ev.precision == "tf32"
        saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        try:
            if tf32:
                torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
            with torch.autocast(torch.device(ev.device).type, dtype=torch.bfloat16, enabled=ev.precision == "bf16"):
                yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved

    def prepared(self, lm: LoadedModel) -> LoadedModel:
        """``lm`` with its network's blocks compiled once when ``eval.compile`` is set (``DiT.compile_blocks``)."""
        net = lm.net
        if self.spec.eval.compile and isinstance(net, DiT) and not getattr(net, "_pfbench_compiled", False):
            net.compile_blocks()  # text-to-image networks run eager
            net._pfbench_compiled = True  # type: ignore[assignment]
        return lm

    def run_cell(self, cell: RunSpec, lm: LoadedModel, part: str, gen: Any = None) -> list[Row]:
        """Samples and scores one cell; its rows, to be written as result part ``part``.

        ``gen``: the cell's images already sampled (``pfbench.sample.generate.Generated``, e.g. read back from the
        shards of a cluster job, ``pfbench.suite.jobs``); None samples them here.
        """
        sampler = self.make_sampler(cell)
        if gen is None:
            gen = self.generate(lm, sampler, cell.num_samples, cell.seed, cell.cfg_scale, cell.cfg_interval)
        base = {
            "suite": self.spec.name, "part": part,
            "kind": "cell", "model": cell.model, "model_id": lm.model_id, "decoder": lm.decoder,
            "sampler": cell.sampler.name,
            "sampler_args": json.dumps(dataclasses.asdict(sampler), sort_keys=True, default=str),
            "nfe_budget": cell.nfe, "steps": sampler.steps, "nfe_used": gen.nfe, "forwards": round(gen.forwards), "gflops": gen.gflops,
            "wall_s": gen.seconds, "seed": cell.seed, "num_samples": cell.num_samples, "cfg_scale": cell.cfg_scale,
            "cfg_interval": None if cell.cfg_interval is None else json.dumps(list(cell.cfg_interval)),
            "variant": cell_variant(cell), "train_timesteps": lm.train_timesteps,
        }
        scores = self.scorer.score(gen.images, gen.labels, gen.prompts)
        if gen.prompts is not None:  # the same images against shuffled prompts: the floor of prompt following
            scores |= self.scorer.shuffled(gen.images, gen.labels, gen.prompts, cell.seed)
        self._last_samples[cell.model] = (gen.images, gen.labels, gen.prompts, grid_title(cell))
        return metric_rows(base | self.scorer.context(), scores)

    # ------------------------------------------------------------------ main
    def preflight(self, device: bool = True) -> None:
        """Checks the whole suite, its input files and the output folders (``pfbench.suite.validate``), and that no
        model to train has results of another instance here (``pfbench.suite.rerun``); ``device``: also that
        ``eval.device`` is here (not when submitting cluster jobs, which sample elsewhere)."""
        validate(self.spec)
        check_inputs(self.spec, device=device)
        training = any(m.train is not None for m in self.spec.models.values())
        check_writable([self.results, self.reports] + ([self.runs] if training else []))
        if training and not self.new_instance:
            check_rerun(self.suite_models, self.results)

    def run(self) -> None:
        t0 = time.perf_counter()
        self.preflight()  # seconds: a bad value or an unwritable folder fails before any training or sampling
        self._last_samples = {}
        # A killed run can leave hidden temp files (``.<part>.tmp-<pid>.parquet``, ``pfbench.io.atomic_path``) from
        # an interrupted atomic write (readers skip them). Every part is written under its lock, so a temp file whose
        # lock is free is stale, not another runner's.
        for stale in self.results.glob(".*.tmp-*.parquet") if self.results.is_dir() else []:
            with try_lock(lock_path(self.results, stale.name[1:].rsplit(".tmp-", 1)[0])) as mine:
                if mine:
                    stale.unlink(missing_ok=True)
        cells = plan(self.spec)
        models: dict[str, LoadedModel] = {}
        self.train_all()  # the models keep the img/s for load_model
        for name, mspec in self.spec.models.items():
            models[name] = self.load_model(name, mspec)
        self.units.reference(captions=any(lm.t2i for lm in models.values()))
        for lm in models.values():
            self.units.model(lm)
        parts = [self.identity.cell(cell, models[cell.model].identity).part() for cell in cells]
        self._parts = parts  # for ``kept`` (the Ctrl-C message)
        self.compute(cells, parts, models)
        self.figures(models)
        self.write_skip_notes()
        write_expected(self.results, [dataclasses.asdict(e) for e in self.spec.expected])
        index = report(self.spec.name, results_root=self.results.parent, reports_root=self.reports.parent,
                       trends=tuple(self.spec.claims.trends), headline=self.spec.headline(),
                       agree_with=full_study(self.spec, Path("suites")))
        self.print_table(time.perf_counter() - t0)
        console.print(f"report: {index} (and index.html)")

    def compute(self, cells: list[RunSpec], parts: list[str], models: dict[str, LoadedModel]) -> None:
        """Computes and writes every cell whose result part is not on disk yet (``cells[i]`` as part ``parts[i]``).

        Each cell is computed under its part's lock, so runners sharing the results folder split the cells; cells
        another runner holds are waited for (and taken over if it dies). Also the cell computation of
        ``pfbench tune`` (``pfbench.suite.tune``): its trials are ordinary cells.
        """
        # A damaged part counts as pending; it is reported and moved aside below, under its lock.
        todo = [i for i, part in enumerate(parts) if not has_part(self.results, part, suite=self.spec.name, damaged="quiet")]
        cost = {i: self.estimate(cells[i])[1] for i in todo}  # GFLOPs per cell: the ETA's yardstick
        left, spent, began, n, said = sum(cost.values()), 0.0, time.perf_counter(), 0, False
        while todo:
            busy = []  # cells whose lock another runner holds: retried until it finishes them, dies or stalls
            for i in todo:
                cell, part = cells[i], parts[i]
                with try_lock(lock_path(self.results, part), on_take_over=self._took(part)) as lock:
                    if lock is None:
                        busy.append(i)
                        continue
                    if not has_part(self.results, part, suite=self.spec.name, damaged="move"):  # else another runner just wrote it
                        n += 1
                        if self.progress:
                            eta = f", ≈{_duration((time.perf_counter() - began) / spent * left)} left" if spent else ""
                            console.print(f"[bold]cell {i + 1}/{len(cells)}[/] {cell.model} {cell.sampler.name} "
                                          f"{cell.axis()} cfg={cell.cfg_scale:g} seed={cell.seed} "
                                          f"[dim]({n} of {len(cost)} to run{eta})")
                        rows = self.run_cell(cell, models[cell.model], part)
                        if lock.lost():  # stopped for longer than the stale timeout: the cell is another's now
                            console.print(f"[yellow]warning:[/] {escape(lock.lost_note(part))}", highlight=False, soft_wrap=True)
                            busy.append(i)
                            continue
                        write_rows(self.results / f"{part}.parquet", rows)
                        spent += cost[i]
                    left -= cost[i]
            if busy and not said:
                said = True
                holders = sorted({describe_holder(lock_path(self.results, parts[i])) for i in busy})
                console.print(f"[dim]{len(busy)} cell(s) are being computed by another runner on {self.results} "
                              f"({escape('; '.join(holders))}); waiting for them (cells of a runner that dies or stops "
                              "heart-beating are taken over)", highlight=False, soft_wrap=True)
            todo = busy
            if todo:
                time.sleep(1.0)

    def write_skip_notes(self) -> None:
        """``<results>/skipped.json``: the optional models skipped by this run and why (read by the report); removed
        when nothing was skipped, so a later complete run reports none."""
        path = self.results / SKIPPED_FILE
        if self.skip_notes:
            atomic_write_text(path, json.dumps({"skipped": self.skip_notes}, indent=1) + "\n")
        else:
            path.unlink(missing_ok=True)

    def cell_part(self, cell: RunSpec, key_id: str) -> str:
        """The result part (file stem) of a cell whose model has ``LoadedModel.key_id`` ``key_id``
        (``CellIdentity.part``)."""
        return self.identity.cell(cell, key_id).part()

    def kept(self) -> str:
        """What an interrupted ``run`` has saved, in words (for the Ctrl-C message)."""
        parts: list[str] | None = getattr(self, "_parts", None)
        if parts is not None:
            done = sum(has_part(self.results, p, suite=self.spec.name, damaged="quiet") for p in parts)
            return f"{done} of {len(parts)} cells are saved in {self.results}"
        stopped = self.suite_models.stopped
        if stopped:  # training was interrupted: each stopped model's last checkpoint
            return "no cell was computed yet; training stopped: " + "; ".join(f"{n}: {w}" for n, w in stopped.items())
        trains = any(m.train is not None for m in self.spec.models.values())
        return "no cell was computed yet" + (f"; training checkpoints are kept in {self.runs}" if trains else "")

    def _took(self, part: str) -> Any:
        """Says that this runner takes ``part`` over from a holder that stopped heart-beating."""
        return lambda holder: console.print(f"[yellow]taking over[/] {part} from {escape(holder)}", highlight=False,
                                            soft_wrap=True)

    def figures(self, models: dict[str, LoadedModel]) -> None:
        """The sample grid and the per-patch schedule / difficulty figures (``pfbench.suite.figures``)."""
        suite_figures(self, models)

    def print_table(self, wall: float) -> None:
        print_run_summary(read_results(self.results, self.spec.name), f"suite {self.spec.name}: {self.results} (this run {wall:.0f} s)",
                          console)


def _duration(seconds: float) -> str:
    """A short human duration: 45 s, 12 min, 3.5 h."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def cell_variant(cell: RunSpec) -> str:
    """What distinguishes cells of one sampler at one NFE/CFG besides the seed: suite-set params, CFG interval."""
    parts: dict[str, Any] = dict(cell.sampler.params)
    if cell.cfg_interval is not None:
        parts["cfg_interval"] = list(cell.cfg_interval)
    return json.dumps(parts, sort_keys=True) if parts else ""
