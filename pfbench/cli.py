"""Command line: ``pfbench run|plan|train|data|assets ...`` (typer + rich).

User errors (``PfbenchError``) print one line and exit with status 1; nothing is written half-way.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from pfbench import PfbenchError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Patch Forcing benchmark harness.")
data_app = typer.Typer(no_args_is_help=True, help="Datasets: embedded preview, VAE latent stores.")
assets_app = typer.Typer(no_args_is_help=True, help="Shipped evaluation networks and checkpoints.")
app.add_typer(data_app, name="data")
app.add_typer(assets_app, name="assets")
console = Console()
err_console = Console(stderr=True)


@contextmanager
def _kept_on_ctrl_c(kept: Callable[[], str] | None = None) -> Iterator[None]:
    """Ctrl-C inside the block: one line saying what is saved (``kept()``, else the interrupt's own message),
    then exit status 130. Caught here because typer turns a KeyboardInterrupt into a silent exit."""
    try:
        yield
    except KeyboardInterrupt as err:
        if int(os.environ.get("RANK", "0")) == 0:  # under torchrun every rank gets the signal; one line is enough
            what = kept() if kept is not None else (str(err) or "finished work is saved")
            err_console.print(f"[yellow]interrupted[/]: {what}; rerun the same command to resume", highlight=False,
                              soft_wrap=True)
        raise typer.Exit(130) from None


def _threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


@app.command()
def run(
    suite: Annotated[Path, typer.Argument(help="suite YAML, e.g. suites/smoke.yaml")],
    overrides: Annotated[list[str] | None, typer.Argument(help="hydra overrides, e.g. sweep.nfe=[8,16]")] = None,
    results: Annotated[Path, typer.Option(help="results root")] = Path("results"),
    reports: Annotated[Path, typer.Option(help="reports root")] = Path("reports"),
    runs: Annotated[Path, typer.Option(help="training runs / checkpoints root")] = Path("runs"),
    threads: Annotated[int | None, typer.Option(help="torch CPU threads")] = None,
    quiet: Annotated[bool, typer.Option(help="no progress bars")] = False,
) -> None:
    """Run every cell of a suite (resumable: finished cells are skipped); a parity suite runs `pfbench parity`."""
    from pfbench.suite.runner import Runner
    from pfbench.suite.parse import load_suite, suite_kind

    _threads(threads)
    if suite_kind(suite) == "adm_parity":
        _no_overrides(suite, overrides)
        parity(suite, device=None)
        return
    spec = load_suite(suite, overrides)
    runner = Runner(spec, results_root=results, reports_root=reports, runs_root=runs, progress=not quiet)
    with _kept_on_ctrl_c(runner.kept):
        runner.run()


@app.command()
def plan(
    suite: Annotated[Path, typer.Argument(help="suite YAML")],
    overrides: Annotated[list[str] | None, typer.Argument(help="hydra overrides")] = None,
    results: Annotated[Path, typer.Option(help="results root")] = Path("results"),
    runs: Annotated[Path, typer.Option(help="training runs / checkpoints root")] = Path("runs"),
) -> None:
    """Print the cells of a suite and which are already computed (a parity suite: its inputs and numbers)."""
    from rich.table import Table

    from pfbench.results import has_part
    from pfbench.suite.runner import Runner
    from pfbench.suite.parse import load_suite, suite_kind
    from pfbench.suite.parse import plan as make_plan
    from pfbench.suite.validate import check_inputs, validate

    if suite_kind(suite) == "adm_parity":
        _no_overrides(suite, overrides)
        _plan_parity(suite)
        return
    spec = load_suite(suite, overrides)
    validate(spec)
    runner = Runner(spec, results_root=results, runs_root=runs, progress=False)
    table = Table(title=f"suite {spec.name}")
    for col in ("model", "sampler", "nfe", "cfg", "seed", "samples", "forwards/img", "≈FLOPs total", "cached"):
        table.add_column(col)
    cells = make_plan(spec)
    total = 0.0
    for cell in cells:
        model_id = runner.known_model_id(cell.model)
        done = model_id is not None and has_part(runner.results, runner.cell_part(cell, model_id))
        forwards, gflops = runner.estimate(cell)
        total += 0.0 if done else gflops
        label = cell.sampler.name + (f" {cell.sampler.params}" if cell.sampler.params else "")
        cfg = f"{cell.cfg_scale:g}" + (f" in {list(cell.cfg_interval)}" if cell.cfg_interval else "")
        table.add_row(cell.model, label, str(cell.nfe), cfg, str(cell.seed), str(cell.num_samples),
                      str(forwards), _flops(gflops), "yes" if done else "")
    console.print(table)
    console.print(f"estimated compute still to run: ≈{_flops(total)} of network forwards (sampling only, VAE "
                  "decoding not counted; per-token modulation counted once per sample, as with dedup; CFG "
                  "counted on every step even where an interval switches it off)")
    unknown = [n for n in spec.models if runner.known_model_id(n) is None]
    train = [n for n in unknown if spec.models[n].train is not None]
    missing = [n for n in unknown if spec.models[n].train is None]
    console.print(f"{len(cells)} cells; models to train: {', '.join(train) or 'none'}; models whose checkpoint or "
                  f"decoder is not found: {', '.join(missing) or 'none'}")
    try:
        check_inputs(spec)
    except PfbenchError as err:  # what `run` would refuse to start without
        console.print(f"[yellow]run would stop[/]: {escape(str(err))}", highlight=False)


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


def _flops(gflops: float) -> str:
    """GFLOPs as a short human number with an SI unit (e.g. 3.63 EFLOP)."""
    value, units = gflops * 1e9, ("FLOP", "kFLOP", "MFLOP", "GFLOP", "TFLOP", "PFLOP", "EFLOP", "ZFLOP")
    i = 0
    while value >= 1000 and i < len(units) - 1:
        value, i = value / 1000, i + 1
    return f"{value:.3g} {units[i]}"


@app.command()
def train(
    config: Annotated[Path, typer.Argument(help="training YAML (a TrainSpec mapping)")],
    out: Annotated[Path, typer.Option(help="output folder for checkpoints")] = Path("runs/train"),
    overrides: Annotated[list[str] | None, typer.Argument(help="hydra overrides, e.g. steps=2000")] = None,
    no_resume: Annotated[bool, typer.Option(help="start over even if a checkpoint exists")] = False,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads")] = None,
) -> None:
    """Train one model (PF or SiT); resumes from OUT/last.pt when present. Works under torchrun."""
    from pfbench.suite.parse import compose_yaml
    from pfbench.train.loop import spec_from_dict
    from pfbench.train.loop import train as run_training

    _threads(threads)
    spec = spec_from_dict(compose_yaml(config, overrides))
    with _kept_on_ctrl_c():  # the message comes from train(): the step of the checkpoint kept
        result = run_training(spec, out, resume=not no_resume, progress=int(os.environ.get("RANK", "0")) == 0)
    if int(os.environ.get("RANK", "0")) == 0:
        if result.diverged:  # exit 0 all the same: the run finished and its checkpoints are valid files
            console.print(f"[yellow]done, but the loss diverged[/] (see {out / 'log.jsonl'}): {result}")
        else:
            console.print(f"[green]done[/]: {result}")


@app.command()
def report(
    suite: Annotated[str, typer.Argument(help="suite name, or its YAML file (its name: is used)")],
    results: Annotated[Path, typer.Option(help="results root")] = Path("results"),
    reports: Annotated[Path, typer.Option(help="reports root")] = Path("reports"),
) -> None:
    """Write reports/SUITE/index.md and a self-contained index.html from the suite's Parquet results."""
    from pfbench.report.html import report as make_report

    name = suite
    if suite.endswith((".yaml", ".yml")):
        from pfbench.suite.parse import load_suite

        # The results folder is named after the suite's name:, which need not be the file's stem.
        name = load_suite(Path(suite), None).name if Path(suite).is_file() else Path(suite).stem
    md = make_report(name, results_root=results, reports_root=reports)
    console.print(f"wrote {md} and {md.with_name('index.html')}")


@app.command()
def compare(
    a: Annotated[Path, typer.Argument(help="baseline: results folder (results/SUITE) or a .parquet baseline")],
    b: Annotated[Path, typer.Argument(help="candidate: results folder or .parquet")],
    tolerances: Annotated[Path | None, typer.Option(help="YAML: metric or pattern -> {abs, rel, sigma}")] = None,
    markdown: Annotated[Path | None, typer.Option(help="also write the full comparison as Markdown here")] = None,
    allow_missing: Annotated[bool, typer.Option(help="rows of A missing from B do not fail")] = False,
    all_rows: Annotated[bool, typer.Option("--all", help="print every matched row, not only changes")] = False,
) -> None:
    """Compare B against A per metric; exit 1 on a regression beyond tolerance or on rows missing from B."""
    from pfbench.report.compare import compare as run_compare
    from pfbench.report.compare import load_tolerances

    res = run_compare(a, b, load_tolerances(tolerances))
    res.print(console, all_rows=all_rows)
    if markdown is not None:
        markdown.parent.mkdir(parents=True, exist_ok=True)
        markdown.write_text(res.markdown())
    raise typer.Exit(res.exit_code(allow_missing))


@app.command()
def baseline(
    results: Annotated[Path, typer.Argument(help="results folder, e.g. results/smoke")],
    out: Annotated[Path, typer.Argument(help="baseline .parquet to commit, e.g. baselines/smoke.parquet")],
) -> None:
    """Write a committable baseline (match keys, mean, std, n per metric) from a results folder."""
    from pfbench.report.compare import write_baseline

    console.print(f"wrote {write_baseline(results, out)}")


@app.command()
def sample(
    checkpoint: Annotated[str, typer.Argument(help="training checkpoint (.pt) or asset:NAME")],
    out: Annotated[Path, typer.Argument(help="folder for the shards and manifest.json (a rerun resumes)")],
    sampler: Annotated[str, typer.Option(help="registered sampler name")] = "look_ahead",
    nfe: Annotated[int, typer.Option(help="NFE budget; the sampler takes the largest step count that fits")] = 32,
    num_samples: Annotated[int, typer.Option(help="number of samples")] = 1000,
    seed: Annotated[int, typer.Option(help="run seed: sample i depends only on (seed, i)")] = 0,
    batch_size: Annotated[int, typer.Option(help="samples per sampler call")] = 64,
    shard_size: Annotated[int, typer.Option(help="samples per shard")] = 1000,
    cfg_scale: Annotated[float, typer.Option(help="classifier-free guidance weight (1 = off)")] = 1.0,
    ema: Annotated[bool, typer.Option(help="sample the EMA weights")] = True,
    device: Annotated[str, typer.Option(help="cpu or cuda (under torchrun each rank takes cuda:LOCAL_RANK)")] = "cpu",
    threads: Annotated[int | None, typer.Option(help="torch CPU threads")] = None,
    npz: Annotated[Path | None, typer.Option(help="also export an ADM-style .npz (arr_0 NHWC uint8, arr_1 labels)")] = None,
    vae: Annotated[str | None, typer.Option(help="latent model: VAE decoder (sd-vae-ft-ema, folder or file)")] = None,
    layout: Annotated[str | None, typer.Option(help="external checkpoint layout: pf (reference PatchForcingDiT) or sit")] = None,
    preset: Annotated[str | None, typer.Option(help="external checkpoint size, e.g. XL/2 (default: from the file)")] = None,
    override: Annotated[list[str] | None, typer.Option(help="external checkpoint DiTConfig field KEY=VALUE, as a "
                                                           "suite's overrides: (repeatable), e.g. num_classes=10")] = None,
) -> None:
    """Sample a checkpoint into uint8 shards; the same images on 1 or N processes (torchrun --nproc_per_node N)."""
    import torch

    from pfbench.adapters.cfg import CFG
    from pfbench.adapters.dit import DiTAdapter
    from pfbench.train.checkpoints import build_model_from_checkpoint, load_checkpoint
    from pfbench.registry import SAMPLERS
    from pfbench.sample.shards import write_shards_distributed
    from pfbench.suite.models import resolve_checkpoint

    _threads(threads)
    rank = int(os.environ.get("RANK", "0"))
    where = torch.device(f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if device == "cuda" else device)
    path, sha = resolve_checkpoint(checkpoint)
    if layout is None and (preset is not None or override):
        raise PfbenchError("sample: --preset/--override describe an external checkpoint and need --layout (pf or sit)")
    sizes: dict[str, Any] = {}
    if layout is not None:
        from pfbench.adapters.external import external_adapter
        from pfbench.adapters.external_config import parse_overrides

        sizes = parse_overrides(override or [])
        model = external_adapter(path, layout, preset, **sizes)
        model.net.to(where)
    else:
        model = DiTAdapter(build_model_from_checkpoint(load_checkpoint(path), use_ema=ema).to(where))
    guided = model if cfg_scale == 1.0 else CFG(model, cfg_scale)
    chosen = SAMPLERS.get(sampler)(steps=1).with_budget(nfe)
    config = {"checkpoint_sha256": sha, "ema": ema, "cfg_scale": cfg_scale, "device": where.type,
              "layout": layout, "preset": preset}
    if sizes:
        config["overrides"] = sizes
    decode = None
    if vae is not None:
        from pfbench.data.vae import load_vae

        decoder = load_vae(vae, where)
        decode, config["decoder"] = decoder.decode, f"{vae}@{decoder.sha256[:16]}"
    def kept() -> str:  # finished shards have a record each (pfbench.sample.shards.RECORD)
        return f"{len(list(out.glob('shard_*.json')))} of {-(-num_samples // shard_size)} shards are saved in {out}"

    with _kept_on_ctrl_c(kept):
        manifest = write_shards_distributed(out, guided, chosen, n=num_samples, seed=seed, batch_size=batch_size,
                                            shard_size=shard_size, config=config, decode=decode, device=where,
                                            progress=rank == 0)
    if rank == 0:
        console.print(f"[green]done[/]: {manifest['totals']} -> {out}")
        if npz is not None:
            from pfbench.sample.shards import export_adm_npz

            console.print(f"wrote {export_adm_npz(out, npz)}")


@app.command()
def bench(
    name: Annotated[str, typer.Argument(help="overhead | dedup | gpu-throughput")],
    options: Annotated[list[str] | None, typer.Argument(help="key=value options, e.g. preset=B/2 batch=2 nfe=4")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="also write the result dict as JSON")] = None,
) -> None:
    """Measure sampling cost as ratios: sampler overhead, modulation dedup, PF vs SiT throughput."""
    import json

    from pfbench.bench.sampling import parse_options, run_bench

    result = run_bench(name, **parse_options(name, options or []))
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result, indent=1, sort_keys=True))


