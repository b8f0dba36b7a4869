"""torchrun entry point for tests/test_train.py: ``_ddp_worker.py SPEC.json OUT_DIR``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pfbench.train import spec_from_dict, train

if __name__ == "__main__":
    spec = spec_from_dict(json.loads(Path(sys.argv[1]).read_text()))
    result = train(spec, Path(sys.argv[2]), progress=False)
    print(f"steps={result.steps} losses={result.losses}")
