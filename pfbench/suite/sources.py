"""Where a suite model's weights come from: a small registry of model sources, each checking its ``ModelSpec``,
knowing its network config and its weights' content id without loading, and loading the model.

| source | ``models.<name>`` | content id |
|---|---|---|
| ``recipe`` | ``train:`` (trained in the suite, ``runs/<suite>/<model>-<hash>``) | ``weights_sha256`` of the finished weights |
| ``checkpoint`` | ``checkpoint:`` (a pfbench checkpoint, or ``asset:NAME``) | sha256 of the file |
| ``external`` | ``checkpoint:`` + ``layout:`` (another codebase's key layout) | sha256 of the file |
| ``plugin`` | ``adapter: NAME`` + ``params:`` (a registered adapter factory) | hash of name, params and the files they name |

A text-to-image model is a recipe or checkpoint whose network is a ``T2INet``; ``SuiteModels`` adds its text
encoder and the suite's prompts to its identity (``ModelIdentity.text``). Adding a checkpoint format is one
``Source`` class here plus its loader in ``pfbench.adapters`` (ARCHITECTURE.md, "Walks").
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pfbench import PfbenchError
from pfbench.adapters.base import Adapter, check_adapter
from pfbench.adapters.external import external_config, load_external
from pfbench.assets import CHECKSUMS, asset_path
from pfbench.io import content_hash, sha256_cached
from pfbench.nets import DiT, T2INet, config_from_dict, net_config
from pfbench.registry import ADAPTERS
from pfbench.suite.spec import ModelSpec
from pfbench.train.checkpoints import build_model_from_checkpoint, load_checkpoint, weights_sha256
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
        return path, sha256_cached(path)
    name = ref.removeprefix("asset:")
    path = asset_path(name, "pfbench train suites/recipes/<recipe>.yaml (see README, Shipped checkpoints)")
    sha = sha256_cached(path)
    want = CHECKSUMS.get(name)
    if want is not None and sha != want:
        raise PfbenchError(f"shipped checkpoint {path} has sha256 {sha[:16]}…, expected {want[:16]}…: the file is "
                           "corrupt; restore it from the repository")
    return path, sha


@dataclass
class Loaded:
    """What a source loads: a pfbench network or a plugin's adapter, with its weights' content id."""

    weights: str
    net: DiT | T2INet | None = None
    plugin: Adapter | None = None
    checkpoints: list[tuple[int, Path]] = field(default_factory=list)  # kept intermediate checkpoints (recipes)
    train_config: dict[str, Any] | None = None  # a pfbench checkpoint's training config


class Source:
    """One kind of model source (see the module docstring). ``train_dir`` is set for suite-trained models."""

    kind: ClassVar[str]

    def __init__(self, name: str, model: ModelSpec, train_dir: Path | None, device: str) -> None:
        self.name, self.model, self.train_dir, self.device = name, model, train_dir, device

    @staticmethod
    def check(name: str, model: ModelSpec) -> None:
        """Checks the fields of ``models.<name>`` this source reads (a one-line ``PfbenchError``)."""

    def net_config(self) -> Any:
        """The pfbench network config without loading weights where possible; None for a plugin model."""
        return None

    def weights_id(self) -> str | None:
        """The weights' content id if it is known without loading (None: a recipe not trained yet)."""
        raise NotImplementedError

    def load(self) -> Loaded:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """The training config of the model (its recipe, or the checkpoint's stored ``config``)."""
        return {}


class _PfbenchNetwork(Source):
    """The checks shared by the sources of a pfbench network (``adapter: dit``)."""

    @staticmethod
    def check(name: str, model: ModelSpec) -> None:
        if model.params:
            raise PfbenchError(f"models.{name}.params: only a plugin adapter takes params (adapter: NAME); a dit "
                               "model's network fields go in overrides")
        if (model.train is None) == (model.checkpoint is None):
            raise PfbenchError(f"models.{name}: give exactly one of 'train' or 'checkpoint'")
        if model.optional and model.checkpoint is None:
            raise PfbenchError(f"models.{name}.optional: only a model loaded from a file (checkpoint:) can be optional; "
                               "a trained model is made by the run")
        if model.layout is not None and model.checkpoint is None:
            raise PfbenchError(f"models.{name}: 'layout' needs 'checkpoint' (an external checkpoint file)")


class Recipe(_PfbenchNetwork):
    kind = "recipe"

    def net_config(self) -> Any:
        return spec_from_dict(self.model.train or {}).net_config()

    def config(self) -> dict[str, Any]:
        return spec_from_dict(self.model.train or {}).to_dict()

    def weights_id(self) -> str | None:
        assert self.train_dir is not None
        last = self.train_dir / "last.pt"
        if not last.is_file():
            return None
        ckpt = load_checkpoint(last)
        return weights_sha256(ckpt) if ckpt.step >= spec_from_dict(self.model.train or {}).steps else None

    def load(self) -> Loaded:
        assert self.train_dir is not None
        ckpt = load_checkpoint(self.train_dir / "last.pt")
        net = build_model_from_checkpoint(ckpt, use_ema=self.model.use_ema)
        kept = sorted((int(p.stem.split("_")[1]), p) for p in self.train_dir.glob("step_*.pt"))
        return Loaded(weights_sha256(ckpt), net, checkpoints=kept, train_config=ckpt.config)


