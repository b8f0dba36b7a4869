"""Trained-in-suite models are identified by their weights, not by their checkpoint file's bytes.

``torch.save`` writes a random serialization id into every file, so two identical trainings give files with
different sha256; cells keyed by that hash could never be found again after retraining on another machine.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from rich.console import Console

from pfbench.io import sha256_file
from pfbench.suite.models import SuiteModels
from pfbench.suite.parse import load_suite
from pfbench.train.checkpoints import load_checkpoint, weights_sha256

TinySuite = Callable[..., Path]  # conftest's tiny_suite: writes a tiny suite YAML, returns its path
# conftest's tiny suite, smaller: 4 training steps on 500 images, 8 samples at NFE 2, class accuracy only
IDS = dict(name="ids", test_size=50, grid=({"models": ["pf"], "samplers": ["euler_pf"]},),
           train={"data": {"name": "embedded", "resolution": 16, "size": 500, "seed": 0}, "steps": 4,
                  "batch_size": 8, "warmup": 1, "ckpt_every": 4, "log_every": 2,
                  "ema_decay": None, "ema_warmup": None, "keep_every": None},  # None: the training default
           sweep={"nfe": [2], "seeds": [0], "num_samples": 8}, metrics=["class_acc"])


def test_retrained_model_has_the_same_id_though_its_file_differs(tmp_path: Path, tiny_suite: TinySuite) -> None:
    path = tiny_suite("ids.yaml", **IDS)
    spec = load_suite(path)
    torch.set_num_threads(1)
    ids, files = [], []
    for run in ("a", "b"):
        models = SuiteModels(spec, tmp_path / run, progress=False, console=Console(quiet=True))
        assert models.known_model_id("pf") is None  # not trained yet: no id, cells cannot be looked up
        models.train_all()
        last = models.train_dir("pf", spec.models["pf"]) / "last.pt"
        ids.append(models.known_model_id("pf"))
        files.append(sha256_file(last))
        assert models.load_model("pf", spec.models["pf"]).model_id == ids[-1]  # loading agrees with planning
    assert files[0] != files[1]  # the files differ (torch.save's random serialization id) ...
    assert ids[0] == ids[1] and ids[0] is not None  # ... the weights, and so the id, do not


def test_weights_id_sees_every_weight_and_the_step(tmp_path: Path, tiny_suite: TinySuite) -> None:
    path = tiny_suite("ids.yaml", **IDS)
    spec = load_suite(path)
    models = SuiteModels(spec, tmp_path / "a", progress=False, console=Console(quiet=True))
    models.train_all()
    ckpt = load_checkpoint(models.train_dir("pf", spec.models["pf"]) / "last.pt")
    base = weights_sha256(ckpt)
    name = sorted(ckpt.ema)[-1]
    bumped = {**ckpt.ema, name: ckpt.ema[name].clone()}
    bumped[name].view(-1)[0] = torch.nextafter(bumped[name].view(-1)[0], torch.tensor(1e9))  # one ulp
    assert weights_sha256(type(ckpt)(**{**ckpt.__dict__, "ema": bumped})) != base
    assert weights_sha256(type(ckpt)(**{**ckpt.__dict__, "step": ckpt.step + 1})) != base
    assert weights_sha256(type(ckpt)(**{**ckpt.__dict__, "optimizer": None})) == base  # optimizer: not pixels
