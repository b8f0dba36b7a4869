"""Orchestration of a suite: run cells, score, write Parquet rows and figures (models: ``suite_models``).

Every finished unit (a trained model, a cell, a diagnostic) is written atomically as soon as it is done and
skipped on the next run, so a killed run resumes where it stopped without recomputing or losing rows.
Several runners may share one results folder (two terminals, cluster jobs): each unit is computed under a
per-unit file lock (``pfbench.locks``), so they split the cells and never compute one twice; a runner that
finds a cell locked does the others first, then takes over the cells whose holder died.
"""

from __future__ import annotations

import dataclasses
import json
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from pfbench import PfbenchError
from pfbench.adapters.dit import DiTAdapter
from pfbench.locks import hold_lock, lock_path, try_lock
from pfbench.registry import SAMPLERS
from pfbench.results import has_part, read_results, write_rows
from pfbench.suite.parse import ModelSpec, RunSpec, SamplerSpec, SuiteSpec, content_hash, plan
from pfbench.suite.models import LoadedModel, SuiteModels, file_sha256, resolve_checkpoint

__all__ = ["LOWER_IS_BETTER", "LoadedModel", "Runner", "cell_variant", "file_sha256", "resolve_checkpoint"]

console = Console()
# Metric keys where lower is better (every other key: higher is better; *_std keys are spreads, read as such).
LOWER_IS_BETTER = frozenset({"fd_embedded", "fid", "sfid", "kid", "fd_dinov2", "kid_std", "is_std", "is_embedded_std"})


