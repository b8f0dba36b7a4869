"""The units of a suite run besides its cells: reference rows, training speed and cost, learning curves and the
difficulty-head diagnostics of each model.

Each unit is one result part (``results/<suite>/<part>.parquet``), computed under its lock (``pfbench.locks``) and
only when it is not already there, as the cells are (``pfbench.suite.runner``); its rows are ``Row``s.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.markup import escape
from torch import Tensor

from pfbench.data.embedded import EmbeddedSpec
from pfbench.data.embedded import generate as embedded_images
from pfbench.data.heterogeneity import hard_share_stats
from pfbench.evaluate.baseline import trivial_baseline_images
from pfbench.evaluate.diagnostics import (
    context_curve,
    context_grid,
    difficulty_report,
    error_spread,
    patch_correlations,
)
from pfbench.io import content_hash
from pfbench.locks import Lock, hold_lock, lock_path
from pfbench.nets import DiT, T2INet
from pfbench.nets.flops import train_flops
from pfbench.report.images import difficulty_figure
from pfbench.results import Row, has_part, metric_rows, write_rows
from pfbench.suite.models import LoadedModel, SuiteModels
from pfbench.suite.prompts import CaptionedNet
from pfbench.suite.scoring import Scorer
from pfbench.suite.spec import SamplerSpec, SuiteSpec
from pfbench.train.checkpoints import build_model_from_checkpoint, load_checkpoint
from pfbench.train.spec import spec_from_dict
from pfbench.types import quantize

# The runner's sampling call: (model, sampler, n, seed, cfg_scale) -> generated images (``pfbench.sample.generate``).
Sample = Callable[[LoadedModel, Any, int, int, float], Any]


class ModelUnits:
    """Computes and writes the non-cell units of one suite run.

    Args:
        spec: The suite.
        results: Its results folder (``results/<suite>``). reports: Its reports folder (figures).
        scorer: How the suite scores images. models: The suite's models (training folders, for costs).
        sample: The runner's sampling call. console: Where waiting for another runner is said (None: silent).
    """

    def __init__(self, spec: SuiteSpec, results: Path, reports: Path, scorer: Scorer, models: SuiteModels,
                 sample: Sample, console: Console | None) -> None:
        self.spec, self.results, self.reports = spec, results, reports
        self.scorer, self.models, self.sample, self.console = scorer, models, sample, console
        self._reference: Any = None

    def lock(self, part: str) -> AbstractContextManager[Lock]:
        """Holds ``part``'s lock, waiting (and saying for whom) while another runner computes it."""

        def say(holder: str) -> None:
            if self.console is not None:
                self.console.print(f"[dim]waiting for another runner computing {part} on {self.results} ({escape(holder)})",
                                   highlight=False, soft_wrap=True)

        def took(holder: str) -> None:
            if self.console is not None:
                self.console.print(f"[yellow]taking over[/] {part} from {escape(holder)}", highlight=False, soft_wrap=True)
        return hold_lock(lock_path(self.results, part), say, on_take_over=took)

    def _unit(self, part: str, rows: Callable[[], list[Row]], done: Callable[[], bool] = lambda: True) -> None:
        """Computes ``rows()`` and writes them as ``part``, under its lock, unless the part (and ``done()``) exists;
        a result whose lock was taken over meanwhile (``Lock.lost``) is the new holder's to write, and is dropped."""
        while True:
            with self.lock(part) as lock:
                if has_part(self.results, part, suite=self.spec.name, damaged="move") and done():
                    return
                out = rows()
                if not lock.lost():
                    write_rows(self.results / f"{part}.parquet", out)
                    return
            if self.console is not None:
                self.console.print(f"[yellow]warning:[/] {escape(lock.lost_note(part))}", highlight=False, soft_wrap=True)

    def reference_data(self) -> Any:
        """Held-out test split of the embedded dataset (metric reference + diagnostics)."""
        if self._reference is None:
            d = self.spec.data
            self._reference = embedded_images(EmbeddedSpec(resolution=d.resolution, split="test", size=d.test_size,
                                                           seed=d.seed, heterogeneity=d.heterogeneity))
        return self._reference

    def reference(self, captions: bool = False) -> None:
        """Metric values of the trivial baseline and of real images (the scale of the numbers): ``real_train``,
        the first images of the embedded train split (not held out; the held-out test split is the metric reference).

        ``captions`` (a suite with text-to-image models): the real images are scored against their own captions,
        and against shuffled ones (the ceiling and the floor of the prompt-following metrics).
        """
        if self.spec.data.name != "embedded":
            return  # these reference rows are the embedded dataset's; a given reference set has its own scale
        d, n = self.spec.data, self.spec.sweep.num_samples
        # Keyed like a cell's scores (``Scorer.key``: metrics, data, reference set, resize, weights, metric options),
        # so a change of any of them makes a new reference part rather than scaling cells by stale baselines.
        keyed: list[object] = [d.key(), self.spec.metrics, n, self.scorer.key()]
        part = f"reference-{content_hash(keyed + (['captions'] if captions else []))}"

        def rows() -> list[Row]:
            train = embedded_images(EmbeddedSpec(resolution=d.resolution, split="train", size=max(n, 10_000),
                                                 seed=d.seed, heterogeneity=d.heterogeneity))
            real_u8 = quantize(train.images[:n])  # (n, 3, H, W)
            labels = train.labels[:n]
            trivial = torch.as_tensor(trivial_baseline_images(train, n, seed=1))
            out: list[Row] = []
            texts = train.captions[:n] if captions else None
            for name, images in (("real_train", real_u8), ("trivial_class_mean", trivial)):
                base = {"suite": self.spec.name, "part": part, "kind": "reference", "model": name, "num_samples": n}
                scores = self.scorer.score(images, labels, texts)
                if texts is not None:
                    scores |= self.scorer.shuffled(images, labels, texts, seed=0)
                out += metric_rows(base | self.scorer.context(), scores)
            return out

        self._unit(part, rows)
        self._data_spread()

    def _data_spread(self) -> None:
        """``eval.patch_spread``: the held-out split's hard-pixel share per 2x2 patch (``hard_share_stats``)."""
        if not (self.spec.eval.patch_spread and self.spec.data.name == "embedded"):
            return
        part = f"dataspread-{content_hash(self.spec.data.key())[:8]}"

        def rows() -> list[Row]:
            ref = self.reference_data()
            base = {"suite": self.spec.name, "part": part, "kind": "reference", "model": "data_hard",
                    "num_samples": int(ref.images.shape[0])}
            return metric_rows(base, {k: (v, False) for k, v in hard_share_stats(ref.hard, 2).items()})

        self._unit(part, rows)

    def model(self, lm: LoadedModel) -> None:
        """Every unit of one model: training speed and cost, learning curve, difficulty diagnostics."""
        self._train_speed(lm)
        self._curve(lm)
        self._difficulty(lm)
        self._train_cost(lm)
        self._validity(lm)
        self._spread(lm)

    def _train_speed(self, lm: LoadedModel) -> None:
        """Training images per second of a model trained in this run."""
        speed, part = lm.train_img_per_s, f"train-{lm.model_id[:16]}"
        if speed:
            self._unit(part, lambda: [Row(suite=self.spec.name, part=part, kind="diagnostic", model=lm.name,
                                          model_id=lm.model_id, metric="train_img_per_s", value=speed,
                                          higher_is_better=True)])

    def _curve(self, lm: LoadedModel) -> None:
        """Metrics of every kept checkpoint of a suite-trained model (EMA weights, ``eval.curve_*``)."""
        ev = self.spec.eval
        if not (ev.learning_curve and lm.checkpoints):
            return
        assert lm.net is not None  # checkpoints: a suite-trained pfbench network
        sampler_spec = ev.curve_sampler or SamplerSpec("euler_pf" if lm.net.cfg.per_token_t else "euler")
        for step, path in lm.checkpoints:
            part = f"curve-{lm.model_id[:16]}-{step}-{self.scorer.key()}{ev.numerics()}"

            def rows(step: int = step, path: Path = path, part: str = part) -> list[Row]:
                net = build_model_from_checkpoint(load_checkpoint(path), use_ema=True).to(ev.device)
                sampler = sampler_spec.build(ev.curve_nfe)
                gen = self.sample(dataclasses.replace(lm, net=net, checkpoints=[]), sampler, ev.curve_samples, 0, 1.0)
                base = {"suite": self.spec.name, "part": part, "kind": "curve", "model": lm.name,
                        "model_id": lm.model_id, "train_step": step, **self.train_cost(lm.name, step),
                        "sampler": sampler_spec.name, "nfe_budget": ev.curve_nfe, "steps": sampler.steps, "nfe_used": gen.nfe,
                        "num_samples": ev.curve_samples, "seed": 0}
                return metric_rows(base | self.scorer.context(), self.scorer.score(gen.images, gen.labels,
                                                                                    gen.prompts))

            self._unit(part, rows)

    def _pf_on_embedded(self, lm: LoadedModel) -> bool:
        """A pfbench PF network on embedded data: the diagnostics need the difficulty head and the generator's
        hard masks."""
        return isinstance(lm.net, DiT | T2INet) and lm.net.cfg.difficulty_head and self.spec.data.name == "embedded"

    def _diagnosed(self, lm: LoadedModel) -> tuple[Any, Tensor]:
        """The network as the diagnostics call it, ``net(x, t, labels)``, and the labels to pass: a DiT with the
        held-out labels; a text-to-image network reading held-out caption i for label i (``CaptionedNet``)."""
        ref = self.reference_data()
        if isinstance(lm.net, T2INet):
            return CaptionedNet(lm.net, lm.text_encoder, ref.captions), torch.arange(len(ref.captions))
        return lm.net, ref.labels

    def _difficulty(self, lm: LoadedModel) -> None:
        """Held-out difficulty map vs the generator's hard pixels and the realised error (rows + a figure)."""
        if not self._pf_on_embedded(lm):
            return
        # The weights, the held-out data and the time: everything that changes the numbers.
        ev, data = self.spec.eval, self.spec.data.key()
        part = f"difficulty-{lm.model_id[:16]}-{content_hash([data, ev.difficulty_t])[:8]}"
        fig = self.reports / f"difficulty_{lm.name}.png"

        def rows() -> list[Row]:
            ref = self.reference_data()
            net, labels = self._diagnosed(lm)
            rep = difficulty_report(net, ref.images, labels, ref.hard, t=self.spec.eval.difficulty_t)
            difficulty_figure(fig, rep.examples, f"{lm.name}: held-out images at t={rep.t}, hard/easy variance ratio "
                                                 f"{rep.hard_easy_ratio:.2f}, corr(var, err) {rep.pearson_var_err:.2f}")
            base = {"suite": self.spec.name, "part": part, "kind": "diagnostic", "model": lm.name,
                    "model_id": lm.model_id, "num_samples": int(ref.images.shape[0])}
            return metric_rows(base, {"difficulty_hard_easy_ratio": (rep.hard_easy_ratio, True),
                                      "difficulty_pearson": (rep.pearson_var_err, True),
                                      "difficulty_spearman": (rep.spearman_var_err, True),
                                      "difficulty_pearson_log": (rep.pearson_log, True)})

        self._unit(part, rows, done=fig.is_file)

    def train_cost(self, name: str, step: int | None = None) -> dict[str, Any]:
        """``train_gflops`` (analytic, ``nets.flops.train_flops``) and ``train_wall_s`` (training seconds from the
        run's ``log.jsonl``, None when not logged) of a suite-trained model at ``step`` (None: its last step);
        empty for a given checkpoint."""
        mspec = self.spec.models[name]
        if mspec.train is None:
            return {}
        ts = spec_from_dict(mspec.train)
        step = ts.steps if step is None else step
        log = self.models.train_dir(name, mspec) / "log.jsonl"
        lines = [json.loads(ln) for ln in log.read_text().splitlines() if ln.strip()] if log.is_file() else []
        wall = next((r.get("wall_s") for r in lines if r.get("step") == step), None)
        return {"train_gflops": train_flops(ts.net_config()) * ts.batch_size * step / 1e9,
                "train_wall_s": None if wall is None else float(wall)}

    def _base(self, lm: LoadedModel, part: str) -> dict[str, Any]:
        """Shared columns of a model's diagnostic rows that compare training samplers (``train_timesteps``)."""
        return {"suite": self.spec.name, "part": part, "kind": "diagnostic", "model": lm.name, "model_id": lm.model_id,
                "train_timesteps": lm.train_timesteps}

    def _train_cost(self, lm: LoadedModel) -> None:
        """Training steps, GFLOPs and seconds of a suite-trained model (equal-compute comparisons)."""
        train = self.spec.models[lm.name].train
        if train is None:
            return
        part, steps = f"traincost-{lm.model_id[:16]}", spec_from_dict(train).steps

        def rows() -> list[Row]:
            values = {"train_steps": (steps, False)} | {k: (v, False) for k, v in self.train_cost(lm.name).items()}
            return metric_rows(self._base(lm, part) | {"train_step": steps}, values)

        self._unit(part, rows)

    def _validity(self, lm: LoadedModel) -> None:
        """For ``eval.difficulty_ts`` / ``eval.context_ts``: per-patch difficulty correlations and the "context
        helps" curve (``pfbench.evaluate.diagnostics``)."""
        ev = self.spec.eval
        if not (self._pf_on_embedded(lm) and (ev.difficulty_ts or ev.context_ts)):
            return
        part = (f"validity-{lm.model_id[:16]}-"
                f"{content_hash([ev.difficulty_ts, ev.context_ts, self.spec.data.key()])[:8]}")

        def rows() -> list[Row]:
            ref = self.reference_data()
            net, labels = self._diagnosed(lm)
            values: dict[str, tuple[float, bool]] = {}
            for c in patch_correlations(net, ref.images, labels, list(ev.difficulty_ts)):
                values[f"difficulty_pearson_patch_t{c.t:g}"] = (c.pearson, True)
                values[f"difficulty_spearman_patch_t{c.t:g}"] = (c.spearman, True)
            for th in ev.context_ts:
                for pt in context_curve(net, ref.images, labels, ref.hard, th, context_grid(th)):
                    values[f"context_loss_hard_t{th:g}_ctx{pt.t_ctx:g}"] = (pt.loss_hard, False)
            return metric_rows(self._base(lm, part) | {"num_samples": int(ref.images.shape[0])}, values)

        self._unit(part, rows)

    def _spread(self, lm: LoadedModel) -> None:
        """``eval.patch_spread``: the model's per-patch error spread on held-out images at ``eval.difficulty_ts``
        (else ``difficulty_t``): ``patch_err_cv_t*`` and ``patch_err_hard_easy_t*`` (``error_spread``)."""
        ev = self.spec.eval
        if not (ev.patch_spread and self._pf_on_embedded(lm)):
            return
        ts = list(ev.difficulty_ts) or [ev.difficulty_t]
        part = f"spread-{lm.model_id[:16]}-{content_hash([ts, self.spec.data.key()])[:8]}"

        def rows() -> list[Row]:
            ref = self.reference_data()
            net, labels = self._diagnosed(lm)
            values: dict[str, tuple[float, bool]] = {}
            for s in error_spread(net, ref.images, labels, ref.hard, ts):
                values[f"patch_err_cv_t{s.t:g}"] = (s.cv, False)
                values[f"patch_err_hard_easy_t{s.t:g}"] = (s.hard_easy, False)
            return metric_rows(self._base(lm, part) | {"num_samples": int(ref.images.shape[0])}, values)

        self._unit(part, rows)
