"""Run one pfbench benchmark: ``python benchmarks/run.py NAME [key=value ...] [--json PATH]``.

The same as ``pfbench bench NAME key=value ...``; NAME is ``overhead``, ``dedup``, ``gpu-throughput``, ``train-throughput``, ``fid-cell``, ``fd`` or
``features``.
Examples::

    python benchmarks/run.py overhead                      # cpu-xs, batch 250, all samplers, 1 thread
    python benchmarks/run.py dedup preset=B/2 batch=2 nfe=4
    python benchmarks/run.py gpu-throughput compile=true --json reports/bench/gpu.json
    python benchmarks/run.py features device=cuda n=2000 batch=250   # Inception in pfbench vs bare
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pfbench import PfbenchError
from pfbench.bench.run import parse_options, run_bench
from pfbench.io import atomic_write_text


def main(argv: list[str]) -> int:
    json_path = None
    if "--json" in argv:
        i = argv.index("--json")
        json_path, argv = Path(argv[i + 1]), argv[:i] + argv[i + 2 :]
    if not argv:
        print(__doc__)
        return 2
    try:
        result = run_bench(argv[0], **parse_options(argv[0], argv[1:]))
    except PfbenchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if json_path is not None:
        atomic_write_text(json_path, json.dumps(result, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