class Runner:
    """Runs one suite. See ``pfbench run --help``."""

    def __init__(
        self, spec: SuiteSpec, results_root: Path = Path("results"), reports_root: Path = Path("reports"),
        runs_root: Path = Path("runs"), progress: bool = True,
    ) -> None:
        self.spec = spec
        self.results = Path(results_root) / spec.name
        self.reports = Path(reports_root) / spec.name
        self.runs = Path(runs_root) / spec.name
        self.progress = progress
        self._reference: Any = None
        self.suite_models = SuiteModels(spec, self.runs, progress, console)

    # ------------------------------------------------------------------ data
    def reference_data(self) -> Any:
        """Held-out test split of the embedded dataset (metric reference + diagnostics)."""
        if self._reference is None:
            from pfbench.data.embedded import EmbeddedSpec, generate

            d = self.spec.data
            if d.name != "embedded":
                raise PfbenchError(f"data.name={d.name!r}: only the embedded dataset is supported so far")
            self._reference = generate(EmbeddedSpec(resolution=d.resolution, split="test", size=d.test_size,
                                                    seed=d.seed))
        return self._reference

    # ------------------------------------------------------------------ models (see pfbench.suite.models)
    def train_dir(self, name: str, model: ModelSpec) -> Path:
        """The training run folder of a suite model: ``runs/<suite>/<name>-<hash of its training spec>``."""
        return self.suite_models.train_dir(name, model)

    def net_config(self, name: str) -> Any:
        """The network config of a suite model without loading weights where possible."""
        return self.suite_models.net_config(name)

    def estimate(self, cell: RunSpec) -> tuple[int, float]:
        """(network forwards per image, total GFLOPs) of a cell, before running it (CFG pairs count twice)."""
        from pfbench.nets import forward_flops

        if not hasattr(self, "_cfgs"):
            self._cfgs: dict[str, Any] = {}
        if cell.model not in self._cfgs:
            self._cfgs[cell.model] = self.net_config(cell.model)
        sampler = self.make_sampler(cell.sampler, cell.nfe)
        forwards = sampler.cost(sampler.steps) * (2 if cell.cfg_scale != 1.0 else 1)
        return forwards, forwards * forward_flops(self._cfgs[cell.model], 1.0) / 1e9 * cell.num_samples

    def known_model_id(self, name: str) -> str | None:
        """``LoadedModel.key_id`` if it can be known without loading (see ``SuiteModels.known_model_id``)."""
        return self.suite_models.known_model_id(name)

    def train_all(self) -> dict[str, float]:
        """Trains every suite model that needs it, concurrently; returns training img/s per model."""
        return self.suite_models.train_all()

    def decoder_id(self, model: ModelSpec) -> str | None:
        """``"<vae>@<sha256[:16]>"`` of a latent model's decoder (hashes the file, does not load it)."""
        return self.suite_models.decoder_id(model)

    def load_model(self, name: str, model: ModelSpec) -> LoadedModel:
        """Loads a suite model (trained by ``train_all`` first, if it is trained) onto ``eval.device``."""
        return self.suite_models.load_model(name, model)

    # ------------------------------------------------------------------ sampling + scoring
    def make_sampler(self, spec: SamplerSpec, nfe: int) -> Any:
        cls = SAMPLERS.get(spec.name)
        try:
            sampler = cls(**{"steps": 1, **spec.params})
        except TypeError as err:
            raise PfbenchError(f"sampler {spec.name!r}: bad parameters {spec.params}: {err}") from None
        return sampler.with_budget(nfe)

    def score(self, images: np.ndarray | torch.Tensor, labels: torch.Tensor) -> dict[str, tuple[float, bool]]:
        """Runs every suite metric over uint8 images (N, 3, H, W) in one pass per feature network.

        Returns:
            metric key -> (value, higher_is_better).
        """
        from pfbench.data import class_names
        from pfbench.evaluate.metric_pass import evaluate
        from pfbench.evaluate.sources import images_from_tensor

        ev, data = self.spec.eval, self.spec.data
        samples = images_from_tensor(torch.as_tensor(images), torch.as_tensor(labels))
        result = evaluate(samples, data.reference or "embedded", self.spec.metrics, batch_size=ev.batch_size,
                          device=ev.device, weights=ev.weights, ref_size=data.test_size, resize=ev.resize,
                          clip_weights=ev.clip_weights, dinov2_weights=ev.dinov2_weights,
                          class_names=class_names(data.name), verify_weights=ev.verify_weights,
                          kid_subset_size=ev.kid_subset_size, is_order=ev.is_order)
        result.pop("num_samples", None)
        return {k: (v, k not in LOWER_IS_BETTER) for k, v in result.items()}

    def metric_key(self) -> str:
        """Hash of everything that changes metric values besides the pixels (metrics, reference, resize, options)."""
        ev = self.spec.eval
        # metric options enter only when not at their defaults, so results made before they existed stay valid
        opts = {k: v for k, v in self.metric_args().items()
                if k != "resize" and v != {"is_order": "file", "kid_subset_size": 1000}.get(k)}
        return content_hash([self.spec.metrics, dataclasses.asdict(self.spec.data), ev.resize, ev.weights]
                            + ([ev.clip_weights, ev.dinov2_weights] if ev.clip_weights or ev.dinov2_weights else [])
                            + ([opts] if opts else []))[:8]

    def metric_args(self) -> dict[str, Any]:
        """How the suite's metrics are computed (``pfbench.metrics.options.metric_args``): resize, IS order, KID
        subset size, and the Inception file's sha256 plus the non-standard keys when its check is off."""
        from pfbench.metrics.options import metric_args

        ev = self.spec.eval
        return metric_args(self.spec.metrics, resize=ev.resize, weights=ev.weights, verify_weights=ev.verify_weights,
                           kid_subset_size=ev.kid_subset_size, is_order=ev.is_order)

    def metric_context(self) -> dict[str, Any]:
        """Row fields that say how metrics were computed (reference set and ``metric_args``)."""
        data = self.spec.data
        ref = data.reference or f"embedded:test:seed{data.seed}:n{data.test_size}:r{data.resolution}"
        return {"ref_id": ref, "metric_args": json.dumps(self.metric_args(), sort_keys=True)}

    def generate(self, lm: LoadedModel, sampler: Any, n: int, seed: int, cfg_scale: float,
                 cfg_interval: tuple[float, float] | None = None) -> Any:
        from pfbench.sample.generate import generate

        model: Any = DiTAdapter(lm.net)
        if cfg_scale != 1.0:
            from pfbench.adapters.cfg import CFG

            model = CFG(model, cfg_scale, interval=cfg_interval)
        return generate(model, sampler, n=n, seed=seed, batch_size=self.spec.eval.batch_size,
                        progress=self.progress, decode=lm.decode, device=self.spec.eval.device)

    def run_cell(self, cell: RunSpec, lm: LoadedModel) -> list[dict[str, Any]]:
        sampler = self.make_sampler(cell.sampler, cell.nfe)
        gen = self.generate(lm, sampler, cell.num_samples, cell.seed, cell.cfg_scale, cell.cfg_interval)
        base = {
            "kind": "cell", "model": cell.model, "model_id": lm.model_id, "decoder": lm.decoder,
            "sampler": cell.sampler.name,
            "sampler_args": json.dumps(dataclasses.asdict(sampler), sort_keys=True, default=str),
            "nfe_budget": cell.nfe, "nfe_used": gen.nfe, "forwards": round(gen.forwards), "gflops": gen.gflops,
            "wall_s": gen.seconds, "seed": cell.seed, "num_samples": cell.num_samples, "cfg_scale": cell.cfg_scale,
            "cfg_interval": None if cell.cfg_interval is None else json.dumps(list(cell.cfg_interval)),
            "variant": cell_variant(cell), "train_timesteps": lm.train_timesteps,
        }
        scores = self.score(gen.images, gen.labels)
        self._last_samples[cell.model] = (gen.images, gen.labels)
        return [base | self.metric_context() | {"metric": k, "value": v, "higher_is_better": hib}
                for k, (v, hib) in scores.items()]

    # ------------------------------------------------------------------ main
    def preflight(self) -> None:
        """Checks the whole suite, its input files and the output folders (``pfbench.suite.validate``)."""
        from pfbench.suite.validate import check_inputs, check_writable, validate

        validate(self.spec)
        check_inputs(self.spec)
        training = any(m.train is not None for m in self.spec.models.values())
        check_writable([self.results, self.reports] + ([self.runs] if training else []))

    def run(self) -> None:
        t0 = time.perf_counter()
        self.preflight()  # seconds: a bad value or an unwritable folder fails before any training or sampling
        self._last_samples: dict[str, tuple[Any, Any]] = {}
        # A killed run can leave hidden temp files from an interrupted atomic write (readers skip them). Every
        # part is written under its lock, so a temp file whose lock is free is stale, not another runner's.
        for stale in self.results.glob(".*.parquet.*.tmp") if self.results.is_dir() else []:
            with try_lock(lock_path(self.results, stale.name[1:].split(".parquet.")[0])) as mine:
                if mine:
                    stale.unlink(missing_ok=True)
        cells = plan(self.spec)
        models: dict[str, LoadedModel] = {}
        self.train_all()  # the models keep the img/s for load_model
        for name, mspec in self.spec.models.items():
            models[name] = self.load_model(name, mspec)
        self.reference_rows()
        for lm in models.values():
            self.model_rows(lm)
            self.extra_model_rows(lm)
        parts = [self.cell_part(cell, models[cell.model].key_id) for cell in cells]
        self._parts = parts  # for ``kept`` (the Ctrl-C message)
        # A damaged part counts as pending; it is reported and moved aside below, under its lock.
        todo = [i for i, part in enumerate(parts) if not has_part(self.results, part, damaged="quiet")]
        cost = {i: self.estimate(cells[i])[1] for i in todo}  # GFLOPs per cell: the ETA's yardstick
        left, spent, began, n, said = sum(cost.values()), 0.0, time.perf_counter(), 0, False
        while todo:
            busy = []  # cells whose lock another runner holds: retried until it finishes them or dies
            for i in todo:
                cell, part = cells[i], parts[i]
                with try_lock(lock_path(self.results, part)) as mine:
                    if not mine:
                        busy.append(i)
                        continue
                    if not has_part(self.results, part, damaged="move"):  # else another runner just wrote it
                        n += 1
                        if self.progress:
                            eta = f", ≈{_duration((time.perf_counter() - began) / spent * left)} left" if spent else ""
                            console.print(f"[bold]cell {i + 1}/{len(cells)}[/] {cell.model} {cell.sampler.name} "
                                          f"nfe={cell.nfe} cfg={cell.cfg_scale:g} seed={cell.seed} "
                                          f"[dim]({n} of {len(cost)} to run{eta})")
                        rows = self.run_cell(cell, models[cell.model])
                        write_rows(self.results / f"{part}.parquet",
                                   [{"suite": self.spec.name, "part": part} | r for r in rows])
                        spent += cost[i]
                    left -= cost[i]
            if busy and not said:
                said = True
                console.print(f"[dim]{len(busy)} cell(s) are being computed by another runner on {self.results}; "
                              "waiting for them (cells of a runner that dies are taken over)")
            todo = busy
            if todo:
                time.sleep(1.0)
        self.figures(models)
        from pfbench.report.html import report

        index = report(self.spec.name, results_root=self.results.parent, reports_root=self.reports.parent)
        self.print_table(time.perf_counter() - t0)
        console.print(f"report: {index} (and index.html)")

    def cell_part(self, cell: RunSpec, key_id: str) -> str:
        """The result part (file stem) of a cell whose model has ``LoadedModel.key_id`` ``key_id``."""
        return f"cell-{cell.key(key_id)}-{self.metric_key()}"

    def _lock(self, part: str) -> AbstractContextManager[None]:
        """Holds ``part``'s lock, waiting (and saying so) while another runner computes it."""

        def say() -> None:
            if self.progress:
                console.print(f"[dim]waiting for another runner computing {part} on {self.results}")
        return hold_lock(lock_path(self.results, part), say)

    def kept(self) -> str:
        """What an interrupted ``run`` has saved, in words (for the Ctrl-C message)."""
        parts: list[str] | None = getattr(self, "_parts", None)
        if parts is not None:
            done = sum(has_part(self.results, p, damaged="quiet") for p in parts)
            return f"{done} of {len(parts)} cells are saved in {self.results}"
        trains = any(m.train is not None for m in self.spec.models.values())
        return "no cell was computed yet" + (f"; training checkpoints are kept in {self.runs}" if trains else "")

    def reference_rows(self) -> None:
        """Metric values of the trivial baseline and of real held-out images (the scale of the numbers)."""
        from pfbench.data.embedded import EmbeddedSpec, generate
        from pfbench.metrics.embedded import trivial_baseline_images

        if self.spec.data.name != "embedded":
            return  # these reference rows are the embedded dataset's; a given reference set has its own scale
        part = f"reference-{content_hash([dataclasses.asdict(self.spec.data), self.spec.metrics, self.spec.sweep.num_samples])}"
        with self._lock(part):  # every unit below is computed under its lock, as the cells are (see ``run``)
            if has_part(self.results, part, damaged="move"):
                return
            d, n = self.spec.data, self.spec.sweep.num_samples
            train = generate(EmbeddedSpec(resolution=d.resolution, split="train", size=max(n, 10_000), seed=d.seed))
            real = train.images[:n]
            real_u8 = (real * 127.5 + 127.5).round().clamp(0, 255).to(torch.uint8)
            labels = train.labels[:n]
            trivial = torch.as_tensor(trivial_baseline_images(train, n, seed=1))
            rows = []
            for name, imgs in (("real_train", real_u8), ("trivial_class_mean", trivial)):
                for k, (v, hib) in self.score(imgs, labels).items():
                    rows.append({"kind": "reference", "model": name, "metric": k, "value": v, "higher_is_better": hib,
                                 "num_samples": n} | self.metric_context())
            write_rows(self.results / f"{part}.parquet", [{"suite": self.spec.name, "part": part} | r for r in rows])

    def model_rows(self, lm: LoadedModel) -> None:
        """Learning curve over kept checkpoints and, for PF models, the difficulty-head diagnostic."""
        from pfbench.train.checkpoints import build_model_from_checkpoint, load_checkpoint
        from pfbench.evaluate.diagnostics import difficulty_report
        from pfbench.report.images import difficulty_figure

        ev = self.spec.eval
        if lm.train_img_per_s:
            part = f"train-{lm.model_id[:16]}"
            with self._lock(part):
                if not has_part(self.results, part, damaged="move"):
                    write_rows(self.results / f"{part}.parquet", [{
                        "suite": self.spec.name, "part": part, "kind": "diagnostic", "model": lm.name,
                        "model_id": lm.model_id, "metric": "train_img_per_s", "value": lm.train_img_per_s,
                        "higher_is_better": True}])
        if ev.learning_curve and lm.checkpoints:
            curve_sampler = ev.curve_sampler or SamplerSpec("euler_pf" if lm.net.cfg.per_token_t else "euler")
            for step, path in lm.checkpoints:
                part = f"curve-{lm.model_id[:16]}-{step}-{self.metric_key()}"
                with self._lock(part):
                    if has_part(self.results, part, damaged="move"):
                        continue
                    net = build_model_from_checkpoint(load_checkpoint(path), use_ema=True).to(ev.device)
                    sampler = self.make_sampler(curve_sampler, ev.curve_nfe)
                    gen = self.generate(dataclasses.replace(lm, net=net, checkpoints=[]), sampler, ev.curve_samples, 0,
                                        1.0)
                    rows = [{"kind": "curve", "model": lm.name, "model_id": lm.model_id, "train_step": step,
                             **self.train_cost(lm.name, step),
                             "sampler": curve_sampler.name, "nfe_budget": ev.curve_nfe, "nfe_used": gen.nfe,
                             "metric": k, "value": v, "higher_is_better": hib,
                             "num_samples": ev.curve_samples, "seed": 0} | self.metric_context()
                            for k, (v, hib) in self.score(gen.images, gen.labels).items()]
                    write_rows(self.results / f"{part}.parquet", [{"suite": self.spec.name, "part": part} | r for r in rows])
        if lm.net.cfg.difficulty_head and self.spec.data.name == "embedded":  # needs the generator's hard masks
            part = f"difficulty-{lm.model_id[:16]}"
            fig = self.reports / f"difficulty_{lm.name}.png"
            with self._lock(part):
                if has_part(self.results, part, damaged="move") and fig.is_file():
                    return
                ref = self.reference_data()
                rep = difficulty_report(lm.net, ref.images, ref.labels, ref.hard, t=ev.difficulty_t)
                difficulty_figure(fig, rep.examples,
                                  f"{lm.name}: held-out images at t={rep.t}, hard/easy variance ratio "
                                  f"{rep.hard_easy_ratio:.2f}, corr(var, err) {rep.pearson_var_err:.2f}")
                rows = [{"kind": "diagnostic", "model": lm.name, "model_id": lm.model_id, "metric": k, "value": v,
                         "higher_is_better": True, "num_samples": int(ref.images.shape[0])}
                        for k, v in (("difficulty_hard_easy_ratio", rep.hard_easy_ratio),
                                     ("difficulty_pearson", rep.pearson_var_err),
                                     ("difficulty_spearman", rep.spearman_var_err),
                                     ("difficulty_pearson_log", rep.pearson_log))]
                write_rows(self.results / f"{part}.parquet", [{"suite": self.spec.name, "part": part} | r for r in rows])

    def figures(self, models: dict[str, LoadedModel]) -> None:
        from pfbench.data import class_names
        from pfbench.report.images import sample_grid

        rows = []
        for name, lm in models.items():
            if not _first_seed(name, models):
                continue  # one sample grid row per suite model, not per training seed
            if name not in self._last_samples:
                cells = [c for c in plan(self.spec) if c.model == name]
                if not cells:
                    continue
                cell = max(cells, key=lambda c: c.nfe)
                gen = self.generate(lm, self.make_sampler(cell.sampler, cell.nfe), 40, cell.seed, cell.cfg_scale)
                self._last_samples[name] = (gen.images, gen.labels)
            images, labels = self._last_samples[name]
            rows.append((name, np.asarray(images).transpose(0, 2, 3, 1), np.asarray(labels)))
        if rows:
            sample_grid(self.reports / "samples.png", rows, class_names(self.spec.data.name))
        self.trace_figures(models)  # learning curves are drawn by the report (report.figures.learning_curve)

    def trace_figures(self, models: dict[str, LoadedModel]) -> None:
        """Per-patch timestep schedules (PF samplers that move patches apart) and sample difficulty maps."""
        from pfbench.report.images import sample_difficulty_figure, schedule_figure
        from pfbench.sample.generate import input_shape
        from pfbench.sample.trace import trace

        done: set[tuple[str, str]] = set()
        for cell in plan(self.spec):
            lm = models[cell.model]
            if not lm.net.cfg.difficulty_head or (cell.model, cell.sampler.name) in done:
                continue
            if not _first_seed(cell.model, models):
                continue  # traces of one training seed per suite model
            done.add((cell.model, cell.sampler.name))
            adapter = DiTAdapter(lm.net)
            sampler = self.make_sampler(cell.sampler, cell.nfe)
            tr = trace(adapter, sampler, input_shape(adapter), n=6, seed=cell.seed, decode=lm.decode,
                       device=self.spec.eval.device)
            if tr.times.shape[0] and not bool((tr.times == tr.times[:, :, :1]).all()):
                schedule_figure(self.reports / f"schedule_{cell.model}_{cell.sampler.name}.png", tr.times[:, 0],
                                tr.images[0], tr.difficulty[0],
                                f"{cell.model} {cell.sampler.name} (NFE {cell.nfe}): per-patch time at each call")
            if (cell.model, "difficulty") not in done and np.isfinite(tr.difficulty).all():
                done.add((cell.model, "difficulty"))
                sample_difficulty_figure(self.reports / f"sample_difficulty_{cell.model}.png", tr.images,
                                         tr.difficulty, tr.grid,
                                         f"{cell.model}: predicted difficulty during {cell.sampler.name} "
                                         f"(call at t ≈ {tr.difficulty_t:.2f})")

    def train_cost(self, name: str, step: int | None = None) -> dict[str, Any]:
        """``train_gflops`` (analytic, ``nets.flops.train_flops``) and ``train_wall_s`` (training seconds from the
        run's ``log.jsonl``, NA when not logged) of a suite-trained model at ``step`` (None: its last step);
        empty for a given checkpoint."""
        from pfbench.nets.flops import train_flops
        from pfbench.train.loop import spec_from_dict

        mspec = self.spec.models[name]
        if mspec.train is None:
            return {}
        ts = spec_from_dict(mspec.train)
        step = ts.steps if step is None else step
        log = self.train_dir(name, mspec) / "log.jsonl"
        lines = [json.loads(ln) for ln in log.read_text().splitlines() if ln.strip()] if log.is_file() else []
        wall = next((r.get("wall_s") for r in lines if r.get("step") == step), None)
        return {"train_gflops": train_flops(ts.net_config()) * ts.batch_size * step / 1e9,
                "train_wall_s": None if wall is None else float(wall)}

    def extra_model_rows(self, lm: LoadedModel) -> None:
        """Training cost rows of suite-trained models (steps, GFLOPs, seconds: equal-compute comparisons) and, for
        PF models with ``eval.difficulty_ts`` / ``eval.context_ts``, the per-patch difficulty correlations and the
        "context helps" curve (``pfbench.evaluate.diagnostics``)."""
        from pfbench.evaluate.diagnostics import context_curve, context_grid, patch_correlations
        from pfbench.train.loop import spec_from_dict

        ev, base = self.spec.eval, {"suite": self.spec.name, "model": lm.name, "model_id": lm.model_id,
                                    "train_timesteps": lm.train_timesteps, "kind": "diagnostic"}
        if self.spec.models[lm.name].train is not None:
            part = f"traincost-{lm.model_id[:16]}"
            with self._lock(part):
                if not has_part(self.results, part, damaged="move"):
                    cost = self.train_cost(lm.name)
                    steps = spec_from_dict(self.spec.models[lm.name].train or {}).steps
                    write_rows(self.results / f"{part}.parquet", [
                        base | {"part": part, "metric": k, "value": v, "higher_is_better": False, "train_step": steps}
                        for k, v in (("train_steps", steps), *cost.items())])
        if not (lm.net.cfg.difficulty_head and self.spec.data.name == "embedded" and (ev.difficulty_ts or ev.context_ts)):
            return
        part = f"validity-{lm.model_id[:16]}-{content_hash([ev.difficulty_ts, ev.context_ts, dataclasses.asdict(self.spec.data)])[:8]}"
        with self._lock(part):
            if has_part(self.results, part, damaged="move"):
                return
            ref = self.reference_data()
            n = int(ref.images.shape[0])
            rows = []
            for c in patch_correlations(lm.net, ref.images, ref.labels, list(ev.difficulty_ts)):
                rows += [base | {"metric": f"difficulty_pearson_patch_t{c.t:g}", "value": c.pearson},
                         base | {"metric": f"difficulty_spearman_patch_t{c.t:g}", "value": c.spearman}]
            for th in ev.context_ts:
                for pt in context_curve(lm.net, ref.images, ref.labels, ref.hard, th, context_grid(th)):
                    rows.append(base | {"metric": f"context_loss_hard_t{th:g}_ctx{pt.t_ctx:g}", "value": pt.loss_hard,
                                        "higher_is_better": False})
            write_rows(self.results / f"{part}.parquet",
                       [{"part": part, "higher_is_better": True, "num_samples": n} | r for r in rows])

    def print_table(self, wall: float) -> None:
        from pfbench.report.tables import print_run_summary

        print_run_summary(read_results(self.results), f"suite {self.spec.name}: {self.results} (this run {wall:.0f} s)",
                          console)


def _first_seed(name: str, models: dict[str, Any]) -> bool:
    """True unless ``name`` is a training-seed instance (``pf@s1``) with a sibling of a smaller seed."""
    from pfbench.suite.parse import split_model

    base, seed = split_model(name)
    return seed is None or all(s is None or s >= seed for b, s in map(split_model, models) if b == base)


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
