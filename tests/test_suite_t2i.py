"""A text-to-image suite end to end (in process, with a stand-in text encoder): training both kinds, cells conditioned
on the held-out captions, the shuffled-prompt baseline rows, reference rows against captions, cell keys that
change with the prompts."""

from __future__ import annotations

from pathlib import Path

import pytest
from _text_stub import StubTextEncoder, install_stub  # pytest puts tests/ on sys.path

from pfbench.results import read_results
from pfbench.suite.parse import load_suite
from pfbench.suite.prompts import shuffle, suite_prompts
from pfbench.suite.runner import Runner

TINY = """
name: tiny_t2i
data: {name: embedded, resolution: 16, seed: 0, test_size: 60}
models:
  pf_t2i: {train: &train {kind: pf_t2i, model: cpu-xs, model_overrides: {depth: 1, width: 32, heads: 2},
                          data: {name: embedded, resolution: 16, size: 500, seed: 0}, text: stub, steps: 6,
                          batch_size: 16, lr: 3.0e-3, warmup: 2, ckpt_every: 6, keep_every: 6, log_every: 3}}
  sit_t2i: {train: {<<: *train, kind: sit_t2i, timesteps: {name: global_uniform}}}
grid:
  - {models: [sit_t2i], samplers: [euler]}
  - {models: [pf_t2i], samplers: [euler_pf, {name: dual_loop, params: {n_inner: 2}}]}
sweep: {nfe: [4], seeds: [0], num_samples: 30, cfg_scale: [1.0, 3.0]}
metrics: [fd_embedded, class_acc, clip_embedded]
eval: {batch_size: 30, curve_nfe: 2, curve_samples: 20, parallel_train: false, context_ts: [0.4]}
"""


@pytest.fixture(autouse=True)
def stub_encoder(monkeypatch: pytest.MonkeyPatch) -> StubTextEncoder:
    return install_stub(monkeypatch)


@pytest.mark.slow
def test_t2i_suite_runs_with_shuffled_baseline(tmp_path: Path, stub_encoder: StubTextEncoder) -> None:
    path = tmp_path / "tiny_t2i.yaml"
    path.write_text(TINY)
    spec = load_suite(path)
    runner = Runner(spec, tmp_path / "results", tmp_path / "reports", tmp_path / "runs", progress=False)
    runner.run()
    df = read_results(tmp_path / "results" / "tiny_t2i")
    cells = df[df["kind"] == "cell"]
    assert set(cells["model"]) == {"pf_t2i", "sit_t2i"} and len(cells[["part"]].drop_duplicates()) == 6
    metrics = set(cells["metric"])
    assert {"clip_embedded", "class_acc", "clip_embedded_shuffled", "class_acc_shuffled", "fd_embedded"} <= metrics
    assert "fd_embedded_shuffled" not in metrics  # FD reads no prompt: no baseline row
    ref = df[df["kind"] == "reference"]
    real = ref[ref["model"] == "real_train"].set_index("metric")["value"]
    assert real["class_acc"] > real["class_acc_shuffled"] + 0.3  # real images follow their captions
    assert real["clip_embedded"] > real["clip_embedded_shuffled"]
    # cost: the text encoder once per sample on top of the calls
    guided = cells[(cells["sampler"] == "euler_pf") & (cells["cfg_scale"] == 3.0)].iloc[0]
    plain = cells[(cells["sampler"] == "euler_pf") & (cells["cfg_scale"] == 1.0)].iloc[0]
    lm = runner.load_model("pf_t2i", spec.models["pf_t2i"])
    once = lm.adapter().gflops_once()  # type: ignore[attr-defined]
    assert once > stub_encoder.gflops_per_prompt  # the encoder and the refiner, once per sample
    assert guided["gflops"] - once == pytest.approx(2 * (plain["gflops"] - once), rel=1e-6)
    assert (tmp_path / "reports" / "tiny_t2i" / "index.md").is_file()
    # the held-out difficulty diagnostics run on the PF text-to-image net (captions through the encoder), not the baseline
    diag = df[df["kind"] == "diagnostic"]
    pf_diag = set(diag[diag["model"] == "pf_t2i"]["metric"])
    assert {"difficulty_hard_easy_ratio", "context_loss_hard_t0.4_ctx1"} <= pf_diag
    assert "difficulty_hard_easy_ratio" not in set(diag[diag["model"] == "sit_t2i"]["metric"])
    assert (tmp_path / "reports" / "tiny_t2i" / "difficulty_pf_t2i.png").is_file()
    # the prompts are part of a T2I cell's key: other prompts -> other parts
    other = Runner(load_suite(path, ["data.test_size=50"]), tmp_path / "r2", tmp_path / "p2", tmp_path / "runs",
                   progress=False).load_model("pf_t2i", spec.models["pf_t2i"])
    assert lm.key_id != other.key_id and lm.model_id == other.model_id
    assert runner.known_model_id("pf_t2i") == lm.key_id


def test_prompts_and_shuffle() -> None:
    spec = load_suite_text(TINY)
    prompts = suite_prompts(spec)
    assert len(prompts.texts) == 60 and prompts.labels is not None and prompts.labels.shape == (60,)
    texts, labels = shuffle(prompts.texts, prompts.labels, seed=0)
    assert sorted(texts) == sorted(prompts.texts) and texts != prompts.texts
    again = shuffle(prompts.texts, prompts.labels, seed=0)
    assert again[0] == texts and bool((again[1] == labels).all())
    for text, label in zip(texts, labels.tolist(), strict=True):  # labels follow their prompts
        assert label == int(prompts.labels[prompts.texts.index(text)])


def load_suite_text(text: str) -> object:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.yaml"
        path.write_text(text)
        return load_suite(path)