@app.command("eval")
def eval_(
    samples: Annotated[Path, typer.Argument(help="shard folder, image folder or ADM .npz")],
    ref: Annotated[str, typer.Option(help="ADM reference .npz, image/shard folder, 'embedded', or 'none'")] = "embedded",
    metrics: Annotated[str, typer.Option(help="comma-separated metric names")] = "fd_embedded,is_embedded,class_acc,pr_embedded,clip_embedded",
    batch_size: Annotated[int, typer.Option(help="images per batch")] = 250,
    device: Annotated[str, typer.Option(help="cpu or cuda")] = "cpu",
    weights: Annotated[Path | None, typer.Option(help="Inception weights file/folder (offline)")] = None,
    ref_size: Annotated[int, typer.Option(help="images for --ref embedded")] = 10_000,
    resize: Annotated[str, typer.Option(help="Inception resize: tf1x (torch-fidelity) or clean (clean-fid)")] = "tf1x",
    classes: Annotated[str, typer.Option(help="class names for clip_score prompts: embedded or imagenet")] = "embedded",
    clip_weights: Annotated[Path | None, typer.Option(help="CLIP ViT-L/14 file for clip_score (offline)")] = None,
    dinov2_weights: Annotated[Path | None, typer.Option(help="DINOv2 ViT-L/14 file for fd_dinov2 (offline)")] = None,
    verify: Annotated[bool, typer.Option("--verify/--no-verify", help="refuse an Inception file that is not the "
                                         "official one (--no-verify: accept it; marked non-standard)")] = True,
    kid_subset_size: Annotated[int, typer.Option(help="images per KID subset (<= samples and reference)")] = 1000,
    is_order: Annotated[str, typer.Option(help="IS splits over samples in file order (ADM evaluator) or torch-fidelity's "
                                          "shuffle: file | shuffle")] = "file",
) -> None:
    """Score samples made by pfbench or any other codebase (shards, image folder, ADM .npz)."""
    from pfbench.data import class_names
    from pfbench.evaluate.metric_pass import evaluate, metric_args

    names = [m.strip() for m in metrics.split(",") if m.strip()]
    result = evaluate(samples, None if ref.lower() == "none" else ref, names, batch_size=batch_size, device=device,
                      weights=weights, ref_size=ref_size, resize=resize, clip_weights=clip_weights,
                      dinov2_weights=dinov2_weights, class_names=class_names(classes), verify_weights=verify,
                      kid_subset_size=kid_subset_size, is_order=is_order)
    for key, value in result.items():
        console.print(f"{key}\t{value:.6g}")
    args = metric_args(names, resize=resize, weights=weights, verify_weights=verify, kid_subset_size=kid_subset_size,
                       is_order=is_order)
    if "inception_sha256" in args:
        console.print(f"inception_sha256\t{args['inception_sha256']}")
    if args.get("nonstandard"):
        console.print(f"[yellow]non-standard Inception weights: {', '.join(args['nonstandard'])} are not comparable "
                      "with published numbers[/yellow]")


