"""``pfbench run|plan|report|compare|baseline|figures|pareto|tune|parity``: suites and their results.

Heavy imports stay inside the commands, so ``pfbench --help`` and each command's start stay fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from pfbench import PfbenchError
from pfbench.cli.common import console, kept_on_ctrl_c, set_lock_policy, set_threads

STALE_HELP = ("a lock whose holder has not heart-beaten for this many seconds is stale (default "
              "$PFBENCH_LOCK_STALE_S, else 600)")


def run(
    suite: Annotated[Path, typer.Argument(help="suite YAML, e.g. suites/smoke.yaml")],
    overrides: Annotated[list[str] | None, typer.Argument(help="hydra overrides, e.g. sweep.nfe=[8,16] or "
                                                                         "sweep.steps=[100]")] = None,
    results: Annotated[Path, typer.Option(help="results root")] = Path("results"),
    reports: Annotated[Path, typer.Option(help="reports root")] = Path("reports"),
    runs: Annotated[Path, typer.Option(help="training runs / checkpoints root")] = Path("runs"),
    threads: Annotated[int | None, typer.Option(help="torch CPU threads")] = None,
    quiet: Annotated[bool, typer.Option(help="no progress bars")] = False,
    wait: Annotated[bool, typer.Option(help="launcher.name=submitit: wait for the jobs (resubmitting failed ones "
                                             "once) until the report is written")] = False,
    stale_after: Annotated[float | None, typer.Option(help=STALE_HELP + "; a waiting runner takes it over once it "
                                                           "has seen no heartbeat for that long")] = None,
    steal_stale: Annotated[bool, typer.Option(help="take over at once the locks whose recorded last heartbeat is "
                                                   "already stale (see `pfbench plan`)")] = False,
    new_instance: Annotated[bool, typer.Option(help="train a model even where the results folder holds results of "
                                                    "another instance of it (the report lists both)")] = False,
) -> None:
    """Run every cell of a suite (resumable: finished cells are skipped); a parity suite runs `pfbench parity`.

    With `launcher.name=submitit` (in the suite or as an override) the cells and trainings run as cluster jobs
    (Slurm, or submitit's local executor); each call shows their states and submits only what is neither
    computed nor in flight.
    """
    from pfbench.suite.parse import load_suite, suite_kind
    from pfbench.suite.runner import Runner

    set_threads(threads)
    set_lock_policy(stale_after, steal_stale)
    if suite_kind(suite) == "adm_parity":
        _no_overrides(suite, overrides)
        parity(suite, device=None)
        return
    spec = load_suite(suite, overrides)
    runner = Runner(spec, results_root=results, reports_root=reports, runs_root=runs, progress=not quiet,
                    new_instance=new_instance)
    if spec.launcher.name == "submitit":
        from pfbench.suite.launch import Launcher

        _stop_on_missing(runner.spec, device=False)  # the jobs sample where the GPUs are
        runner.preflight(device=False)
        runner.write_skip_notes()  # the report job reads them
        launcher = Launcher(runner, threads)
        with kept_on_ctrl_c(lambda: "submitted jobs keep running; `pfbench run` shows their states"):
            launcher.run(console, wait, poll_s=2.0 if spec.launcher.executor == "local" else 60.0)
        return
    if wait:
        raise PfbenchError("--wait: only for launcher.name=submitit (a local run always waits)")
    _stop_on_missing(runner.spec)
    with kept_on_ctrl_c(runner.kept, at_once=True):  # training workers are stopped by then (suite.workers)
        runner.run()


def _stop_on_missing(spec: Any, device: bool = True) -> None:
    """Before any work: the table of every missing input, then one error line (``pfbench.suite.inputs``)."""
    from pfbench.suite.inputs import find_inputs
    from pfbench.suite.validate import validate

    validate(spec)  # a bad value is named first, as by Runner.preflight
    inputs = find_inputs(spec, device)
    if inputs.missing:
        show_missing(inputs.missing)
        raise inputs.error()


def plan(
    suite: Annotated[Path, typer.Argument(help="suite YAML")],
    overrides: Annotated[list[str] | None, typer.Argument(help="hydra overrides")] = None,
    results: Annotated[Path, typer.Option(help="results root")] = Path("results"),
    runs: Annotated[Path, typer.Option(help="training runs / checkpoints root")] = Path("runs"),
    stale_after: Annotated[float | None, typer.Option(help=STALE_HELP)] = None,
) -> None:
    """Print the cells of a suite, which are already computed, and who holds the locks of the others (a parity
    suite: its inputs and numbers)."""
    from rich.table import Table

    from pfbench.results import has_part
    from pfbench.suite.inputs import find_inputs, skip_reason
    from pfbench.suite.parse import load_suite, suite_kind
    from pfbench.suite.runner import Runner
    from pfbench.suite.spec import plan as make_plan
    from pfbench.suite.validate import validate

    if suite_kind(suite) == "adm_parity":
        _no_overrides(suite, overrides)
        _plan_parity(suite)
        return
    set_lock_policy(stale_after)
    spec = load_suite(suite, overrides)
    validate(spec)
    runner = Runner(spec, results_root=results, runs_root=runs, progress=False)
    spec = runner.spec  # the models the grid uses, without the cells of skipped optional models
    table = Table(title=f"suite {spec.name}")
    for col in ("model", "sampler", "nfe | steps", "cfg", "seed", "samples", "calls/img", "forwards/img",
                "≈FLOPs total", "cached"):
        table.add_column(col)
    cells = make_plan(spec)
    ids = {n: runner.suite_models.identity(n) for n in spec.models}  # once per model: each reads (hashes) weights
    total = 0.0
    for cell in cells:
        ident = runner.identity.cell(cell, ids[cell.model])
        done = ident.model.key_id is not None and has_part(runner.results, ident.part(), suite=spec.name)
        try:
            forwards, gflops = runner.estimate(cell)
        except PfbenchError:  # a checkpoint not in place yet whose size only the file tells: listed below
            forwards, gflops = -1, float("nan")
        total += 0.0 if done or gflops != gflops else gflops
        label = cell.sampler.name + (f" {cell.sampler.params}" if cell.sampler.params else "")
        cfg = f"{cell.cfg_scale:g}" + (f" in {list(cell.cfg_interval)}" if cell.cfg_interval else "")
        sampler = cell.build_sampler()
        length = f"{cell.nfe} NFE" if cell.steps is None else f"{cell.steps} steps"  # a budget, or a fixed count
        table.add_row(cell.model, label, length, cfg, str(cell.seed), str(cell.num_samples),
                      str(sampler.cost(sampler.steps)), "?" if forwards < 0 else str(forwards), "?" if forwards < 0 else flops_text(gflops),
                      "yes" if done else "")
    console.print(table)
    console.print(f"estimated compute still to run: ≈{flops_text(total)} of network forwards (sampling only, VAE "
                  "decoding not counted; per-token modulation counted once per sample, as with dedup; CFG "
                  "counted on every step even where an interval switches it off)")
    unknown = [n for n, ident in ids.items() if ident.key_id is None]
    train = [n for n in unknown if spec.models[n].train is not None]
    missing = [n for n in unknown if spec.models[n].train is None]
    console.print(f"{len(cells)} cells; models to train: {', '.join(train) or 'none'}; models whose checkpoint or "
                  f"decoder is not found: {', '.join(missing) or 'none'}")
    for note, lacks in zip(runner.skip_notes, runner.skipped.values(), strict=True):
        console.print(f"[yellow]skipped[/]: {note['cells']} cells of {note['model']} (optional): "
                      f"{escape(skip_reason(lacks))}", highlight=False)
    _plan_locks([runner.results, runner.runs])
    inputs = find_inputs(spec)
    if inputs.missing:  # what `run` would refuse to start without, all of it
        show_missing(inputs.missing)
        console.print(f"[red]run would stop[/]: {len(inputs.missing)} input(s) missing or wrong (table above)")
        raise typer.Exit(1)


def show_missing(missing: tuple[Any, ...]) -> None:
    """The table of a suite's missing inputs (``pfbench.suite.inputs.Missing``) with what provides each."""
    from rich.table import Table

    table = Table(title="missing inputs", show_lines=True)
    for col in ("needed by", "file", "problem", "get it with"):
        table.add_column(col, overflow="fold")
    for m in missing:
        table.add_row(escape(m.key), escape(m.path), escape(m.problem),
                      escape(m.remedy))
    console.print(table)


def _plan_locks(folders: list[Path]) -> None:
    """``pfbench plan``: who holds which unit's lock now (``pfbench.locks``), and which holders are stale."""
    from pfbench.locks import StalePolicy, held_locks

    held = [(folder, unit, holder) for folder in folders for unit, holder in held_locks(folder)]
    if not held:
        console.print("locks: none held")
        return
    after = StalePolicy.from_env().after_s
    console.print(f"locks held ({len(held)}; stale after {after:g} s without a heartbeat, taken over by a waiting "
                  "`pfbench run`, at once with --steal-stale):", highlight=False, soft_wrap=True)
    for folder, unit, holder in held:
        console.print(f"  {unit} in {folder}: held by {escape(holder.describe(after))}", highlight=False, soft_wrap=True)


def _no_overrides(suite: Path, overrides: list[str] | None) -> None:
    if overrides:
        raise PfbenchError(f"{suite}: a parity suite takes no overrides ({' '.join(overrides)}); set "
                           "$PFBENCH_ADM_SAMPLES, $PFBENCH_ADM_REF or $PFBENCH_ADM_WEIGHTS, or edit a copy")


def _plan_parity(suite: Path) -> None:
    """``pfbench plan`` of a parity suite: its inputs (found or not), the numbers it checks, how to run it."""
    from rich.table import Table

    from pfbench.encoders.inception import INCEPTION_KEY
    from pfbench.evaluate.parity import ENV, load_parity_suite, resolve_inputs
    from pfbench.weights import resolve_weights

    ps = load_parity_suite(suite)
    inputs = resolve_inputs(ps, check=False)
    table = Table(title=f"parity suite {ps.name} (kind: adm_parity)")
    for col in ("input", "path", "found"):
        table.add_column(col)
    for key, path in (("samples", inputs.samples), ("ref", inputs.ref)):
        found = path.is_file()
        table.add_row(key, str(path), "yes" if found else f"no: set ${ENV[key]} or get {ps.sources.get(key, 'it')}")
    try:
        table.add_row("Inception weights", str(resolve_weights(INCEPTION_KEY, inputs.weights, verify=False)), "yes")
    except PfbenchError:
        table.add_row("Inception weights", inputs.weights or "offline search", f"no: set ${ENV['weights']}")
    console.print(table)
    checks = ", ".join(f"{k} {v:g} ± {ps.tolerance[k]:g}" for k, v in ps.expect.items())
    console.print(f"checks: {checks} (one Inception pass over every sample and reference image)")
    console.print(f"run it: pfbench run {suite} (the same as pfbench parity {suite})")


def flops_text(gflops: float) -> str:
    """GFLOPs as a short human number with an SI unit (e.g. 3.63 EFLOP)."""
    value, units = gflops * 1e9, ("FLOP", "kFLOP", "MFLOP", "GFLOP", "TFLOP", "PFLOP", "EFLOP", "ZFLOP")
    i = 0
    while value >= 1000 and i < len(units) - 1:
        value, i = value / 1000, i + 1
    return f"{value:.3g} {units[i]}"


def report(
    suite: Annotated[str, typer.Argument(help="suite name, or its YAML file (its name: is used)")],
    results: Annotated[Path, typer.Option(help="results root")] = Path("results"),
    reports: Annotated[Path, typer.Option(help="reports root")] = Path("reports"),
    docs: Annotated[Path, typer.Option(help="docs folder: claims blocks between <!-- pfbench:claims SUITE --> "
                                            "markers are rewritten from the results")] = Path("docs"),
) -> None:
    """Write reports/SUITE/index.md and a self-contained index.html from the suite's Parquet results.

    The suite's ``claims:`` (trend tests) and ``report.headline`` (the main table's metrics) are read from its
    YAML: the file given, or suites/SUITE.yaml.
    """
    from pfbench.report.html import report as make_report
    from pfbench.suite.parse import full_study, load_suite

    name, path = suite, Path(suite)
    if not suite.endswith((".yaml", ".yml")):
        path = Path("suites") / f"{suite}.yaml"
    spec = load_suite(path, None) if path.is_file() else None
    if suite.endswith((".yaml", ".yml")):
        # The results folder is named after the suite's name:, which need not be the file's stem.
        name = spec.name if spec is not None else path.stem
    own = spec is not None and spec.name == name
    trends = tuple(spec.claims.trends) if own else ()
    headline = spec.headline() if own else ()
    full = full_study(spec, path.parent) if own and spec is not None else None
    md = make_report(name, results_root=results, reports_root=reports, trends=trends, docs=docs, headline=headline,
                     agree_with=full)
    console.print(f"wrote {md} and {md.with_name('index.html')}")


def compare(
    a: Annotated[Path, typer.Argument(help="baseline: results folder (results/SUITE) or a .parquet baseline")],
    b: Annotated[Path, typer.Argument(help="candidate: results folder or .parquet")],
    tolerances: Annotated[Path | None, typer.Option(help="YAML: metric or pattern -> {abs, rel, sigma}")] = None,
    markdown: Annotated[Path | None, typer.Option(help="also write the full comparison as Markdown here")] = None,
    allow_missing: Annotated[bool, typer.Option(help="rows of A missing from B do not fail")] = False,
    all_rows: Annotated[bool, typer.Option("--all", help="print every matched row, not only changes")] = False,
    match_by: Annotated[str, typer.Option(help="recipe: match models by name and training config across model ids "
                                               "(retrained elsewhere); id: the same weights only")] = "recipe",
) -> None:
    """Compare B against A per metric; exit 1 on a regression beyond tolerance or on rows missing from B."""
    from pfbench.io import atomic_write_text
    from pfbench.report.compare import compare as run_compare
    from pfbench.report.tolerances import load_tolerances

    res = run_compare(a, b, load_tolerances(tolerances), match_by=match_by)
    res.print(console, all_rows=all_rows)
    if markdown is not None:
        atomic_write_text(markdown, res.markdown())
    raise typer.Exit(res.exit_code(allow_missing))


def baseline(
    results: Annotated[Path, typer.Argument(help="results folder, e.g. results/smoke")],
    out: Annotated[Path, typer.Argument(help="baseline .parquet to commit, e.g. baselines/smoke.parquet")],
) -> None:
    """Write a committable baseline (match keys, mean, std, n per metric) from a results folder."""
    from pfbench.report.compare import write_baseline

    console.print(f"wrote {write_baseline(results, out)}")


def figures(
    results: Annotated[list[Path], typer.Argument(help="results folders (results/SUITE) or .parquet files; rows are pooled")],
    out: Annotated[Path, typer.Option(help="output folder for tables (.md/.tex) and figures (.png/.pdf)")] = Path("reports/figures"),
) -> None:
    """Regenerate paper tables and figures (main table, NFE scaling, sampler and training-sampler ablations)."""
    from pfbench.report.paper import paper_figures

    for path in paper_figures(list(results), out):
        console.print(f"wrote {path}")


def pareto(
    results: Annotated[list[Path], typer.Argument(help="results folders (results/SUITE); rows are pooled")],
    metric: Annotated[str, typer.Option(help="quality metric")] = "fd_embedded",
    cost: Annotated[str, typer.Option(help="cost axis: nfe | gflops | wall (| steps where rows have it)")] = "nfe",
    out: Annotated[Path, typer.Option(help="output folder (Markdown + figure)")] = Path("reports/pareto"),
) -> None:
    """Which configuration at which budget: the quality-vs-cost Pareto front (dominated only where significant)."""
    from pfbench.report.pareto_report import write_pareto

    md = write_pareto(list(results), out, metric, cost)
    console.print(md.read_text(), markup=False, highlight=False, soft_wrap=True)
    console.print(f"wrote {md} (and its figure)")


def tune(
    suite: Annotated[Path, typer.Argument(help="suite YAML (its tune: section says what to search)")],
    overrides: Annotated[list[str] | None, typer.Argument(help="hydra overrides, e.g. tune.trials=30")] = None,
    trials: Annotated[int | None, typer.Option(help="finished trials per study (default: tune.trials)")] = None,
    tuning_seeds: Annotated[str | None, typer.Option(help="seeds the search scores on, e.g. 100,101")] = None,
    heldout_seeds: Annotated[str | None, typer.Option(help="seeds the best configurations are scored on")] = None,
    metric: Annotated[str | None, typer.Option(help="objective (default: the suite's first metric)")] = None,
    results: Annotated[Path, typer.Option(help="results root")] = Path("results"),
    reports: Annotated[Path, typer.Option(help="reports root")] = Path("reports"),
    threads: Annotated[int | None, typer.Option(help="torch CPU threads")] = None,
    quiet: Annotated[bool, typer.Option(help="no progress output")] = False,
) -> None:
    """Tune the adaptive samplers per budget on tuning seeds (Optuna), score the winners on held-out seeds.

    Resumable (studies persist in RESULTS/SUITE/tune/optuna.db; finished trials are not rerun) and safe to run
    twice at once on one results folder. Writes REPORTS/SUITE/tune.md and tuned.yaml (a suite snippet).
    """
    import dataclasses
    import time

    from pfbench.suite.parse import load_suite
    from pfbench.suite.tune import Tuner, write_report

    set_threads(threads)
    spec = load_suite(suite, overrides)
    given: dict[str, Any] = {"trials": trials, "tuning_seeds": _seeds(tuning_seeds, "--tuning-seeds"),
             "heldout_seeds": _seeds(heldout_seeds, "--heldout-seeds"), "metric": metric}
    spec = dataclasses.replace(spec, tune=dataclasses.replace(spec.tune, **{k: v for k, v in given.items()
                                                                            if v is not None}))
    tuner = Tuner(spec, results, reports, progress=not quiet)
    t0, c0 = time.perf_counter(), time.process_time()
    with kept_on_ctrl_c(lambda: f"finished trials are saved in {tuner.results / 'tune' / 'optuna.db'}"):
        outcomes, heldout, scores = tuner.run()
    md, snippet = write_report(tuner, outcomes, heldout, scores, time.perf_counter() - t0, time.process_time() - c0)
    console.print(md.read_text(), markup=False, highlight=False, soft_wrap=True)
    console.print(f"wrote {md} and {snippet}")


def _seeds(text: str | None, option: str) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(s) for s in text.replace(" ", "").split(",") if s]
    except ValueError:
        raise PfbenchError(f"{option} {text!r}: give comma-separated integers, e.g. 100,101") from None


def parity(
    suite: Annotated[Path, typer.Argument(help="parity suite YAML")] = Path("suites/adm_parity.yaml"),
    device: Annotated[str | None, typer.Option(help="cpu or cuda")] = None,
) -> None:
    """Check FID/sFID/IS/P/R against the ADM evaluator's golden numbers (needs the public ADM files + weights)."""
    from pfbench.evaluate.parity import run_adm_parity_suite, show_parity

    result = run_adm_parity_suite(suite, device=device)
    show_parity(result)
    if not result["pass"]:
        raise typer.Exit(1)
