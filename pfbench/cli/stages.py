"""``pfbench train|sample|eval|bench|data|assets``: one pipeline stage at a time, outside a suite.

Heavy imports stay inside the commands, so ``pfbench --help`` and each command's start stay fast.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from pfbench import PfbenchError
from pfbench.cli.common import console, kept_on_ctrl_c, set_threads


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

    set_threads(threads)
    spec = spec_from_dict(compose_yaml(config, overrides))
    with kept_on_ctrl_c():  # the message comes from train(): the step of the checkpoint kept
        result = run_training(spec, out, resume=not no_resume, progress=int(os.environ.get("RANK", "0")) == 0)
    if int(os.environ.get("RANK", "0")) == 0:
        if result.diverged:  # exit 0 all the same: the run finished and its checkpoints are valid files
            console.print(f"[yellow]done, but the loss diverged[/] (see {out / 'log.jsonl'}): {result}")
        else:
            console.print(f"[green]done[/]: {result}")


def sample(
    checkpoint: Annotated[str, typer.Argument(help="training checkpoint (.pt) or asset:NAME")],
    out: Annotated[Path, typer.Argument(help="folder for the shards and manifest.json (a rerun resumes)")],
    sampler: Annotated[str, typer.Option(help="registered sampler name")] = "look_ahead",
    nfe: Annotated[int | None, typer.Option(help="NFE budget; the sampler takes the largest step count that fits "
                                                 "(default 32 unless --steps is given)")] = None,
    steps: Annotated[int | None, typer.Option("--steps", "--num-sampling-steps",
                                              help="fixed outer step count N (t_k = k/N, the reference scripts' "
                                                   "convention; dual_loop then makes N*n_inner calls)")] = None,
    param: Annotated[list[str] | None, typer.Option(help="sampler parameter KEY=VALUE (repeatable), e.g. p=0.4, "
                                                         "r=1.4; the reference's names too (context_t_ratio=1.4)")] = None,
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
    latents: Annotated[bool, typer.Option(help="latent model without --vae: write the latents themselves (uint8 of "
                                               "clamp(z, -1, 1), not images)")] = False,
    layout: Annotated[str | None, typer.Option(help="external checkpoint layout: pf (reference PatchForcingDiT) or sit")] = None,
    preset: Annotated[str | None, typer.Option(help="external checkpoint size, e.g. XL/2 (default: from the file)")] = None,
    override: Annotated[list[str] | None, typer.Option(help="external checkpoint DiTConfig field KEY=VALUE, as a "
                                                           "suite's overrides: (repeatable), e.g. num_classes=10")] = None,
    prompt: Annotated[list[str] | None, typer.Option(help="text-to-image checkpoint: a prompt (repeatable); sample i "
                                                          "gets prompt i mod the number of prompts")] = None,
    prompts: Annotated[Path | None, typer.Option(help="text-to-image checkpoint: a prompt file (prompts.txt, one per "
                                                      "line, or JSONL)")] = None,
) -> None:
    """Sample a checkpoint into uint8 shards; the same images on 1 or N processes (torchrun --nproc_per_node N).

    A text-to-image checkpoint samples from --prompt/--prompts (its text encoder is the one it was trained with)."""
    import torch

    from pfbench.registry import ADAPTERS, SAMPLERS
    from pfbench.sample.distributed import write_shards_distributed
    from pfbench.sample.params import parse_params
    from pfbench.suite.sources import resolve_checkpoint

    set_threads(threads)
    if nfe is not None and steps is not None:
        raise PfbenchError("sample: give --nfe (a budget of model calls) or --steps (a fixed outer step count), not both")
    if latents and vae is not None:
        raise PfbenchError("sample: --latents writes undecoded latents; it does not go with --vae")
    rank = int(os.environ.get("RANK", "0"))
    where = torch.device(f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if device == "cuda" else device)
    path, sha = resolve_checkpoint(checkpoint)
    if layout is None and (preset is not None or override):
        raise PfbenchError("sample: --preset/--override describe an external checkpoint and need --layout (pf or sit)")
    texts = _prompts(prompt, prompts)
    if layout is not None and texts is not None:
        raise PfbenchError("sample: --prompt/--prompts are for pfbench text-to-image checkpoints, not --layout files")
    sizes: dict[str, Any] = {}
    if layout is not None:
        from pfbench.adapters.external_config import parse_overrides

        sizes = parse_overrides(override or [])
        model = ADAPTERS.get("external")(path, layout, preset, **sizes)
        model.net.to(where)
    else:
        model = _checkpoint_adapter(path, ema, where, texts is not None, checkpoint)
    channels = model.input_shape[0]
    if channels != 3 and vae is None and not latents:
        raise PfbenchError(f"sample: {checkpoint} is a latent model ({channels}-channel output, not RGB images); give "
                           "--vae (e.g. sd-vae-ft-ema) to decode them, or --latents to write the latents as they are")
    guided = model if cfg_scale == 1.0 else ADAPTERS.get("cfg")(model, cfg_scale)
    cls = SAMPLERS.get(sampler)
    params = parse_params(cls, param or [], model.patch_size)
    chosen = cls.from_steps(params, steps) if steps is not None else cls.from_budget(params, 32 if nfe is None else nfe)
    config = {"checkpoint_sha256": sha, "ema": ema, "cfg_scale": cfg_scale, "device": where.type,
              "layout": layout, "preset": preset, "sampler_params": params, "steps": chosen.steps,
              "nfe_budget": None if steps is not None else (32 if nfe is None else nfe)}
    if latents:
        config["output"] = f"latents: {channels}-channel model output as uint8 of clamp(z, -1, 1), not images"
    if sizes:
        config["overrides"] = sizes
    if texts is not None:  # their hash joins the run's identity in write_shards_distributed (config.prompts)
        config |= {"prompt_file": str(prompts)} if prompts is not None else {"prompt_texts": list(texts.texts)}
    decode = None
    if vae is not None:
        from pfbench.data.vae import load_vae

        decoder = load_vae(vae, where)
        decode, config["decoder"] = decoder.decode, f"{vae}@{decoder.sha256[:16]}"
    def kept() -> str:  # finished shards have a record each (pfbench.sample.distributed.RECORD)
        return f"{len(list(out.glob('shard_*.json')))} of {-(-num_samples // shard_size)} shards are saved in {out}"

    with kept_on_ctrl_c(kept):
        manifest = write_shards_distributed(out, guided, chosen, n=num_samples, seed=seed, batch_size=batch_size,
                                            shard_size=shard_size, config=config, decode=decode, device=where,
                                            progress=rank == 0, prompts=texts)
    if rank == 0:
        console.print(f"[green]done[/]: {manifest['totals']} -> {out}")
        if npz is not None:
            from pfbench.sample.shards import export_adm_npz

            console.print(f"wrote {export_adm_npz(out, npz)}")


def _prompts(prompt: list[str] | None, prompts: Path | None) -> Any:
    """The ``Prompts`` of ``--prompt``/``--prompts`` (read by ``pfbench.data.prompts``), or None."""
    from pfbench.data.prompts import read_prompts
    from pfbench.sample.generate import Prompts

    if prompt and prompts is not None:
        raise PfbenchError("sample: give --prompt (repeatable) or --prompts FILE, not both")
    if prompts is not None:
        return Prompts(tuple(read_prompts(prompts)))
    return Prompts(tuple(prompt)) if prompt else None


def _checkpoint_adapter(path: Path, ema: bool, where: Any, prompted: bool, name: str) -> Any:
    """A pfbench checkpoint as samplers see it: the ``dit`` adapter, or for a text-to-image network the ``t2i``
    adapter with the text encoder of its training config (then prompts are required)."""
    from pfbench.encoders.text import load_text_encoder
    from pfbench.nets import T2INet
    from pfbench.registry import ADAPTERS
    from pfbench.train.checkpoints import build_model_from_checkpoint, load_checkpoint

    ckpt = load_checkpoint(path)
    net = build_model_from_checkpoint(ckpt, use_ema=ema).to(where)
    if not isinstance(net, T2INet):
        if prompted:
            raise PfbenchError(f"sample: {name} is a class-conditional model; --prompt/--prompts are for "
                               "text-to-image checkpoints")
        return ADAPTERS.get("dit")(net)
    if not prompted:
        raise PfbenchError(f"sample: {name} is a text-to-image model; give --prompt TEXT (repeatable) or --prompts "
                           "FILE (prompts.txt, one per line, or JSONL)")
    text = ckpt.config.get("text")
    if not isinstance(text, dict) or not text.get("encoder"):
        raise PfbenchError(f"sample: {name}: a text-to-image network without a text encoder in its config")
    return ADAPTERS.get("t2i")(net, load_text_encoder(str(text["encoder"]), where, text.get("weights")))


def bench(
    name: Annotated[str, typer.Argument(help="overhead | dedup | gpu-throughput | train-throughput | fid-cell | fd | features")],
    options: Annotated[list[str] | None, typer.Argument(help="key=value options, e.g. preset=B/2 batch=2 nfe=4")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="also write the result dict as JSON")] = None,
) -> None:
    """Measure sampling cost as ratios: sampler overhead, modulation dedup, PF vs SiT throughput."""
    import json

    from pfbench.bench.run import parse_options, run_bench
    from pfbench.io import atomic_write_text

    result = run_bench(name, **parse_options(name, options or []))
    if json_out is not None:
        atomic_write_text(json_out, json.dumps(result, indent=1, sort_keys=True))


def eval_(
    samples: Annotated[Path, typer.Argument(help="shard folder, image folder or ADM .npz")],
    ref: Annotated[str, typer.Option(help="ADM reference .npz, image/shard folder, 'embedded', or 'none'")] = "embedded",
    metrics: Annotated[str, typer.Option(help="comma-separated metric names")] = "fd_embedded,is_embedded,class_acc,pr_embedded,clip_embedded",
    batch_size: Annotated[int, typer.Option(help="images per batch")] = 250,
    device: Annotated[str, typer.Option(help="cpu or cuda")] = "cpu",
    weights: Annotated[list[str] | None, typer.Option(help="NETWORK=PATH (repeatable): a feature network's weights "
                                                      "file/folder, e.g. inception=w.pth; a bare PATH is Inception's")] = None,
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
    from pfbench.encoders.base import FeatureContext
    from pfbench.evaluate.metric_pass import evaluate, weights_option
    from pfbench.metrics.options import metric_args

    names = [m.strip() for m in metrics.split(",") if m.strip()]
    given = weights_option(weights or [], {"clip": clip_weights, "dinov2": dinov2_weights})
    ctx = FeatureContext(device=device, batch_size=batch_size, weights=given, verify=verify, resize=resize)
    result = evaluate(samples, None if ref.lower() == "none" else ref, names, ctx, ref_size=ref_size,
                      class_names=class_names(classes), kid_subset_size=kid_subset_size, is_order=is_order)
    for key, value in result.items():
        console.print(f"{key}\t{value:.6g}")
    args = metric_args(names, resize=resize, weights=given.get("inception"), verify_weights=verify,
                       kid_subset_size=kid_subset_size, is_order=is_order)
    if "inception_sha256" in args:
        console.print(f"inception_sha256\t{args['inception_sha256']}")
    if args.get("nonstandard"):
        console.print(f"[yellow]non-standard Inception weights: {', '.join(args['nonstandard'])} are not comparable "
                      "with published numbers[/yellow]")


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


def data_encode(
    src: Annotated[Path, typer.Argument(help="class-per-folder images, e.g. ImageNet's train/ (synset folders), or "
                                        "images with a captions.jsonl (text-to-image)")],
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


def assets_build(
    out: Annotated[Path | None, typer.Option(help="folder for the built files (default: the pfbench cache)")] = None,
    resolution: Annotated[int, typer.Option(help="dataset resolution")] = 16,
    seed: Annotated[int, typer.Option(help="training seed")] = 0,
) -> None:
    """Rebuild the embedded evaluation network, tiny CLIP, attribute judge and tiny text encoder bit-for-bit and print
    checksums."""
    from pfbench.assets import cache_root
    from pfbench.encoders.attributes import build_attr_net
    from pfbench.encoders.embedded import build_assets
    from pfbench.encoders.tiny_clip import build_tiny_clip
    from pfbench.encoders.tiny_text import build_tiny_text

    folder = out or cache_root() / "assets"
    built = build_assets(folder, resolution=resolution, seed=seed)
    built |= build_tiny_clip(folder, resolution=resolution, seed=seed)
    built |= build_attr_net(folder, resolution=resolution, seed=seed)
    built |= build_tiny_text(folder, seed=seed)  # word-level: the same file at every resolution
    for name, sha in built.items():
        console.print(f"{sha}  {name}")


def assets_export(
    src: Annotated[Path, typer.Argument(help="training checkpoint (.pt)")],
    dst: Annotated[Path, typer.Argument(help="inference-only copy to write (EMA weights + configs)")],
) -> None:
    """Write a small inference-only checkpoint (what pfbench ships) and print its sha256."""
    from pfbench.io import sha256_file
    from pfbench.train.checkpoints import export_weights

    out = export_weights(src, dst)
    console.print(f"{sha256_file(out)}  {out}")


def fetch(
    names: Annotated[list[str], typer.Argument(help="what to fetch: imagenet (everything suites/imagenet.yaml needs), "
                                                     "pft-b, pft-xl, sd-vae-ft-ema, inception, adm-ref, adm-samples, "
                                                     "adm-parity")],
) -> None:
    """Download released checkpoints, the SD-VAE, metric weights and reference batches into $PFBENCH_CHECKPOINTS,
    $PFBENCH_WEIGHTS and $PFBENCH_DATA (defaults ./checkpoints, ./weights, ./data): resumable, verified against
    the published sha256, else recorded in weights.lock so a later run notices a changed file."""
    from pfbench.fetch import fetch as fetch_all

    with kept_on_ctrl_c(lambda: "a partial download stays as <file>.part"):
        for item, path, what in fetch_all(names, console):
            console.print(f"{item.name}: {path} ({what})", highlight=False)
