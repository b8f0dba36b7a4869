"""Every reference in the repository's code and docs points into the repository.

Scans the ``*.py``, ``*.md`` and ``*.yaml`` files (not ``.venv``, not the generated ``results/`` and ``reports/``
folders) for citations of documents the repository does not contain, relative Markdown links and backticked repo
paths that do not exist, links to a heading that is not there, and ``docs/protocol.md §N`` citations of a section
that ``docs/protocol.md`` does not have.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Generated or installed trees; every hidden folder (.git, .venv, .venv-ci, .nox, caches) is skipped too.
SKIP_DIRS = {"results", "reports", "__pycache__", "node_modules", "build", "dist"}
PROTOCOL = "docs/protocol.md"

# Documents that live outside the repository (a reader of the repo cannot follow them).
FOREIGN = re.compile(r"SPEC\s*§|SPEC\.md|STYLE\.md|\.\./shared\b|\bthe SPEC\b|\bSPEC(?:'s| default| and paper| rounds| "
                     r"recursion| numbers| width)\b|[;,] SPEC\)|\(SPEC\)(?=[.\s\"'])|\(SPEC: \d")
LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")  # [text](target)
TICKED = re.compile(r"`([^`\n]+)`")
REPO_PATH = re.compile(r"(?:docs|suites|pfbench|tests|benchmarks)/[\w.\-/]+\.(?:md|ya?ml|py|toml|json|parquet|png|html|"
                       r"npz|pt|safetensors|txt)")
CITATION = re.compile(r"docs/protocol\.md`?((?:[\s,;]*(?:and\s+)?§\s*\d+(?:\.\d+)?)+)")
SECTION = re.compile(r"§\s*(\d+)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def repo_files() -> Iterator[Path]:
    for path in sorted(ROOT.rglob("*")):
        rel = path.relative_to(ROOT)
        if (path.suffix in (".py", ".md", ".yaml", ".yml") and path.is_file() and not SKIP_DIRS & set(rel.parts[:-1])
                and not any(part.startswith(".") or part.endswith(".egg-info") for part in rel.parts[:-1])
                and path != Path(__file__).resolve()):  # this file's examples are broken on purpose
            yield path


def slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {slug(h) for h in HEADING.findall(path.read_text())}


def protocol_sections() -> set[str]:
    return set(re.findall(r"^## (\d+)\. ", (ROOT / PROTOCOL).read_text(), re.M))


def problems(path: Path, text: str, sections: set[str]) -> list[str]:
    """What in ``text`` (the content of ``path``) points outside the repository or to nothing."""
    rel = path.relative_to(ROOT).as_posix()
    found: list[str] = []
    for i, line in enumerate(text.splitlines(), 1):
        where = f"{rel}:{i}"
        for m in FOREIGN.finditer(line):
            found.append(f"{where}: cites {m.group(0)!r}, a document outside the repository")
        for m in CITATION.finditer(line):
            for n in SECTION.findall(m.group(1)):
                if n not in sections:
                    found.append(f"{where}: cites {PROTOCOL} §{n}, which has no such section")
        if path.suffix == ".md":
            for m in LINK.finditer(line):
                found += _link_problem(path, m.group(1), where)
        for m in TICKED.finditer(line):
            target = m.group(1).split("::")[0].strip()
            if REPO_PATH.fullmatch(target) and not (ROOT / target).exists():
                found.append(f"{where}: `{target}` does not exist in the repository")
    return found


def _link_problem(path: Path, target: str, where: str) -> list[str]:
    if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("<"):
        return []  # http:, https:, mailto:, ...: not a file of this repository
    file_part, _, fragment = target.partition("#")
    dest = path if not file_part else (path.parent / file_part).resolve()
    if not dest.exists():
        return [f"{where}: link to {target!r}, which does not exist"]
    if ROOT not in dest.parents and dest != ROOT:
        return [f"{where}: link to {target!r} leaves the repository"]
    if fragment and dest.suffix == ".md" and fragment not in anchors(dest):
        return [f"{where}: link to {target!r}: {dest.name} has no heading with that anchor"]
    return []


def test_every_reference_points_into_the_repository() -> None:
    sections = protocol_sections()
    assert sections, f"{PROTOCOL} has no numbered sections ('## N. Title')"
    found = [p for path in repo_files() for p in problems(path, path.read_text(errors="replace"), sections)]
    assert not found, "references to files or sections the repository does not contain:\n" + "\n".join(found)


@pytest.mark.parametrize("text,needle", [
    ("see SPEC §5 for the samplers", "outside the repository"),
    ("# (../shared/SPEC.md)", "outside the repository"),
    ("house style: STYLE.md rule 5", "outside the repository"),
    ("splits: 10 (SPEC).", "outside the repository"),
    ("hidden: projector width (SPEC and paper: 2048)", "outside the repository"),
    ("the quantile rule (docs/protocol.md §99)", "no such section"),
    ("`docs/protocol.md` §6, §98", "no such section"),
    ("see `pfbench/samplers/no_such_sampler.py`", "does not exist"),
    ("the suite `suites/no_such_suite.yaml`", "does not exist"),
    ("[the page](docs/no_such_page.md)", "does not exist"),
    ("[the section](docs/protocol.md#99-no-such-section)", "no heading with that anchor"),
])
def test_the_checker_catches_each_kind_of_broken_reference(text: str, needle: str) -> None:
    found = problems(ROOT / "README.md", text, protocol_sections())
    assert any(needle in p for p in found), found


def test_the_checker_accepts_valid_references() -> None:
    text = ("`docs/protocol.md` §6 and §9; docs/protocol.md §1, §11. [protocol](docs/protocol.md#6-sampling) "
            "[web](https://example.org) `pfbench/samplers/look_ahead.py` `tests/test_nets.py::test_dedup_equals_naive` "
            "worker.run(SPEC, out); json.dumps(SPEC); SPECIALS; _ddp_worker.py SPEC.json OUT_DIR")
    assert problems(ROOT / "README.md", text, protocol_sections()) == []
