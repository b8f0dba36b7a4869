"""Offline weight resolution: search order, checksums, fast and complete missing-file errors."""

from __future__ import annotations

import hashlib
import os
import socket
import time
from pathlib import Path

import pytest
import torch.hub  # noqa: F401  (import time is not resolution time)

from pfbench import PfbenchError
from pfbench import weights as W
from pfbench.weights import KNOWN_WEIGHTS, KnownWeights, resolve_weights

os.environ.setdefault("HF_HUB_OFFLINE", "1")
GOOD = b"pretend these are weights"


@pytest.fixture(autouse=True)
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No network, empty library caches under tmp_path, no $PFBENCH_WEIGHTS, cwd = tmp_path/cwd."""

    def no_network(*a: object, **k: object) -> None:
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("PFBENCH_WEIGHTS", raising=False)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setitem(
        KNOWN_WEIGHTS,
        "test-w",
        KnownWeights(
            "test-w", "w.bin", "https://example.invalid/w.bin", "torch-hub", hashlib.sha256(GOOD).hexdigest()
        ),
    )


def _put(folder: Path, data: bytes = GOOD, name: str = "w.bin") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)
    return folder / name


def test_missing_file_error_lists_every_place_and_is_fast(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = tmp_path / "wa", tmp_path / "wb"
    monkeypatch.setenv("PFBENCH_WEIGHTS", f"{a}{os.pathsep}{b}")
    t0 = time.perf_counter()
    with pytest.raises(PfbenchError) as err:
        resolve_weights("inception-v3-compat")
    assert time.perf_counter() - t0 < 2.0
    msg = str(err.value)
    hub = tmp_path / "torch" / "hub" / "checkpoints" / "weights-inception-2015-12-05-6726825d.pth"
    for needle in (str(a / hub.name), str(b / hub.name), str(hub), "PFBENCH_WEIGHTS",
                   "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + hub.name):  # fmt: skip
        assert needle in msg
    assert "\n" not in msg
    assert list((tmp_path / "cwd").iterdir()) == [] and not (tmp_path / "torch").exists()  # nothing created


def test_missing_explicit_path_and_unset_env(tmp_path: Path) -> None:
    with pytest.raises(PfbenchError, match=r"argument: .*nope\.pth") as err:
        resolve_weights("inception-v3-compat", tmp_path / "nope.pth")
    assert "torch-hub cache" not in str(err.value)  # an explicit path is not silently replaced
    with pytest.raises(PfbenchError, match=r"\$PFBENCH_WEIGHTS is unset"):
        resolve_weights("dinov2-vitl14")
    with pytest.raises(PfbenchError, match=r"\.cache/clip/ViT-L-14\.pt"):
        resolve_weights("clip-vit-l-14-openai")
    with pytest.raises(PfbenchError, match="unknown weights 'incepton'"):
        resolve_weights("incepton")


def test_resolution_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hub = _put(tmp_path / "torch" / "hub" / "checkpoints")
    assert resolve_weights("test-w") == hub  # library cache, last resort
    second = _put(tmp_path / "env2")
    monkeypatch.setenv("PFBENCH_WEIGHTS", f"{tmp_path / 'env1'}{os.pathsep}{tmp_path / 'env2'}")
    assert resolve_weights("test-w") == second  # $PFBENCH_WEIGHTS beats the library cache
    first = _put(tmp_path / "env1")
    assert resolve_weights("test-w") == first  # earlier folder in $PFBENCH_WEIGHTS wins
    explicit = _put(tmp_path / "mine", name="custom-name.bin")
    assert resolve_weights("test-w", explicit) == explicit  # explicit argument beats everything
    assert resolve_weights("test-w", first.parent) == first  # a folder argument holding the file


def test_checksum_mismatch_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = _put(tmp_path / "env", b"truncated")
    _put(tmp_path / "torch" / "hub" / "checkpoints")  # a good copy further down is not used silently
    monkeypatch.setenv("PFBENCH_WEIGHTS", str(tmp_path / "env"))
    with pytest.raises(PfbenchError, match=r"sha256 .* expected .*example\.invalid/w\.bin") as err:
        resolve_weights("test-w")
    assert str(bad) in str(err.value)
    assert resolve_weights("test-w", verify=False) == bad
    # a file with no recorded checksum (DINOv2) is accepted and hashed for provenance
    dino = _put(tmp_path / "env", b"whatever", name="dinov2_vitl14_pretrain.pth")
    assert resolve_weights("dinov2-vitl14") == dino
    assert W.file_sha256(dino) == hashlib.sha256(b"whatever").hexdigest()


def test_corrupt_inception_file_refused_before_torch_fidelity(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pfbench.encoders.inception import InceptionV3

    _put(tmp_path / "env", b"\x00" * 1000, name="weights-inception-2015-12-05-6726825d.pth")
    monkeypatch.setenv("PFBENCH_WEIGHTS", str(tmp_path / "env"))
    with pytest.raises(PfbenchError, match="inception-v3-compat weights .* have sha256") as err:
        InceptionV3()
    # the message names the opt-out (pfbench eval --no-verify, suite eval.verify_weights: false)...
    assert "pass --no-verify (suite: eval.verify_weights: false)" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(PfbenchError, match="cannot load"):  # unverified garbage still fails cleanly
        InceptionV3(verify=False)
    # ...only for the Inception file, the one whose check the CLI can turn off
    _put(tmp_path / "env", b"not clip", name="ViT-L-14.pt")
    with pytest.raises(PfbenchError, match="have sha256") as err:
        resolve_weights("clip-vit-l-14-openai")
    assert "--no-verify" not in str(err.value)


def test_known_checksums_are_well_formed() -> None:
    for w in KNOWN_WEIGHTS.values():
        assert w.sha256 is None or (len(w.sha256) == 64 and int(w.sha256, 16) >= 0)
        assert w.url.endswith(w.filename)
        assert w.cache in ("torch-hub", "open_clip") or w.cache == f"hf:stabilityai/{w.subdir}"
        if w.cache == "torch-hub" and "-" in w.filename and w.sha256 is not None:
            # torch hub names a file "<name>-<first 8+ hex of its sha256>.<ext>"
            assert w.sha256.startswith(w.filename.rsplit("-", 1)[1].split(".")[0])
        if "openaipublic" in w.url:
            assert w.url.split("/")[-2] == w.sha256  # OpenAI's URL carries the sha256


def test_hf_snapshot_and_subdir_lookup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """diffusers files share one generic name: $PFBENCH_WEIGHTS/<key>/ and the hub snapshots are searched."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv("PFBENCH_WEIGHTS", raising=False)
    with pytest.raises(PfbenchError, match=r"sd-vae-ft-ema weights file .*models--stabilityai--sd-vae-ft-ema.*"
                                           r"<a folder listed in \$PFBENCH_WEIGHTS>/sd-vae-ft-ema"):
        resolve_weights("sd-vae-ft-ema")
    snap = tmp_path / "hub" / "models--stabilityai--sd-vae-ft-ema" / "snapshots" / "abc123"
    _put(snap, b"vae", name="diffusion_pytorch_model.safetensors")
    assert resolve_weights("sd-vae-ft-ema") == snap / "diffusion_pytorch_model.safetensors"
    _put(tmp_path / "w" / "sd-vae-ft-ema", b"vae2", name="diffusion_pytorch_model.safetensors")
    monkeypatch.setenv("PFBENCH_WEIGHTS", str(tmp_path / "w"))
    assert resolve_weights("sd-vae-ft-ema") == tmp_path / "w" / "sd-vae-ft-ema" / "diffusion_pytorch_model.safetensors"