@data_app.command("preview")
def data_preview(
    out: Annotated[Path, typer.Option(help="PNG path")] = Path("reports/data/preview.png"),
    resolution: Annotated[int, typer.Option(help="image side in pixels")] = 16,
    n: Annotated[int, typer.Option(help="number of images")] = 64,
    split: Annotated[str, typer.Option(help="train or test")] = "train",
    seed: Annotated[int, typer.Option(help="dataset seed")] = 0,
    show_hard: Annotated[bool, typer.Option(help="also show the hard-pixel masks")] = False,
) -> None:
    """Write a PNG grid of embedded-dataset samples with their labels."""
    from pfbench.data.embedded import EmbeddedSpec
    from pfbench.data.preview import preview

    path = preview(EmbeddedSpec(resolution=resolution, split=split, size=max(n, 1), seed=seed), out, n=n,
                   show_hard=show_hard)
    console.print(f"wrote {path}")


@data_app.command("encode")
def data_encode(
    src: Annotated[Path, typer.Argument(help="class-per-folder images, e.g. ImageNet's train/ (synset folders)")],
    out: Annotated[Path, typer.Argument(help="latent store folder (a rerun resumes an interrupted encode)")],
    vae: Annotated[str, typer.Option(help="VAE: sd-vae-ft-ema | sd-vae-ft-mse (resolved offline), folder or file")] = "sd-vae-ft-ema",
    resolution: Annotated[int, typer.Option(help="ADM centre-crop size in pixels")] = 256,
    batch_size: Annotated[int, typer.Option(help="images per encoder call")] = 64,
    keep_images: Annotated[bool, typer.Option(help="also store the uint8 crops (REPA training needs them)")] = False,
    limit: Annotated[int | None, typer.Option(help="encode only the first N images (sorted order)")] = None,
    device: Annotated[str, typer.Option(help="cpu or cuda")] = "cpu",
) -> None:
    """Encode an image folder once into VAE posterior moments for training latent models (data.name: latents)."""
    from pfbench.data.latents import encode_folder
    from pfbench.data.vae import load_vae

    path = encode_folder(src, out, load_vae(vae, device), resolution=resolution, batch_size=batch_size,
                         keep_images=keep_images, limit=limit, progress=True)
    console.print(f"wrote {path}")


