"""Limits on a suite's YAML before hydra and OmegaConf read it: file size, nesting depth, alias expansion, and the
``defaults:`` include graph (a cycle is named, not a "maximum recursion depth exceeded").

PyYAML composes an alias as a reference to the anchored node, so a small file can describe a huge tree ("alias
bomb": 10 levels of 9 aliases each are 9**10 nodes); OmegaConf copies every reference. ``check_suite_files``
counts the nodes of the tree as it would be expanded, on the composed graph (each node once, memoised), and
refuses a file past the limits in one line before anything is expanded.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from pfbench import PfbenchError

MAX_BYTES = 1 << 20  # a suite file (the largest shipped one is ~6 kB)
MAX_DEPTH = 64  # nested mappings and lists
MAX_NODES = 200_000  # nodes of the tree after alias expansion (a large suite has a few thousand)


def check_suite_files(path: Path) -> None:
    """Checks a suite file and every file it includes through ``defaults:`` (recursively).

    Raises:
        PfbenchError: a file is too large, nested too deeply, expands past ``MAX_NODES`` (aliases), or the
            includes form a cycle (``include cycle: a.yaml -> b.yaml -> a.yaml``).
    """
    root = path.resolve().parent
    _visit(path.resolve(), root, [])


def _visit(path: Path, root: Path, stack: list[Path]) -> None:
    if path in stack:
        names = [_name(p, root) for p in (*stack[stack.index(path):], path)]
        raise PfbenchError(f"{_name(stack[0], root)}: include cycle: {' -> '.join(names)}")
    node = _compose(path)
    for inc in _includes(node, path, root):
        if inc.is_file():
            _visit(inc, root, [*stack, path])  # a missing include is hydra's to report


def _name(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def _compose(path: Path) -> yaml.Node | None:
    """The file's YAML node graph (aliases unexpanded), after the size, depth and expansion checks."""
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise PfbenchError(f"{path}: {size} bytes; a suite file may have at most {MAX_BYTES} bytes")
    try:
        node = yaml.compose(path.read_text(), Loader=yaml.SafeLoader)
    except RecursionError:
        raise PfbenchError(f"{path}: nested too deeply (at most {MAX_DEPTH} levels)") from None
    except yaml.YAMLError:
        return None  # malformed: hydra reports it with its line and column (``parse.yaml_error``)
    if node is not None:
        _expanded_size(node, path)
    return node


def _expanded_size(node: yaml.Node, path: Path) -> int:
    """Nodes of the tree once every alias is copied (as OmegaConf does); raises past the limits."""
    sizes: dict[int, int] = {}
    depths: dict[int, int] = {}
    open_: set[int] = set()

    def walk(n: yaml.Node) -> tuple[int, int]:
        key = id(n)
        if key in sizes:
            return sizes[key], depths[key]
        if key in open_:
            raise PfbenchError(f"{path}: an alias refers to a node that contains it (a recursive structure)")
        open_.add(key)
        children: list[yaml.Node] = []
        if isinstance(n, yaml.SequenceNode):
            children = list(n.value)
        elif isinstance(n, yaml.MappingNode):
            children = [x for kv in n.value for x in kv]
        size, depth = 1, 0
        for c in children:
            s, d = walk(c)
            size, depth = size + s, max(depth, d)
            if size > MAX_NODES:
                raise PfbenchError(f"{path}: expands to more than {MAX_NODES} nodes (aliases: *name references "
                                   "copied over and over); write the values out or use fewer aliases")
        depth += 1 if children else 0
        if depth > MAX_DEPTH:
            raise PfbenchError(f"{path}: nested too deeply (at most {MAX_DEPTH} levels)")
        open_.discard(key)
        sizes[key], depths[key] = size, depth
        return size, depth

    return walk(node)[0]


def _includes(node: yaml.Node | None, path: Path, root: Path) -> list[Path]:
    """The files a suite file's ``defaults:`` list names (hydra: ``name``, ``group: option``, ``/abs/name``)."""
    if not isinstance(node, yaml.MappingNode):
        return []
    defaults = next((v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == "defaults"), None)
    if not isinstance(defaults, yaml.SequenceNode):
        return []
    here = path.parent
    out = []
    for entry in defaults.value:
        if isinstance(entry, yaml.ScalarNode):
            name = str(entry.value)
        elif isinstance(entry, yaml.MappingNode) and len(entry.value) == 1:
            group, option = entry.value[0]
            if not (isinstance(group, yaml.ScalarNode) and isinstance(option, yaml.ScalarNode)):
                continue
            name = f"{str(group.value).removeprefix('override ').strip()}/{option.value}"
        else:
            continue
        name = name.removeprefix("optional ").strip()
        if name in ("_self_", "") or name.endswith(("/null", "/None")):  # ``group: null`` names no file
            continue
        base = root if name.startswith("/") else here
        out.append((base / f"{name.lstrip('/')}.yaml").resolve())
    return out
