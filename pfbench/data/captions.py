"""What an embedded-dataset caption asks for: the attributes a text-to-image judge checks (docs/protocol.md §9, embedded).

The embedded captions (``pfbench.data.embedded``) follow one grammar::

    a [small |large ]<colour> <texture> <class> <position> on a <background> background

with position ``at the top|bottom[ left|right]``, ``on the left|right`` or ``in the center`` and background
``plain <colour>``, ``smooth <colour> gradient`` or ``<colour> radial gradient``; a caption without a size word
describes a medium object. ``parse_caption`` inverts that grammar exactly. Other prompts (a prompt file's
``"a red striped star"``) are read by keywords, and then only what they name explicitly counts: a prompt
without a size word asks for no size.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torch import Tensor

from pfbench.data.embedded import CLASS_NAMES, COLOR_NAMES, TEXTURE_NAMES

SIZE_NAMES: tuple[str, ...] = ("small", "medium", "large")
# 3 x 3 grid: index 3·vertical + horizontal, vertical (top, middle, bottom), horizontal (left, middle, right)
POSITION_NAMES: tuple[str, ...] = (
    "top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right",
)  # fmt: skip
BG_KIND_NAMES: tuple[str, ...] = ("plain", "smooth gradient", "radial gradient")

# attribute -> its value names (index = value); the order attributes are reported in
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "class": CLASS_NAMES,
    "color": COLOR_NAMES,
    "texture": TEXTURE_NAMES,
    "size": SIZE_NAMES,
    "position": POSITION_NAMES,
    "bg_color": COLOR_NAMES,
    "bg_kind": BG_KIND_NAMES,
}


def _alt(names: Sequence[str]) -> str:
    return "|".join(re.escape(n.lower()) for n in sorted(names, key=len, reverse=True))


_C = _alt(COLOR_NAMES)
_CAPTION = re.compile(
    rf"a (?:(?P<size>small|large) )?(?P<color>{_C}) (?P<texture>{_alt(TEXTURE_NAMES)}) (?P<cls>{_alt(CLASS_NAMES)}) "
    r"(?:at the (?P<v>top|bottom)(?: (?P<h1>left|right))?|on the (?P<h2>left|right)|in the center) "
    rf"on a (?:plain (?P<bg0>{_C})|smooth (?P<bg1>{_C}) gradient|(?P<bg2>{_C}) radial gradient) background"
)
_V = {None: 1, "top": 0, "bottom": 2}
_H = {None: 1, "left": 0, "right": 2}


def _lower(names: Sequence[str]) -> list[str]:
    return [n.lower() for n in names]


def parse_caption(text: str) -> dict[str, int]:
    """The attributes a prompt asks for, as ``{attribute: value index}`` (``ATTRIBUTES`` order and names).

    An embedded caption gives all seven attributes; another prompt gives those it names by keyword (a class
    name, a colour before the class name and one after "on a", a texture, small/large, a position phrase). An
    attribute named ambiguously (two colours for the object) is left out, as is everything of ``""``.
    """
    s = " ".join(text.lower().replace(".", " ").replace(",", " ").split())
    m = _CAPTION.fullmatch(s)
    if m is not None:
        bg_kind = next(k for k in range(3) if m.group(f"bg{k}") is not None)
        h = m.group("h1") or m.group("h2")
        return {
            "class": _lower(CLASS_NAMES).index(m.group("cls")),
            "color": COLOR_NAMES.index(m.group("color")),
            "texture": TEXTURE_NAMES.index(m.group("texture")),
            "size": SIZE_NAMES.index(m.group("size") or "medium"),
            "position": 3 * _V[m.group("v")] + _H[h],
            "bg_color": COLOR_NAMES.index(m.group(f"bg{bg_kind}")),
            "bg_kind": bg_kind,
        }
    return _keywords(s)


def _found(names: Sequence[str], s: str) -> list[int]:
    """Indices of ``names`` occurring in ``s`` as whole words (longest names first, without overlaps)."""
    hits: list[int] = []
    for i in sorted(range(len(names)), key=lambda k: -len(names[k])):
        pattern = rf"\b{re.escape(names[i].lower())}\b"
        if re.search(pattern, s):
            hits.append(i)
            s = re.sub(pattern, " ", s)
    return hits


def _keywords(s: str) -> dict[str, int]:
    obj, _, bg = s.partition(" on a ")
    out: dict[str, int] = {}
    for attr, names, where in (("class", CLASS_NAMES, obj), ("color", COLOR_NAMES, obj),
                               ("texture", TEXTURE_NAMES, obj), ("size", ("small", "large"), obj),
                               ("bg_color", COLOR_NAMES, bg)):  # fmt: skip
        hits = _found(names, where)
        if len(hits) == 1:
            out[attr] = SIZE_NAMES.index(names[hits[0]]) if attr == "size" else hits[0]
    pos = re.search(r"(?:at the (top|bottom)(?: (left|right))?|on the (left|right)|in the center)", obj)
    if pos is not None:
        out["position"] = 3 * _V[pos.group(1)] + _H[pos.group(2) or pos.group(3)]
    kinds = [k for k, pat in enumerate((r"\bplain\b", r"\bsmooth\b", r"\bradial\b")) if re.search(pat, bg)]
    if bg and len(kinds) == 1:
        out["bg_kind"] = kinds[0]
    return out


def attribute_targets(captions: Sequence[str]) -> dict[str, Tensor]:
    """``{attribute: (N,) int64}`` parsed from the captions (``parse_caption``), -1 where a caption does not name it."""
    parsed = [parse_caption(c) for c in captions]
    return {a: torch.tensor([p.get(a, -1) for p in parsed], dtype=torch.long) for a in ATTRIBUTES}


__all__ = ["ATTRIBUTES", "BG_KIND_NAMES", "POSITION_NAMES", "SIZE_NAMES", "attribute_targets", "parse_caption"]