@assets_app.command("build")
def assets_build(
    out: Annotated[Path | None, typer.Option(help="folder for the built files (default: the pfbench cache)")] = None,
    resolution: Annotated[int, typer.Option(help="dataset resolution")] = 16,
    seed: Annotated[int, typer.Option(help="training seed")] = 0,
) -> None:
    """Rebuild the embedded evaluation network and tiny CLIP bit-for-bit and print checksums."""
    from pfbench.assets import cache_root
    from pfbench.metrics.embedded import build_assets
    from pfbench.encoders.tiny_clip import build_tiny_clip

    folder = out or cache_root() / "assets"
    built = build_assets(folder, resolution=resolution, seed=seed)
    built |= build_tiny_clip(folder, resolution=resolution, seed=seed)
    for name, sha in built.items():
        console.print(f"{sha}  {name}")


@app.command()
def figures(
    results: Annotated[list[Path], typer.Argument(help="results folders (results/SUITE) or .parquet files; rows are pooled")],
    out: Annotated[Path, typer.Option(help="output folder for tables (.md/.tex) and figures (.png/.pdf)")] = Path("reports/figures"),
) -> None:
    """Regenerate paper tables and figures (main table, NFE scaling, sampler and training-sampler ablations)."""
    from pfbench.report.paper import paper_figures

    for path in paper_figures(list(results), out):
        console.print(f"wrote {path}")


@app.command()
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


@assets_app.command("export")
def assets_export(
    src: Annotated[Path, typer.Argument(help="training checkpoint (.pt)")],
    dst: Annotated[Path, typer.Argument(help="inference-only copy to write (EMA weights + configs)")],
) -> None:
    """Write a small inference-only checkpoint (what pfbench ships) and print its sha256."""
    from pfbench.train.checkpoints import export_weights
    from pfbench.suite.models import file_sha256

    out = export_weights(src, dst)
    console.print(f"{file_sha256(out)}  {out}")


def main() -> None:
    """Console entry point: one-line errors, non-zero exit."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        app()
    except PfbenchError as err:
        # escape: messages hold key paths and lists ("grid: [{models: [m], ...}]") that rich would read as markup
        err_console.print(f"[red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]: finished work is saved; run the same command to resume")
        sys.exit(130)
    except OSError as err:
        err_console.print(f"[red]error:[/] {err.strerror or err}: {err.filename or ''}", soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
