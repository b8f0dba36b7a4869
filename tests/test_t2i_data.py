"""Text-to-image data: what embedded captions ask for, prompt files, captioned image folders."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pfbench import PfbenchError
from pfbench.data import embedded as emb
from pfbench.data.captions import ATTRIBUTES, POSITION_NAMES, attribute_targets, parse_caption
from pfbench.data.prompts import CaptionedFolder, read_prompts


def _digest(batch: emb.EmbeddedBatch) -> str:
    return hashlib.sha256(batch.images.numpy().tobytes() + batch.labels.numpy().tobytes()).hexdigest()


def test_parse_caption_inverts_the_generator_on_every_attribute() -> None:
    spec = emb.EmbeddedSpec(split="test", size=3000)
    p = emb._params(spec, 0, 3000)
    caps = emb._captions(p)
    t = attribute_targets(caps)
    assert all(len(parse_caption(c)) == len(ATTRIBUTES) for c in caps)
    assert (t["class"].numpy() == p["label"]).all() and (t["color"].numpy() == p["obj"]).all()
    assert (t["texture"].numpy() == p["tex"]).all() and (t["bg_color"].numpy() == p["bg"]).all()
    assert (t["bg_kind"].numpy() == p["bg_kind"]).all()
    size = np.where(p["scale"] < 0.29, 0, np.where(p["scale"] > 0.33, 2, 1))
    assert (t["size"].numpy() == size).all()
    v = np.where(p["shift"][:, 1] < -emb._POS_WORD, 0, np.where(p["shift"][:, 1] > emb._POS_WORD, 2, 1))
    h = np.where(p["shift"][:, 0] < -emb._POS_WORD, 0, np.where(p["shift"][:, 0] > emb._POS_WORD, 2, 1))
    assert (t["position"].numpy() == 3 * v + h).all()
    # every value of every attribute occurs: the captions vary all of them independently
    assert all(len(set(t[a].tolist())) == len(names) for a, names in ATTRIBUTES.items())


def test_captions_are_varied_not_memorisable() -> None:
    train = set(emb.generate(emb.EmbeddedSpec(split="train", size=8192)).captions)
    test = emb.generate(emb.EmbeddedSpec(split="test", size=1000)).captions
    assert len(train) > 0.9 * 8192  # nearly every caption is a new combination
    assert sum(c in train for c in test) < 0.1 * len(test)  # held-out prompts are mostly unseen combinations


def test_keyword_prompts_name_only_what_they_say() -> None:
    assert parse_caption("a red striped star") == {"class": 7, "color": 0, "texture": 1}
    assert parse_caption("A small blue disk at the top left on a plain white background.") == {
        "class": 0, "color": 5, "size": 0, "position": 0, "bg_color": 8, "bg_kind": 0}  # fmt: skip
    assert parse_caption("a green L shape on the right") == {"class": 9, "color": 3, "position": 5}
    assert parse_caption("a red and blue double bar") == {"class": 6}  # two colours: ambiguous, not judged
    assert parse_caption("") == {} and parse_caption("a photo of a cat") == {}
    assert POSITION_NAMES[parse_caption("a disk in the center")["position"]] == "center"
    assert parse_caption("a photo of a crescent.") == {"class": 8}


def test_embedded_images_are_unchanged() -> None:
    """The captions of this issue left the pixels alone: the images hash as before (a sample of both splits)."""
    for split, want in (("train", _TRAIN_SHA), ("test", _TEST_SHA)):
        b = emb.generate(emb.EmbeddedSpec(split=split, size=3000), 2000, 2064)
        assert _digest(b) == want, split


# sha256 of the float32 pixels + labels of images [2000, 2064) of each split at 16×16, from the generator before this
# issue: committed results, the shipped feature networks and the tiny CLIP depend on these pixels.
_TRAIN_SHA = "329374713507053a0b47c078c0bd7c9e0d7be7b3a457ab413e46de710dd0f533"
_TEST_SHA = "a3f94da91c8a36a0b6f40f97f56de725a01c17975d348f5325a25149d5af7935"


# ---------------------------------------------------------------- prompt files


def test_prompt_files_txt_jsonl_json(tmp_path: Path) -> None:
    (tmp_path / "p.txt").write_text("# COCO-style prompts\na red disk\n\n  two cats on a sofa  \n")
    assert read_prompts(tmp_path / "p.txt") == ["a red disk", "two cats on a sofa"]
    (tmp_path / "p.jsonl").write_text('{"prompt": "a"}\n\n{"caption": "b", "id": 3}\n{"text": "c"}\n')
    assert read_prompts(tmp_path / "p.jsonl") == ["a", "b", "c"]
    (tmp_path / "p.json").write_text(json.dumps(["x", {"caption": "y"}]))
    assert read_prompts(tmp_path / "p.json") == ["x", "y"]


@pytest.mark.parametrize(
    ("name", "content", "expect"),
    [
        ("p.jsonl", '{"prompt": "a"}\n{"prompt": "b"\n', r"p.jsonl:2: not valid JSON"),
        ("p.jsonl", '{"prompt": "a"}\n{"id": 4}\n', r"p.jsonl:2: expected a string or an object with a \"prompt\""),
        ("p.jsonl", '{"prompt": 5}\n', r"p.jsonl:1: expected"),
        ("p.txt", "\n# only a comment\n", r"p.txt holds no prompts"),
        ("p.csv", "a,b\n", r"unknown extension '.csv'"),
        ("p.json", '{"prompt": "a"}', r"p.json: a .json prompt file holds a list"),
        ("missing.txt", None, r"prompt file .*missing.txt not found"),
    ],
)
def test_malformed_prompt_files_give_one_line_errors(tmp_path: Path, name: str, content: str | None,
                                                     expect: str) -> None:  # fmt: skip
    if content is not None:
        (tmp_path / name).write_text(content)
    with pytest.raises(PfbenchError, match=expect) as err:
        read_prompts(tmp_path / name)
    assert "\n" not in str(err.value)


def test_non_utf8_prompt_file(tmp_path: Path) -> None:
    (tmp_path / "p.txt").write_bytes(b"caf\xe9\n")
    with pytest.raises(PfbenchError, match="not UTF-8"):
        read_prompts(tmp_path / "p.txt")


# ---------------------------------------------------------------- captioned image folders


def _folder(tmp_path: Path, lines: list[str]) -> Path:
    (tmp_path / "img").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((40, 30, 3), 60 * i, np.uint8)).save(tmp_path / "img" / f"{i}.png")
    (tmp_path / "captions.jsonl").write_text("\n".join(lines) + "\n")
    return tmp_path


def test_captioned_folder_reads_files_and_captions_in_order(tmp_path: Path) -> None:
    root = _folder(tmp_path, ['{"file": "img/2.png", "caption": "two"}', "",
                              '{"image": "img/0.png", "text": "zero"}'])  # fmt: skip
    f = CaptionedFolder.scan(root)
    assert len(f) == 2 and f.captions == ("two", "zero") and f.files == (root / "img/2.png", root / "img/0.png")
    crop = f.load(0, 16)
    assert crop.shape == (16, 16, 3) and crop.dtype == np.uint8 and int(crop[8, 8, 0]) == 120


@pytest.mark.parametrize(
    ("lines", "expect"),
    [
        (['{"file": "img/9.png", "caption": "x"}'], r"captions.jsonl:1: image .*img/9.png not found"),
        (['{"file": "img/0.png"}'], r"captions.jsonl:1: no caption string"),
        (['{"caption": "x"}'], r"captions.jsonl:1: no image file string"),
        (['{"file": "img/0.png", "caption": "a"}', '{"file": "img/0.png", "caption": "b"}'], r":2: .*listed twice"),
        (['["img/0.png", "a"]'], r"captions.jsonl:1: expected an object"),
        (["{oops"], r"captions.jsonl:1: not valid JSON"),
        ([""], r"captions.jsonl lists no images"),
    ],
)
def test_malformed_captioned_folder(tmp_path: Path, lines: list[str], expect: str) -> None:
    with pytest.raises(PfbenchError, match=expect) as err:
        CaptionedFolder.scan(_folder(tmp_path, lines))
    assert "\n" not in str(err.value)


def test_captioned_folder_without_captions_file(tmp_path: Path) -> None:
    with pytest.raises(PfbenchError, match=r"no captions.jsonl"):
        CaptionedFolder.scan(tmp_path)
    with pytest.raises(PfbenchError, match=r"does not exist"):
        CaptionedFolder.scan(tmp_path / "nope")


def test_captioned_folder_encodes_to_a_latent_store_with_captions(tmp_path: Path) -> None:
    diffusers = pytest.importorskip("diffusers")
    import torch

    from pfbench.data.latents import CaptionedLatentData, LatentData, encode_folder
    from pfbench.data.train_data import open_train_data
    from pfbench.data.vae import load_vae

    torch.manual_seed(0)
    diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2, block_out_channels=[8, 16], layers_per_block=1, latent_channels=4,
        norm_num_groups=4, sample_size=16, scaling_factor=0.5,
    ).save_pretrained(tmp_path / "vae", safe_serialization=True)  # fmt: skip
    root = _folder(tmp_path / "data", ['{"file": "img/1.png", "caption": "one"}', '{"file": "img/0.png", "caption": "zero"}',
                                       '{"file": "img/2.png", "caption": "two"}'])  # fmt: skip
    out = encode_folder(root, tmp_path / "store", load_vae(str(tmp_path / "vae")), resolution=16, batch_size=2)
    data = open_train_data("latents", resolution=16, size=0, seed=0, path=str(out), device=torch.device("cpu"))
    assert isinstance(data, CaptionedLatentData) and data.size == 3 and data.num_classes == 1
    assert data.captions(torch.tensor([2, 0])) == ["two", "one"]
    x1, y = data.sample(torch.tensor([0, 1]), torch.zeros(2, 4, 8, 8))
    assert x1.shape == (2, 4, 8, 8) and y.tolist() == [0, 0]
    (out / "captions.json").write_text('["only one"]')
    with pytest.raises(PfbenchError, match="captions.json length differs"):
        LatentData.open(out)


# ---------------------------------------------------------------- the GPU suite's configuration


def test_gpu_t2i_suite_plans_and_names_the_missing_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from pfbench.cli import app
    from pfbench.data import class_names
    from pfbench.registry import METRICS
    from pfbench.suite.parse import load_suite
    from pfbench.suite.validate import check_inputs, validate

    monkeypatch.setenv("PFBENCH_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("PFBENCH_CHECKPOINTS", str(tmp_path / "ckpt"))
    spec = load_suite(Path(__file__).parents[1] / "suites" / "t2i.yaml")
    validate(spec)
    assert spec.data.name == "captioned" and spec.prompts == str(tmp_path / "data" / "coco_val2017_prompts.jsonl")
    assert class_names("captioned") == ("image",)  # one class (label 0): the captions are the condition
    assert all(m in METRICS for m in spec.metrics) and {"fid", "clip_score"} <= set(spec.metrics)
    out = CliRunner().invoke(app, ["plan", "suites/t2i.yaml", "--results", str(tmp_path / "r"),
                                   "--runs", str(tmp_path / "w")])  # fmt: skip
    assert out.exit_code == 1, out.output  # run would stop: its checkpoints and data are not here
    text = " ".join(out.output.split())  # the console wraps at its width
    assert "8 cells;" in text and "not found: sit_t2i, pf_t2i" in text and "run would stop" in text
    with pytest.raises(PfbenchError, match=r"models.sit_t2i.checkpoint: .*sit-t2i-b2.pt not found") as err:
        check_inputs(spec)  # what `pfbench run` refuses to start without, in one line
    assert "\n" not in str(err.value)
