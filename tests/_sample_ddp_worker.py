"""torchrun entry point for tests/test_sample_ddp.py: ``_sample_ddp_worker.py SPEC.json OUT_DIR``.

Also imported by the test to run the same sampling job in one process (``run``).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pfbench.adapters.dit import DiTAdapter
from pfbench.bench.sampling import perturbed_net
from pfbench.registry import SAMPLERS
from pfbench.sample.distributed import write_shards_distributed
from pfbench.types import Cond, ModelOut


class Counting:
    """Adapter wrapper counting model calls (to see which process sampled what)."""

    def __init__(self, model: DiTAdapter) -> None:
        self.model = model
        self.patch_size, self.num_classes, self.has_difficulty = model.patch_size, model.num_classes, True
        self.input_shape = model.input_shape
        self.calls = 0

    def __call__(self, x: Tensor, t: Tensor, cond: Cond) -> ModelOut:
        self.calls += 1
        return self.model(x, t, cond)

    def forwards_per_call(self, t: Tensor) -> int:
        return self.model.forwards_per_call(t)

    def gflops(self, t: Tensor) -> float:
        return self.model.gflops(t)


def run(spec: dict[str, Any], out: Path) -> tuple[dict[str, Any], int]:
    """Samples the spec's job into ``out``; returns (manifest, model calls made by this process)."""
    model = Counting(DiTAdapter(perturbed_net(spec["preset"], "pf", seed=spec["net_seed"], overrides=spec["net"])))
    sampler = SAMPLERS.get(spec["sampler"]).from_budget({}, spec["nfe"])
    manifest = write_shards_distributed(out, model, sampler, n=spec["n"], seed=spec["seed"],
                                        batch_size=spec["batch_size"], shard_size=spec["shard_size"],
                                        config={"model": "tiny", "net": spec["net"]})
    return manifest, model.calls


if __name__ == "__main__":
    torch.set_num_threads(1)
    manifest, calls = run(json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2]))
    print(f"rank={os.environ.get('RANK')} world={os.environ.get('WORLD_SIZE')} calls={calls} "
          f"complete={manifest['complete']}", flush=True)
    os._exit(0)  # skip interpreter teardown, where gloo's threads can abort after all work is written
