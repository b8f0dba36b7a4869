"""ADM parity suite: YAML checks, one-line errors for missing inputs, scoring + comparison (fake Inception)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F
import yaml

from pfbench import PfbenchError
from pfbench.evaluate.parity import (
    ADM_GOLDEN,
    ENV,
    load_parity_suite,
    resolve_inputs,
    run_adm_parity_suite,
    show_parity,
)
from pfbench.metrics.stats import FeatureStats

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "suites" / "adm_parity.yaml"


@pytest.fixture(autouse=True)
def no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ENV.values():
        monkeypatch.delenv(var, raising=False)


class FakeInception:
    """Deterministic stand-in for InceptionV3: pool (8-d), logits (10 classes), spatial (6-d)."""

    keys = ("pool", "logits", "spatial")

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.w_pool, self.w_logits = torch.randn(48, 8, generator=g), torch.randn(48, 10, generator=g)

    def fingerprint(self) -> dict[str, str]:
        return {"extractor": "fake inception (tests)"}

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = F.avg_pool2d(images.float() / 255, 4).flatten(1)  # (B, 3·4·4 = 48) for 16×16 images
        spatial = images[:, :, ::5, ::5].float().flatten(1)[:, :6] / 255  # (B, 6)
        return {"pool": torch.tanh(x @ self.w_pool), "logits": 3 * x @ self.w_logits, "spatial": spatial}


def _images(n: int, seed: int, bright: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(bright, 60, (n, 16, 16, 3)), 0, 255).astype(np.uint8)  # (N, H, W, 3) NHWC


def _fd(a: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> float:
    """Classic pytorch-fid formula (scipy sqrtm) as an independent reference."""
    m, s = a.mean(0), np.cov(a, rowvar=False)
    return float(
        ((m - mu) ** 2).sum()
        + np.trace(s)
        + np.trace(sigma)
        - 2 * np.trace(np.real(scipy.linalg.sqrtm(s @ sigma)))
    )


def _pr(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    def cover(q: np.ndarray, r: np.ndarray) -> float:
        radii = np.sort(((r[:, None] - r[None]) ** 2).sum(-1), axis=1)[:, k]  # k-th neighbour, self excluded
        return float((((q[:, None] - r[None]) ** 2).sum(-1) <= radii[None]).any(1).mean())

    return cover(fake, real), cover(real, fake)


def _is(logits: np.ndarray, splits: int = 10) -> float:
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    parts = np.array_split(p, splits)
    return float(np.mean([np.exp((q * (np.log(q) - np.log(q.mean(0)))).sum(1).mean()) for q in parts]))


@pytest.fixture
def adm_files(tmp_path: Path) -> tuple[Path, Path, dict[str, float]]:
    """Tiny ADM-format samples and reference batch, and the metrics computed independently."""
    ext = FakeInception()
    samples, ref_images = _images(40, 1, 120), _images(30, 2, 140)
    feats = {k: ext(torch.from_numpy(a).permute(0, 3, 1, 2)) for k, a in (("s", samples), ("r", ref_images))}
    stats = {}
    for key in ("pool", "spatial"):
        st = FeatureStats()
        st.update(feats["r"][key])
        stats[key] = (st.mean(), st.cov())
    np.savez(tmp_path / "samples.npz", arr_0=samples)
    np.savez(tmp_path / "ref.npz", arr_0=ref_images, mu=stats["pool"][0], sigma=stats["pool"][1],
             mu_s=stats["spatial"][0], sigma_s=stats["spatial"][1])  # fmt: skip
    s = {k: v.double().numpy() for k, v in feats["s"].items()}
    p, r = _pr(feats["r"]["pool"].double().numpy(), s["pool"])
    truth = {"fid": _fd(s["pool"], *stats["pool"]), "sfid": _fd(s["spatial"], *stats["spatial"]),
             "is": _is(s["logits"]), "precision": p, "recall": r}  # fmt: skip
    return tmp_path / "samples.npz", tmp_path / "ref.npz", truth


def _write_suite(
    path: Path, samples: Path | str, ref: Path | str, expect: dict[str, float], tol: float
) -> Path:
    body = {"kind": "adm_parity", "name": "tiny", "samples": str(samples), "ref": str(ref), "batch_size": 16,
            "device": "cpu", "expect": expect, "tolerance": dict.fromkeys(expect, tol)}  # fmt: skip
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def test_shipped_suite_holds_spec_golden_numbers() -> None:
    suite = load_parity_suite(SUITE)
    assert suite.expect == ADM_GOLDEN  # docs/protocol.md §10, as adm_parity's docs quote it
    assert set(suite.tolerance) == set(ADM_GOLDEN) and all(t > 0 for t in suite.tolerance.values())
    assert suite.samples == "admnet_guided_upsampled_imagenet256.npz"
    assert suite.ref == "VIRTUAL_imagenet256_labeled.npz" and suite.sources["ref"].endswith(suite.ref)


def test_missing_inputs_name_the_file_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Relative paths are files in $PFBENCH_DATA (where suites/imagenet.yaml expects the reference), not the cwd."""
    data = tmp_path / "data"
    monkeypatch.setenv("PFBENCH_DATA", str(data))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "admnet_guided_upsampled_imagenet256.npz").write_bytes(b"")  # in the cwd: not looked at
    with pytest.raises(PfbenchError) as err:
        run_adm_parity_suite(SUITE)
    msg = str(err.value)
    assert "\n" not in msg and f"not found at {data / 'admnet_guided_upsampled_imagenet256.npz'}" in msg
    assert "$PFBENCH_ADM_SAMPLES" in msg and "https://" in msg and "`pfbench fetch adm-samples`" in msg
    data.mkdir()
    (data / "admnet_guided_upsampled_imagenet256.npz").write_bytes(b"")
    with pytest.raises(PfbenchError, match=r"ref file VIRTUAL_imagenet256_labeled\.npz not found .*pfbench fetch "
                                           "adm-ref") as err:
        run_adm_parity_suite(SUITE)
    assert "\n" not in str(err.value)
    monkeypatch.setenv("PFBENCH_ADM_REF", str(tmp_path / "elsewhere.npz"))
    with pytest.raises(PfbenchError, match=r"elsewhere\.npz not found .*\(from \$PFBENCH_ADM_REF\)"):
        run_adm_parity_suite(SUITE)


