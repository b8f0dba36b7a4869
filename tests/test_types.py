"""Plain boundary data: the one float → uint8 rule (``pfbench.types.quantize``) and that nothing re-implements it."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from pfbench.types import quantize

ROOT = Path(__file__).resolve().parents[1]


def test_quantize_edges_and_dtype() -> None:
    x = torch.tensor([-2.0, -1.0, 0.0, 0.5, 1.0, 3.0])
    assert quantize(x).tolist() == [0, 0, 128, 191, 255, 255]
    assert quantize(x).dtype == torch.uint8
    assert quantize(x.double()).tolist() == quantize(x).tolist()  # float32 arithmetic whatever comes in


def test_quantize_equals_the_formula_in_float32() -> None:
    """clamp(round(127.5·x + 127.5), 0, 255) with round-half-to-even, computed independently in numpy."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(100_000, generator=g) * 2.4 - 1.2
    ties = (torch.arange(256, dtype=torch.float32) + 0.5 - 127.5) / 127.5  # values that land on k + 0.5
    x = torch.cat([x, ties])
    xs = x.numpy().astype(np.float32)
    want = np.clip(np.rint(xs * np.float32(127.5) + np.float32(127.5)), 0, 255).astype(np.uint8)
    assert np.array_equal(quantize(x).numpy(), want)


def test_no_other_module_writes_the_rule() -> None:
    """Every float → uint8 conversion goes through ``quantize``: a second copy of the formula is a failure."""
    found = [f"{p.relative_to(ROOT)}:{i}" for folder in ("pfbench", "tests", "benchmarks")
             for p in sorted((ROOT / folder).rglob("*.py")) if p.name not in ("types.py", "test_types.py")
             for i, line in enumerate(p.read_text().splitlines(), 1)
             if "127.5" in line and re.search(r"\b(round|rint)\b", line)]
    assert not found, f"float → uint8 written outside pfbench.types.quantize: {found}"
