"""A ``pfbench tune`` process with an analytic objective, for the kill/resume and two-tuner tests.

Usage: python _tune_worker.py RESULTS_ROOT TRIALS SLEEP_S LOG. Appends one line per trial evaluation to LOG and
prints the number of trials this process evaluated (search-phase cells / tuning seeds) as its last line.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from test_tune import analytic_rows, tiny_spec  # noqa: E402

from pfbench.suite.tune import Tuner  # noqa: E402

root, trials, sleep_s, log = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), Path(sys.argv[4])


def evaluate(cells):  # type: ignore[no-untyped-def]
    time.sleep(sleep_s)
    with log.open("a") as f:
        f.write(" ".join(f"{c.seed}:{sorted(c.sampler.params.items())}" for c in cells) + "\n")
    return analytic_rows(cells)


tuner = Tuner(tiny_spec(trials, samplers=["look_ahead"]), root, root / "reports", evaluate=evaluate, progress=False)
tuner.run()
print(sum(phase == "search" for phase, _ in tuner.evaluated) // len(tuner.tune.tuning_seeds))  # trials evaluated
