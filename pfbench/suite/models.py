"""The models of a suite: resolve checkpoints, train the ones that need it, know their ids, load them.

``Runner`` owns one ``SuiteModels`` and delegates its model methods to it. Training runs live under
``runs/<suite>/<model>-<hash of the training spec>`` and resume there, so a killed run loses no training.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from pfbench import PfbenchError
from pfbench.adapters.base import Adapter, check_adapter
from pfbench.adapters.external import external_config, load_external
from pfbench.assets import CHECKSUMS, asset_path
from pfbench.data.vae import load_vae, vae_weights_file
from pfbench.io import content_hash, sha256_file
from pfbench.locks import Lock, hold_lock, lock_path
from pfbench.nets import DiT, T2INet, build_net, config_from_dict, net_config
from pfbench.registry import ADAPTERS
from pfbench.suite.spec import ModelSpec, SuiteSpec
from pfbench.suite.workers import Worker, parent_alive, run_workers
from pfbench.train.checkpoints import build_model_from_checkpoint, load_checkpoint, weights_sha256
from pfbench.train.loop import train
from pfbench.train.spec import spec_from_dict


def resolve_checkpoint(ref: str) -> tuple[Path, str]:
    """A checkpoint path, or ``asset:NAME`` for a checkpoint shipped in ``pfbench/assets`` (checksum-verified).

    Returns:
        (path, sha256 of the file).
    """
    if not ref.startswith("asset:"):
        path = Path(ref)
        if not path.is_file():
            raise PfbenchError(f"checkpoint {path} not found: check the path, or train one with `pfbench train`")
        return path, sha256_file(path)
    name = ref.removeprefix("asset:")
    path = asset_path(name, "pfbench train suites/recipes/<recipe>.yaml (see README, Shipped checkpoints)")
    sha = sha256_file(path)
    want = CHECKSUMS.get(name)
    if want is not None and sha != want:
        raise PfbenchError(f"shipped checkpoint {path} has sha256 {sha[:16]}…, expected {want[:16]}…: the file is "
                           "corrupt; restore it from the repository")
    return path, sha


@dataclass
class LoadedModel:
    """A suite model ready to sample: its network (on ``eval.device``) or plugin adapter, ids and training facts."""

    name: str
    model_id: str  # sha256 of a given checkpoint file; of the weights of one trained in the suite
    # (``weights_sha256``: retraining elsewhere finds the same cells); a plugin model: hash of adapter and params
    net: DiT | T2INet | None  # pfbench's network; None for a model built by a plugin adapter (``plugin``)
    checkpoints: list[tuple[int, Path]]  # (step, path) of kept intermediate checkpoints, for learning curves
    train_img_per_s: float | None = None
    train_timesteps: str | None = None  # training timestep sampler (docs/protocol.md §4), for training-sampler ablations
    decode: Any = None  # latent models: latents -> [-1, 1] pixels (the VAE decoder)
    decoder: str | None = None  # "<vae>@<sha256[:16]>": part of every cell key, since it changes the pixels
    plugin: Adapter | None = None  # the model a registered adapter factory built (``ModelSpec.adapter``)
    text_encoder: Any = None  # text-to-image models: the frozen text encoder (``pfbench.encoders.text``)
    text_id: str | None = None  # "text:<hash>" of the encoder's fingerprint and the suite's prompts (cell keys)
    train_config: dict[str, Any] | None = None  # the checkpoint's training config (a pfbench checkpoint)

    def adapter(self) -> Adapter:
        """The model as samplers see it, unguided: the plugin's adapter, or the ``dit`` / ``t2i`` adapter over
        ``net`` (a fresh one: its text cache lives as long as one cell)."""
        if self.plugin is not None:
            return self.plugin
        assert self.net is not None, "a LoadedModel has a net or a plugin"
        if isinstance(self.net, T2INet):
            return ADAPTERS.get("t2i")(self.net, self.text_encoder)  # type: ignore[no-any-return]
        return ADAPTERS.get("dit")(self.net)  # type: ignore[no-any-return]

    @property
    def t2i(self) -> bool:
        """A text-to-image model (its cells are conditioned on the suite's prompts)."""
        return isinstance(self.net, T2INet)

    @property
    def key_id(self) -> str:
        """What identifies the pixels this model makes: the weights and, for latent models, the decoder; for
        text-to-image models also the text encoder and the prompts."""
        out = self.model_id if self.decoder is None else f"{self.model_id}+{self.decoder}"
        return out if self.text_id is None else f"{out}+{self.text_id}"


class SuiteModels:
    """Trains, identifies and loads the models of one suite.

    Args:
        spec: The suite.
        runs: Folder of this suite's training runs (``runs/<suite>``).
        progress: Print what is trained and show progress bars.
        console: Where progress goes.
    """

    def __init__(self, spec: SuiteSpec, runs: Path, progress: bool, console: Console) -> None:
        self.spec = spec
        self.runs = runs
        self.progress = progress
        self.console = console
        self.speeds: dict[str, float] = {}  # training img/s per model, from the last ``train_all``
        self.stopped: dict[str, str] = {}  # model -> what its interrupted training kept (Ctrl-C during train_all)

    def train_dir(self, name: str, model: ModelSpec) -> Path:
        assert model.train is not None
        return self.runs / f"{name}-{content_hash(spec_from_dict(model.train).to_dict())}"

    def net_config(self, name: str) -> Any:
        """The network config of a suite model without loading weights where possible (None: a plugin model)."""
        model = self.spec.models[name]
        if model.adapter != "dit":
            return None
        if model.train is not None:
            return spec_from_dict(model.train).net_config()
        if model.layout is not None and model.preset is not None:
            return net_config(model.preset, "pf" if model.layout == "pf" else "sit", **model.overrides)
        if model.layout is not None:  # size from the file's embedded config or tensor shapes
            return external_config(resolve_checkpoint(model.checkpoint or "")[0], model.layout, **model.overrides)
        return config_from_dict(load_checkpoint(resolve_checkpoint(model.checkpoint or "")[0]).net_config)

    def cost_adapter(self, name: str) -> Adapter:
        """The model as the cost accounting sees it, without loading weights: the ``dit`` adapter over a
        meta-device network of its config (no memory, no init cost), or the plugin model itself."""
        model = self.spec.models[name]
        if model.adapter != "dit":
            return self._plugin(name, model)
        cfg = self.net_config(name)  # outside the meta context: reading a config may run real tensor code
        with torch.device("meta"):
            net = build_net(cfg)
        if isinstance(net, T2INet):
            return ADAPTERS.get("t2i")(net, self.text_encoder(self.text_spec(name)))  # type: ignore[no-any-return]
        return ADAPTERS.get("dit")(net)  # type: ignore[no-any-return]

    def text_spec(self, name: str, config: dict[str, Any] | None = None) -> dict[str, Any]:
        """The ``text`` section (encoder, weights) of a text-to-image model's training config (its recipe, or the
        checkpoint's stored ``config``)."""
        model = self.spec.models[name]
        if config is None:
            if model.train is not None:
                config = spec_from_dict(model.train).to_dict()
            else:
                config = load_checkpoint(resolve_checkpoint(model.checkpoint or "")[0]).config
        text = config.get("text")
        if not isinstance(text, dict):
            raise PfbenchError(f"models.{name}: a text-to-image network without a text encoder in its config")
        return text

    def text_id(self, encoder: Any) -> str:
        """``"text:<hash>"`` of a text encoder's fingerprint and the suite's prompts: what a text-to-image cell's
        pixels depend on besides the weights."""
        from pfbench.suite.prompts import prompts_id, suite_prompts

        return "text:" + content_hash([encoder.fingerprint(), prompts_id(suite_prompts(self.spec))])[:16]

    def text_encoder(self, text: dict[str, Any]) -> Any:
        """The frozen text encoder of a ``text`` section, loaded once per suite run on ``eval.device``."""
        from pfbench.encoders.text import load_text_encoder

        key = (text.get("encoder"), text.get("weights"))
        if not hasattr(self, "_encoders"):
            self._encoders: dict[tuple[Any, Any], Any] = {}
        if key not in self._encoders:
            self._encoders[key] = load_text_encoder(str(key[0]), self.spec.eval.device, key[1])
        return self._encoders[key]

    def _plugin(self, name: str, model: ModelSpec) -> Adapter:
        """Builds a plugin model: ``ADAPTERS[model.adapter](**model.params)`` (plus ``device=eval.device`` when the
        factory takes a device and params do not set it), checked against the protocol."""
        where = f"models.{name} (adapter {model.adapter!r})"
        factory = ADAPTERS.get(model.adapter)
        kwargs = dict(model.params)
        if "device" not in kwargs and "device" in inspect.signature(factory).parameters:
            kwargs["device"] = self.spec.eval.device  # where the suite samples, unless params say otherwise
        try:
            built = factory(**kwargs)
        except TypeError as err:
            raise PfbenchError(f"{where}: bad params {model.params}: {err}") from None
        return check_adapter(built, where)

    def known_model_id(self, name: str) -> str | None:
        """``LoadedModel.key_id`` if it can be known without loading: the weights exist already (shipped/given
        checkpoint, or finished training) and so does a latent model's decoder."""
        model = self.spec.models[name]
        try:
            weights = self._known_weights_id(name, model)
            decoder = self.decoder_id(model)
        except PfbenchError:
            return None
        if weights is None:
            return None
        out = weights if decoder is None else f"{weights}+{decoder}"
        if model.adapter == "dit" and "text_dim" in dataclasses.asdict(self.net_config(name)):
            out += "+" + self.text_id(self.text_encoder(self.text_spec(name)))
        return out

    def _known_weights_id(self, name: str, model: ModelSpec) -> str | None:
        if model.adapter != "dit":
            return plugin_model_id(model)
        if model.checkpoint is not None:
            return resolve_checkpoint(model.checkpoint)[1]
        last = self.train_dir(name, model) / "last.pt"
        if not last.is_file():
            return None
        ckpt = load_checkpoint(last)
        return weights_sha256(ckpt) if ckpt.step >= spec_from_dict(model.train or {}).steps else None

    def train_all(self) -> dict[str, float]:
        """Trains every suite model that needs it, concurrently (one process per model, threads split).

        Small networks scale badly over threads on few cores, so separate processes make better use of the
        machine than one process after another; they die with this process and stop within seconds on Ctrl-C
        (``pfbench.suite.workers``), keeping their last checkpoint (said in ``stopped``). Returns training img/s
        per model (also kept in ``speeds``); a model trained to the end earlier gets the speed in its log.
        """
        try:
            self.speeds = self._train_all()
        except KeyboardInterrupt as err:
            self.stopped = dict(getattr(err, "stopped", {}))
            raise
        return self.speeds

    def _train_all(self) -> dict[str, float]:
        todo = {n: m for n, m in self.spec.models.items() if m.train is not None}
        if not todo:
            return {}
        cores = max(1, torch.get_num_threads())
        workers = max(1, min(len(todo), cores)) if self.spec.eval.parallel_train else 1
        threads = max(1, cores // workers)
        jobs = {n: (spec_from_dict(m.train or {}), self.train_dir(n, m)) for n, m in todo.items()}
        if self.progress:
            for n, (s, out) in jobs.items():
                self.console.print(f"[bold]train[/] {n}: {s.kind} {s.model}, {s.steps} steps x {s.batch_size} "
                                   f"-> {out}")
        speeds: dict[str, float] = {}
        if workers == 1:
            for n, (s, out) in jobs.items():
                try:
                    speeds[n] = _train_job(s.to_dict(), str(out), threads, self.progress)
                except KeyboardInterrupt as err:
                    raise _Interrupted({n: str(err) or "stopped before its training began"}) from None
            return speeds
        calls = {n: (_train_job, (s.to_dict(), str(out), threads, False, os.getpid())) for n, (s, out) in jobs.items()}
        watch = _TrainingBars({n: (s.steps, out) for n, (s, out) in jobs.items()}, self.console) if self.progress \
            else None
        try:
            done = run_workers(calls, watch, max_parallel=workers)  # at most one worker per core at a time
            return {n: float(v) for n, v in done.items()}
        finally:
            if watch is not None:
                watch.close()

    def decoder_id(self, model: ModelSpec) -> str | None:
        """``"<vae>@<sha256[:16]>"`` of a latent model's decoder (hashes the file, does not load it)."""
        if model.vae is None:
            return None
        return f"{model.vae}@{sha256_file(vae_weights_file(model.vae))[:16]}"

    def load_model(self, name: str, model: ModelSpec) -> LoadedModel:
        lm = self._load_net(name, model)
        if lm.net is not None:
            lm.net = lm.net.to(self.spec.eval.device)
        if isinstance(lm.net, T2INet):
            lm.text_encoder = self.text_encoder(self.text_spec(name, lm.train_config))
            lm.text_id = self.text_id(lm.text_encoder)
        if model.vae is not None:
            vae = load_vae(model.vae, self.spec.eval.device)
            lm.decode, lm.decoder = vae.decode, f"{model.vae}@{vae.sha256[:16]}"
        return lm

    def _load_net(self, name: str, model: ModelSpec) -> LoadedModel:
        if model.adapter != "dit":
            return LoadedModel(name, plugin_model_id(model), None, [], plugin=self._plugin(name, model))
        if model.checkpoint is not None and model.layout is not None:
            path, sha = resolve_checkpoint(model.checkpoint)
            return LoadedModel(name, sha, load_external(path, model.layout, model.preset, **model.overrides), [])
        if model.checkpoint is not None:
            path, sha = resolve_checkpoint(model.checkpoint)
            ckpt = load_checkpoint(path)
            net = build_model_from_checkpoint(ckpt, use_ema=model.use_ema)
            return LoadedModel(name, sha, net, [], None, _timesteps_name(ckpt.config), train_config=ckpt.config)
        out = self.train_dir(name, model)
        last = out / "last.pt"
        ckpt = load_checkpoint(last)
        net = build_model_from_checkpoint(ckpt, use_ema=model.use_ema)
        kept = sorted((int(p.stem.split("_")[1]), p) for p in out.glob("step_*.pt"))
        return LoadedModel(name, weights_sha256(ckpt), net, kept, self.speeds.get(name), _timesteps_name(ckpt.config),
                           train_config=ckpt.config)


def plugin_model_id(model: ModelSpec) -> str:
    """Id of a plugin model: the hash of its adapter name and params (the factory's whole input)."""
    return content_hash({"adapter": model.adapter, "params": model.params})


def _timesteps_name(config: dict[str, Any]) -> str | None:
    ts = config.get("timesteps")
    return ts.get("name") if isinstance(ts, dict) else (ts if isinstance(ts, str) else None)


def _train_job(spec: dict[str, Any], out: str, threads: int, progress: bool, parent: int | None = None) -> float:
    """Trains (or resumes / finds finished) one model, in this process or a worker whose parent is ``parent``;
    returns its img/s.

    Under the run folder's lock: a second runner on the same suite waits for the first one's training (then
    finds it finished) instead of training the model again; if the first runner dies, it resumes its run. Training
    stops at once if the lock is taken over (this process was stopped for longer than the stale timeout,
    ``pfbench.locks``) or the runner that started this worker is gone.
    """
    torch.set_num_threads(threads)
    run = Path(out)

    def say(holder: str) -> None:
        Console(stderr=True).print(f"[dim]waiting for another runner training {run} ({escape(holder)})", soft_wrap=True)

    def took(holder: str) -> None:
        Console(stderr=True).print(f"[yellow]taking over[/] the training in {run} from {escape(holder)}", soft_wrap=True)

    with hold_lock(lock_path(run.parent, run.name), say, on_take_over=took) as lock:
        result = train(spec_from_dict(spec), run, resume=True, progress=progress, abort=lambda: _abort(lock, parent))
    return float(result.img_per_s)


def _abort(lock: Lock, parent: int | None) -> str | None:
    """Why a training must stop now, if it must (see ``_train_job``)."""
    if parent is not None and not parent_alive(parent):
        return "the runner that started it is gone"
    if lock.lost():
        return f"another runner took its run folder over ({lock.taken_by()})"
    return None


class _Interrupted(KeyboardInterrupt):
    """Ctrl-C during in-process training: ``stopped`` maps the model to what it kept."""

    def __init__(self, stopped: dict[str, str]) -> None:
        super().__init__("; ".join(stopped.values()))
        self.stopped = stopped


class _TrainingBars:
    """One rich progress bar per training worker, read from each run's log.jsonl (``run_workers``' ``tick``)."""

    def __init__(self, jobs: dict[str, tuple[int, Path]], console: Console) -> None:
        self.jobs = jobs
        cols = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn())
        self.bar = Progress(*cols, console=console)
        self.bar.__enter__()
        self.tasks = {n: self.bar.add_task(f"train {n}", total=steps, info="") for n, (steps, _) in jobs.items()}

    def __call__(self, workers: dict[str, Worker]) -> None:
        for n, (steps, out) in self.jobs.items():
            if n not in workers:  # not started yet (at most one worker per core runs)
                continue
            done = workers[n].outcome
            if done is not None:
                if done[0]:
                    self.bar.update(self.tasks[n], completed=steps)
                continue
            last = _last_log_row(out / "log.jsonl")
            if last is not None:
                info = f"loss {last.get('loss', float('nan')):.4f} {last.get('img_per_s', 0):.0f} img/s"
                self.bar.update(self.tasks[n], completed=int(last.get("step", 0)), info=info)

    def close(self) -> None:
        self.bar.__exit__(None, None, None)


def _last_log_row(log: Path) -> dict[str, Any] | None:
    lines = log.read_text().strip().splitlines() if log.is_file() else []
    try:
        return json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:  # a line being written
        return None
