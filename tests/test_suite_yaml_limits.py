"""Hostile suite YAML: alias bombs are refused quickly in bounded memory, include cycles are named."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pfbench import PfbenchError
from pfbench.suite.parse import load_suite


def _bomb(levels: int = 10, fanout: int = 9) -> str:
    """``levels`` lists of ``fanout`` aliases of the level below: fanout**levels nodes once expanded."""
    lines = ["name: bomb", "l0: &l0 [" + ", ".join(["x"] * fanout) + "]"]
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * fanout) + "]" for i in range(1, levels)]
    return "\n".join([*lines, "grid: []", "models: {}", ""])


# The child imports first, then caps its address space at what it uses plus 200 MB and times load_suite alone.
CHILD = textwrap.dedent("""
    import json, resource, sys, time
    from pfbench import PfbenchError
    from pfbench.suite.parse import load_suite
    vm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmSize:")) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (vm + (200 << 20), vm + (200 << 20)))
    t0 = time.perf_counter()
    try:
        load_suite(sys.argv[1])
        out = "loaded"
    except PfbenchError as err:
        out = str(err)
    except MemoryError:
        out = "MemoryError"
    print(json.dumps({"s": time.perf_counter() - t0, "out": out}))
""")


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux /proc")
def test_alias_bomb_is_refused_within_2_s_and_200_mb(tmp_path: Path) -> None:
    suite = tmp_path / "bomb.yaml"
    suite.write_text(_bomb())
    proc = subprocess.run([sys.executable, "-c", CHILD, str(suite)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "expands to more than" in got["out"] and "\n" not in got["out"], got
    assert got["s"] < 2.0, got  # a bound (the expansion would take minutes and gigabytes), not a benchmark


def test_small_alias_use_still_loads(tmp_path: Path) -> None:
    suite = tmp_path / "ok.yaml"
    suite.write_text(textwrap.dedent("""
        name: ok
        models: {pf: {checkpoint: "asset:embedded_pf_r16.pt"}}
        grid:
          - {models: [pf], samplers: &s [euler_pf, look_ahead]}
          - {models: [pf], samplers: *s, nfe: [4]}
    """))
    assert len(load_suite(suite).grid) == 2


@pytest.mark.parametrize(("text", "needle"), [
    ("name: deep\nx: " + "[" * 100 + "]" * 100 + "\n", "nested too deeply"),
    ("name: rec\nx: &a [1, *a]\n", "recursive"),
])
def test_deep_or_recursive_yaml_is_one_line(tmp_path: Path, text: str, needle: str) -> None:
    suite = tmp_path / "s.yaml"
    suite.write_text(text)
    with pytest.raises(PfbenchError, match=needle):
        load_suite(suite)


def test_include_cycles_are_named(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("defaults:\n  - b\n  - _self_\nname: a\n")
    (tmp_path / "b.yaml").write_text("defaults:\n  - a\n  - _self_\nname: b\n")
    (tmp_path / "me.yaml").write_text("defaults:\n  - me\n  - _self_\nname: me\n")
    with pytest.raises(PfbenchError, match=r"^a\.yaml: include cycle: a\.yaml -> b\.yaml -> a\.yaml$"):
        load_suite(tmp_path / "a.yaml")
    with pytest.raises(PfbenchError, match=r"include cycle: me\.yaml -> me\.yaml$"):
        load_suite(tmp_path / "me.yaml")


def test_a_huge_file_is_refused_before_parsing(tmp_path: Path) -> None:
    suite = tmp_path / "big.yaml"
    suite.write_text("name: big\n" + "# padding\n" * 200_000)
    with pytest.raises(PfbenchError, match="bytes; a suite file may have at most"):
        load_suite(suite)
