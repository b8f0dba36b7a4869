"""Multi-process sampling: the same shards, byte for byte, on 1 or 2 processes; resume on any world size."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from pfbench import PfbenchError
from pfbench.sample.distributed import write_shards_distributed
from pfbench.sample.shards import load_shards, read_manifest, write_shards
from pfbench.samplers.euler import Euler

HERE = Path(__file__).parent
_spec = importlib.util.spec_from_file_location("_sample_ddp_worker", HERE / "_sample_ddp_worker.py")
assert _spec is not None and _spec.loader is not None
worker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(worker)

# 10 samples in shards of 3 -> 4 shards (3, 3, 3, 1); the random-mask sampler uses per-sample keys.
SPEC: dict[str, Any] = {"preset": "cpu-xs", "net_seed": 3, "net": {"input_size": 8, "depth": 2, "width": 32, "heads": 2},
                        "sampler": "dual_loop_random", "nfe": 4, "n": 10, "seed": 5, "batch_size": 2,
                        "shard_size": 3}
NFE = 4


def run_here(out: Path) -> tuple[dict[str, Any], int]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as the torchrun workers: the same kernels, the same bits
    try:
        result: tuple[dict[str, Any], int] = worker.run(SPEC, out)
        return result
    finally:
        torch.set_num_threads(before)


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def without_seconds(manifest: dict[str, Any]) -> dict[str, Any]:
    shards = [{k: v for k, v in s.items() if k != "seconds"} for s in manifest["shards"]]
    totals = {k: v for k, v in manifest.get("totals", {}).items() if k != "seconds"}
    return {**manifest, "shards": shards, "totals": totals}


def test_two_processes_write_the_same_bytes_as_one(tmp_path: Path) -> None:
    one, calls = run_here(tmp_path / "one")
    assert one["complete"] and [s["count"] for s in one["shards"]] == [3, 3, 3, 1]
    assert calls == 7 * NFE  # batches of 2: (2, 1) per full shard, (1) for the last

    (tmp_path / "spec.json").write_text(json.dumps(SPEC))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
           str(HERE / "_sample_ddp_worker.py"), str(tmp_path / "spec.json"), str(tmp_path / "two")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # rank 0 sampled shards 0 and 2 (4 batches), rank 1 shards 1 and 3 (3 batches): disjoint work
    assert f"rank=0 world=2 calls={4 * NFE} complete=True" in proc.stdout
    assert f"rank=1 world=2 calls={3 * NFE} complete=True" in proc.stdout

    two = tmp_path / "two"
    assert files(two) == files(tmp_path / "one")
    for entry in one["shards"]:
        shard = entry["file"]
        assert (two / shard).read_bytes() == (tmp_path / "one" / shard).read_bytes(), shard
        assert {info.date_time for info in zipfile.ZipFile(two / shard).infolist()} == {(1980, 1, 1, 0, 0, 0)}
    assert without_seconds(read_manifest(two)) == without_seconds(one)
    images, labels = load_shards(two)
    assert images.shape == (10, 3, 8, 8) and images.dtype == np.uint8 and images.std() > 10
    assert np.array_equal(labels, load_shards(tmp_path / "one")[1])

    # resume on another world size, in one process: shard 1 lost, shard 3 damaged, shard 2's record lost
    (two / "shard_00001.npz").unlink()
    (two / "shard_00003.npz").write_bytes(b"damaged")
    (two / "shard_00002.json").unlink()  # its manifest entry (sha256 checked) still vouches for it
    resumed, calls = run_here(two)
    assert calls == (2 + 1) * NFE  # shards 1 and 3 only
    assert (two / "shard_00002.json").is_file()
    assert without_seconds(resumed) == without_seconds(one)
    for entry in one["shards"]:
        assert (two / entry["file"]).read_bytes() == (tmp_path / "one" / entry["file"]).read_bytes()


def test_finished_run_is_not_recomputed_and_identity_is_checked(tmp_path: Path) -> None:
    first, _ = run_here(tmp_path)
    again, calls = run_here(tmp_path)
    assert calls == 0 and without_seconds(again) == without_seconds(first)
    assert again["totals"]["samples"] == 10 and again["totals"]["nfe"] == NFE
    with pytest.raises(PfbenchError, match="different sampling run"):
        worker.run({**SPEC, "seed": 6}, tmp_path)


class Failing(worker.Counting):  # type: ignore[misc,name-defined]
    def __init__(self, model: Any, fail_after: int) -> None:
        super().__init__(model)
        self.fail_after = fail_after

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: Any) -> Any:
        if self.calls >= self.fail_after:
            raise RuntimeError("simulated kill")
        return super().__call__(x, t, cond)


def test_adopts_an_interrupted_write_shards_run(tmp_path: Path) -> None:
    from pfbench.adapters.dit import DiTAdapter
    from pfbench.bench.sampling import perturbed_net

    base = DiTAdapter(perturbed_net("cpu-xs", "pf", seed=1, overrides={"depth": 1, "width": 32, "heads": 2}))
    kw: dict[str, Any] = dict(n=7, seed=2, batch_size=3, shard_size=3, config={"model": "m"})
    straight = write_shards(tmp_path / "a", base, Euler(steps=2), **kw)
    with pytest.raises(RuntimeError):  # killed during shard 1 (shard 0 = one batch of 3, 2 calls)
        write_shards(tmp_path / "b", Failing(base, fail_after=3), Euler(steps=2), **kw)
    assert len(read_manifest(tmp_path / "b")["shards"]) == 1
    model = worker.Counting(base)
    final = write_shards_distributed(tmp_path / "b", model, Euler(steps=2), **kw)
    assert model.calls == 2 * 2  # shards 1 and 2 only; shard 0 was adopted
    assert final["complete"] and final["totals"] == {**straight["totals"], "seconds": final["totals"]["seconds"]}
    assert (tmp_path / "b" / "shard_00000.json").is_file()
    a, b = load_shards(tmp_path / "a"), load_shards(tmp_path / "b")
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    with pytest.raises(PfbenchError, match="different sampling run"):
        write_shards_distributed(tmp_path / "b", model, Euler(steps=3), **kw)
