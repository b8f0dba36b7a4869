"""Import direction (ARCHITECTURE.md): every pfbench module imports only its own stage or stages below it.

The stage order is the data flow of ARCHITECTURE.md. The test parses every module's imports with ``ast``
(top-level and inside functions alike) and fails on an upward edge or an import cycle between modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "pfbench"

# Stage -> rank. A module may import modules of a stage with a lower rank, or of its own stage.
STAGES: dict[str, int] = {
    "pfbench": 0,  # errors, types, registry, config, io, weights resolver, shipped assets
    "pfbench.data": 1,
    "pfbench.nets": 1,
    "pfbench.encoders": 2,
    "pfbench.adapters": 3,
    "pfbench.train": 4,
    "pfbench.samplers": 5,
    "pfbench.sample": 6,
    "pfbench.metrics": 7,
    "pfbench.evaluate": 8,
    "pfbench.results": 9,
    "pfbench.report": 10,
    "pfbench.suite": 11,
    "pfbench.bench": 12,
    "pfbench.cli": 13,
}
# Stages that see a narrower interface than their rank allows (ARCHITECTURE.md, "The import rule":
# samplers see only the Adapter protocol, reports only Parquet).
ONLY: dict[str, set[str]] = {
    "pfbench.samplers": {"pfbench", "pfbench.types", "pfbench.adapters.base", "pfbench.samplers"},
    "pfbench.report": {"pfbench", "pfbench.io", "pfbench.results", "pfbench.report"},  # io: atomic writes (stdlib only)
    "pfbench.results": {"pfbench", "pfbench.io"},
}
CORE = {"pfbench", "pfbench.types", "pfbench.registry", "pfbench.plugins", "pfbench.config", "pfbench.io", "pfbench.locks",
        "pfbench.weights", "pfbench.assets", "pfbench.fetch", "pfbench.fetch_hub"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def stage(module: str) -> str:
    if module in CORE:
        return "pfbench"
    best = max((s for s in STAGES if module == s or module.startswith(s + ".")), key=len, default=None)
    if best is None or best == "pfbench":
        raise AssertionError(f"{module}: not in any stage of STAGES; add it (or its folder) to the table")
    return best


def imports(path: Path) -> set[str]:
    """pfbench modules imported by a file (``from pfbench.x import y`` counts as pfbench.x.y if a module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            if name.split(".")[0] == "pfbench" and _is_module(name):
                found.add(name)
    return found


def _is_module(name: str) -> bool:
    rel = Path(*name.split("."))
    return (ROOT.parent / rel).with_suffix(".py").exists() or (ROOT.parent / rel / "__init__.py").exists()


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports(p) - {module_name(p)} for p in sorted(ROOT.rglob("*.py"))}


def violations(edges: dict[str, set[str]]) -> list[str]:
    bad = []
    for src, dsts in sorted(edges.items()):
        s = stage(src)
        for dst in sorted(dsts):
            d = stage(dst)
            if d == "pfbench" and dst in ("pfbench.plugins",) and src != "pfbench.registry":
                bad.append(f"{src} -> {dst}: only the registry loads the plugin table")
            elif STAGES[d] > STAGES[s] or (STAGES[d] == STAGES[s] and d != s):
                bad.append(f"{src} ({s}) -> {dst} ({d}): upward import")
            elif s in ONLY and not any(dst == o or (o != "pfbench" and dst.startswith(o + ".")) for o in ONLY[s]):
                bad.append(f"{src} -> {dst}: {s} may import only {sorted(ONLY[s])}")
    return bad


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in edges:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_every_module_has_a_stage() -> None:
    for module in graph():
        stage(module)


def test_imports_run_one_way() -> None:
    bad = violations(graph())
    assert not bad, "upward or cross-stage imports:\n" + "\n".join(bad)


def test_no_import_cycles() -> None:
    found = cycles(graph())
    assert not found, f"import cycles: {found}"


def test_the_checker_catches_an_upward_edge_and_a_cycle() -> None:
    fake = {"pfbench.samplers.x": {"pfbench.adapters.cfg"}, "pfbench.train.a": {"pfbench.suite.runner"},
            "pfbench.suite.runner": {"pfbench.train.a"}}
    bad = violations(fake)
    assert any("pfbench.samplers.x -> pfbench.adapters.cfg" in b for b in bad)
    assert any("pfbench.train.a (pfbench.train) -> pfbench.suite.runner" in b for b in bad)
    assert cycles(fake) == [["pfbench.suite.runner", "pfbench.train.a"]]
    with pytest.raises(AssertionError, match="not in any stage"):
        stage("pfbench.unknown_module")