def test_missing_weights_fail_before_reading_images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    samples, ref = tmp_path / "s.npz", tmp_path / "r.npz"
    samples.write_bytes(b"")  # never opened: the weights are resolved first
    ref.write_bytes(b"")
    monkeypatch.setenv("PFBENCH_ADM_WEIGHTS", str(tmp_path / "no-such-inception.pth"))
    with pytest.raises(PfbenchError, match="inception-v3-compat weights .* not found") as err:
        run_adm_parity_suite(_write_suite(tmp_path / "p.yaml", samples, ref, {"fid": 1.0}, 0.1))
    assert "\n" not in str(err.value)


def test_scores_and_compares(adm_files: tuple[Path, Path, dict[str, float]], tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    samples, ref, truth = adm_files
    good = _write_suite(tmp_path / "good.yaml", samples, ref, truth, 1e-4)
    out = run_adm_parity_suite(good, extractor=FakeInception(), cache_dir=tmp_path / "cache")
    assert out["pass"] and out["num_samples"] == 40
    assert [row["metric"] for row in out["table"]] == list(truth)
    for row in out["table"]:
        assert row["ok"] and row["measured"] == pytest.approx(truth[row["metric"]], abs=1e-4)
        assert row["diff"] == pytest.approx(row["measured"] - row["expected"])
    assert truth["fid"] > 0.01 and 0 < truth["precision"] < 1  # a non-trivial pair
    show_parity(out)
    assert "PASS" in capsys.readouterr().out

    wrong = _write_suite(tmp_path / "wrong.yaml", samples, ref, {**truth, "fid": truth["fid"] + 1.0}, 1e-4)
    out = run_adm_parity_suite(wrong, extractor=FakeInception(), cache_dir=tmp_path / "cache")
    assert not out["pass"]
    assert {row["metric"]: row["ok"] for row in out["table"]} == {"fid": False, "sfid": True, "is": True,
                                                                  "precision": True, "recall": True}  # fmt: skip


def test_env_overrides_suite_paths(adm_files: tuple[Path, Path, dict[str, float]], tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    samples, ref, truth = adm_files
    suite = _write_suite(tmp_path / "p.yaml", "absent.npz", "absent_ref.npz", {"fid": truth["fid"]}, 1e-4)
    monkeypatch.setenv("PFBENCH_ADM_SAMPLES", str(samples))
    monkeypatch.setenv("PFBENCH_ADM_REF", str(ref))
    assert resolve_inputs(load_parity_suite(suite)).samples == samples
    assert run_adm_parity_suite(suite, extractor=FakeInception(), cache_dir=tmp_path / "cache")["pass"]


@pytest.mark.parametrize(
    "edit,match",
    [
        ({"tolerence": {"fid": 0.1}}, "unknown key 'tolerence'; did you mean 'tolerance'"),
        ({"expect": {"fdi": 1.0}}, "unknown key 'fdi'; did you mean 'fid'"),
        ({"tolerance": {"sfid": 0.1}}, "one non-negative number for each expected metric"),
        ({"kind": "suite"}, "not a parity suite"),
        ({"batch_size": 0}, "batch_size must be a positive integer"),
    ],
)
def test_bad_suites_give_one_line_errors(tmp_path: Path, edit: dict[str, object], match: str) -> None:
    body = {"kind": "adm_parity", "samples": "s.npz", "ref": "r.npz", "expect": {"fid": 1.0},
            "tolerance": {"fid": 0.1}, **edit}  # fmt: skip
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(body))
    with pytest.raises(PfbenchError, match=match) as err:
        load_parity_suite(tmp_path / "p.yaml")
    assert "\n" not in str(err.value)


@pytest.mark.gpu
@pytest.mark.slow
def test_golden_pair_with_real_files() -> None:
    """The real check: needs the two ADM files (see the suite) and the Inception weights, on a GPU."""
    inputs = resolve_inputs(load_parity_suite(SUITE), check=False)
    if not torch.cuda.is_available() or not (inputs.samples.is_file() and inputs.ref.is_file()):
        pytest.skip("needs CUDA and the ADM golden pair (set PFBENCH_ADM_SAMPLES / PFBENCH_ADM_REF)")
    out = run_adm_parity_suite(SUITE)
    show_parity(out)
    assert out["pass"], out["table"]