class Checkpoint(_PfbenchNetwork):
    kind = "checkpoint"

    def path(self) -> tuple[Path, str]:
        return resolve_checkpoint(self.model.checkpoint or "")

    def net_config(self) -> Any:
        return config_from_dict(load_checkpoint(self.path()[0]).net_config)

    def config(self) -> dict[str, Any]:
        return dict(load_checkpoint(self.path()[0]).config)

    def weights_id(self) -> str | None:
        return self.path()[1]

    def load(self) -> Loaded:
        path, sha = self.path()
        ckpt = load_checkpoint(path)
        return Loaded(sha, build_model_from_checkpoint(ckpt, use_ema=self.model.use_ema), train_config=ckpt.config)


class External(Checkpoint):
    kind = "external"

    def net_config(self) -> Any:
        m = self.model
        if m.preset is not None:
            return net_config(m.preset, "pf" if m.layout == "pf" else "sit", **m.overrides)
        return external_config(self.path()[0], m.layout or "", **m.overrides)  # size from the file

    def config(self) -> dict[str, Any]:
        return {}

    def load(self) -> Loaded:
        path, sha = self.path()
        m = self.model
        return Loaded(sha, load_external(path, m.layout or "", m.preset, **m.overrides))


class Plugin(Source):
    kind = "plugin"

    @staticmethod
    def check(name: str, model: ModelSpec) -> None:
        """A model built by a registered adapter factory: the name is known and no pfbench-network field is set."""
        if model.adapter in ("cfg", "external"):
            hint = ("guidance is the sweep's cfg_scale" if model.adapter == "cfg"
                    else "an external checkpoint is checkpoint: + layout: (sit or pf)")
            raise PfbenchError(f"models.{name}.adapter = {model.adapter!r}: not a suite model adapter; {hint}")
        try:
            ADAPTERS.get(model.adapter)
        except PfbenchError as err:
            raise PfbenchError(f"models.{name}.adapter: {err}; is the plugin package installed?") from None
        own = [k for k in ("train", "checkpoint", "layout", "preset") if getattr(model, k) is not None]
        own += [k for k in ("overrides", "train_seeds") if getattr(model, k)]
        if own:
            raise PfbenchError(f"models.{name}: {', '.join(own)} describe a pfbench network, but adapter "
                               f"{model.adapter!r} builds the model from params:; remove them")

    def weights_id(self) -> str:
        return plugin_model_id(self.model)

    def load(self) -> Loaded:
        return Loaded(plugin_model_id(self.model), plugin=self.build())

    def build(self) -> Adapter:
        """``ADAPTERS[model.adapter](**model.params)`` (plus ``device`` when the factory takes one and params do not
        set it), checked against the protocol."""
        model = self.model
        where = f"models.{self.name} (adapter {model.adapter!r})"
        factory = ADAPTERS.get(model.adapter)
        kwargs = dict(model.params)
        if "device" not in kwargs and "device" in inspect.signature(factory).parameters:
            kwargs["device"] = self.device  # where the suite samples, unless params say otherwise
        try:
            built = factory(**kwargs)
        except TypeError as err:
            raise PfbenchError(f"{where}: bad params {model.params}: {err}") from None
        return check_adapter(built, where)


def plugin_model_id(model: ModelSpec) -> str:
    """Id of a plugin model: the hash of its adapter name and params (the factory's whole input) and of the content
    of every file or folder a params value names (its weights: replacing them under the same path makes a new id).
    Without such files the id is the hash of name and params alone, as before files were hashed."""
    files = _named_files(model.params)
    payload: dict[str, Any] = {"adapter": model.adapter, "params": model.params}
    if files:
        payload["weights"] = files
    return content_hash(payload)


def _named_files(value: Any, where: str = "params") -> dict[str, str]:
    """``{key path: sha256}`` of each string in ``value`` (nested dicts and lists) that names an existing file; a
    folder counts by the hashes of the files in it."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in _named_files(item, f"{where}.{key}").items()}
    if isinstance(value, list):
        return {k: v for i, item in enumerate(value) for k, v in _named_files(item, f"{where}[{i}]").items()}
    if not isinstance(value, str) or not value or "\n" in value or len(value) > 4096:
        return {}
    path = Path(value).expanduser()
    try:
        if path.is_file():
            return {where: sha256_cached(path)}
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file())
            return {where: content_hash([(str(p.relative_to(path)), sha256_cached(p)) for p in files], 64)}
    except OSError:
        return {}
    return {}


SOURCES: dict[str, type[Source]] = {s.kind: s for s in (Recipe, Checkpoint, External, Plugin)}


def source_kind(model: ModelSpec) -> str:
    """Which source a ``ModelSpec`` names: ``plugin`` (``adapter:`` a registered factory), ``recipe`` (``train:``),
    ``checkpoint`` (``checkpoint:`` alone), or with ``layout:`` the source of that name in ``SOURCES`` (a new
    checkpoint format), else ``external`` (the DiT/SiT/PF key layouts of ``pfbench.adapters.external``)."""
    if model.adapter != "dit":
        return "plugin"
    if model.train is not None:
        return "recipe"
    if model.layout is None:
        return "checkpoint"
    return model.layout if model.layout in SOURCES else "external"


def check_model(name: str, model: ModelSpec) -> None:
    """Checks ``models.<name>`` against its source (one-line ``PfbenchError``)."""
    SOURCES[source_kind(model)].check(name, model)
