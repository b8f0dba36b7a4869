"""torchrun entry point for tests/test_train.py: ``_ddp_worker.py SPEC.json OUT_DIR``."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from pfbench.train.loop import spec_from_dict, train

if __name__ == "__main__":
    spec = spec_from_dict(json.loads(Path(sys.argv[1]).read_text()))
    result = train(spec, Path(sys.argv[2]), progress=False)
    print(f"steps={result.steps} losses={result.losses}", flush=True)
    # Skip interpreter teardown: gloo's background threads can abort the process while C++ statics are
    # destroyed ("terminate called without an active exception"), after all work is written.
    os._exit(0)
