"""The figures of a suite run: the sample grid and, for PF samplers that move patches apart, per-patch timestep
schedules and sample difficulty maps (``Runner.figures``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from pfbench.data import class_names
from pfbench.report.images import sample_difficulty_figure, sample_grid, schedule_figure
from pfbench.sample.trace import trace
from pfbench.suite.spec import RunSpec, plan, split_model


def suite_figures(runner: Any, models: dict[str, Any]) -> None:
    """The sample grid (one row per suite model: its last cell, else its longest cell at 40 samples), then the
    trace figures."""
    rows, prompts = [], []
    for name, lm in models.items():
        if not _first_seed(name, models):
            continue  # one sample grid row per suite model, not per training seed
        if name not in runner._last_samples:
            cells = [c for c in plan(runner.spec) if c.model == name]
            if not cells:
                continue
            cell = max(cells, key=lambda c: (s := runner.make_sampler(c)).cost(s.steps))  # the longest run
            gen = runner.generate(lm, runner.make_sampler(cell), 40, cell.seed, cell.cfg_scale, cell.cfg_interval)
            runner._last_samples[name] = (gen.images, gen.labels, gen.prompts, grid_title(cell))
        images, labels, texts, title = runner._last_samples[name]
        rows.append((title, np.asarray(images).transpose(0, 2, 3, 1), np.asarray(labels)))
        prompts.append(texts)
    if rows:
        sample_grid(runner.reports / "samples.png", rows, class_names(runner.spec.data.name), prompts=prompts)
    trace_figures(runner, models)  # learning curves are drawn by the report (report.figures.learning_curve)


def trace_figures(runner: Any, models: dict[str, Any]) -> None:
    """Per-patch timestep schedules (PF samplers that move patches apart) and sample difficulty maps."""
    done: set[tuple[str, str]] = set()
    for cell in plan(runner.spec):
        adapter = models[cell.model].adapter()
        if not adapter.has_difficulty or (cell.model, cell.sampler.name) in done:
            continue
        if not _first_seed(cell.model, models):
            continue  # traces of one training seed per suite model
        done.add((cell.model, cell.sampler.name))
        sampler = runner.make_sampler(cell)
        tr = trace(adapter, sampler, n=6, seed=cell.seed, decode=models[cell.model].decode,
                   device=runner.spec.eval.device, prompts=runner.prompts(models[cell.model]))
        if tr.times.shape[0] and not bool((tr.times == tr.times[:, :, :1]).all()):
            schedule_figure(runner.reports / f"schedule_{cell.model}_{cell.sampler.name}.png", tr.times[:, 0],
                            tr.images[0], tr.difficulty[0],
                            f"{cell.model} {cell.sampler.name} ({cell.axis()}): per-patch time at each call")
        if (cell.model, "difficulty") not in done and np.isfinite(tr.difficulty).all():
            done.add((cell.model, "difficulty"))
            sample_difficulty_figure(runner.reports / f"sample_difficulty_{cell.model}.png", tr.images,
                                     tr.difficulty, tr.grid,
                                     f"{cell.model}: predicted difficulty during {cell.sampler.name} "
                                     f"(call at t ≈ {tr.difficulty_t:.2f})")


def _first_seed(name: str, models: dict[str, Any]) -> bool:
    """True unless ``name`` is a training-seed instance (``pf@s1``) with a sibling of a smaller seed."""
    base, seed = split_model(name)
    return seed is None or all(s is None or s >= seed for b, s in map(split_model, models) if b == base)


def grid_title(cell: RunSpec) -> str:
    """A sample-grid row's title: the cell it shows (model, sampler and its variant, NFE or steps, CFG)."""
    variant = ", ".join(f"{k}={v}" for k, v in sorted(cell.sampler.params.items()))
    cfg = f"cfg {cell.cfg_scale:g}" + (f" in {list(cell.cfg_interval)}" if cell.cfg_interval is not None else "")
    return "\n".join([cell.model, cell.sampler.name + (f" {variant}" if variant else ""), f"{cell.axis()}, {cfg}"])
