"""The shared strict builder: plain data → frozen dataclasses, with errors naming the key path."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from pfbench import PfbenchError
from pfbench.config import Builder, Wording


@dataclass(frozen=True)
class Inner:
    name: str
    scale: float = 1.0


@dataclass(frozen=True)
class Outer:
    steps: int = 10
    rate: float = 0.5
    flag: bool = False
    label: str | None = None
    inner: Inner | None = None
    sizes: list[int] = field(default_factory=list)
    table: dict[str, float] = field(default_factory=dict)
    items: list[Inner] = field(default_factory=list)
    extra: Any = None


PLAIN = Builder()
SHORT = Builder(shorthands={Inner: "name"})


def error(builder: Builder, data: Any, cls: type = Outer) -> str:
    with pytest.raises(PfbenchError) as info:
        builder.build(cls, data)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_defaults_and_types() -> None:
    got = PLAIN.build(Outer, {"steps": 3, "rate": 2, "flag": True, "label": "x", "extra": {"any": [1]}})
    assert got == Outer(steps=3, rate=2.0, flag=True, label="x", extra={"any": [1]})
    assert isinstance(got.rate, float)  # int → float where a float is wanted
    assert PLAIN.build(Outer, {}) == Outer()


def test_unknown_key_names_path_and_nearest_key() -> None:
    assert error(PLAIN, {"stesp": 1}) == "unknown key 'stesp'; did you mean 'steps'?"
    assert error(PLAIN, {"inner": {"name": "a", "scael": 2}}) == "unknown key 'inner.scael'; did you mean 'scale'?"
    msg = error(PLAIN, {"zzzzzz": 1})
    assert msg.startswith("unknown key 'zzzzzz' (valid: steps, rate, flag")


def test_bool_is_not_int_and_strings_are_not_numbers() -> None:
    assert error(PLAIN, {"steps": True}) == "steps: expected int, got True"
    assert error(PLAIN, {"rate": False}) == "rate: expected float, got False"
    assert error(PLAIN, {"steps": 2.5}) == "steps: expected int, got 2.5"
    assert error(PLAIN, {"rate": "1e-4"}) == "rate: expected float, got '1e-4'"
    assert error(PLAIN, {"flag": 1}) == "flag: expected bool, got 1"
    assert error(PLAIN, {"label": 3}) == "label: expected str, got 3"


def test_optional() -> None:
    assert PLAIN.build(Outer, {"label": None, "inner": None}) == Outer()
    assert PLAIN.build(Outer, {"inner": {"name": "a"}}).inner == Inner("a")
    assert error(PLAIN, {"inner": 3}) == "inner: expected a mapping for Inner, got 3"


def test_lists_and_dicts_are_typed_with_indexed_paths() -> None:
    got = PLAIN.build(Outer, {"sizes": [1, 2], "table": {"a": 1, 2: 0.5}, "items": [{"name": "a", "scale": 3}]})
    assert got.sizes == [1, 2] and got.table == {"a": 1.0, "2": 0.5} and got.items == [Inner("a", 3.0)]
    assert error(PLAIN, {"sizes": 4}) == "sizes: expected a list, got 4"
    assert error(PLAIN, {"sizes": [1, "2"]}) == "sizes[1]: expected int, got '2'"
    assert error(PLAIN, {"table": [1]}) == "table: expected a mapping, got [1]"
    assert error(PLAIN, {"table": {"a": "x"}}) == "table.a: expected float, got 'x'"
    assert error(PLAIN, {"items": [{"name": "a", "scael": 1}]}) == "unknown key 'items[0].scael'; did you mean 'scale'?"


def test_missing_required_key() -> None:
    assert error(PLAIN, {"inner": {"scale": 2.0}}) == "missing key 'inner.name'"
    assert error(PLAIN, {}, Inner) == "missing key 'name'"


def test_shorthand_is_declared_by_the_caller() -> None:
    assert SHORT.build(Outer, {"inner": "a", "items": ["b", {"name": "c"}]}) == Outer(
        inner=Inner("a"), items=[Inner("b"), Inner("c")]
    )
    assert error(PLAIN, {"inner": "a"}) == "inner: expected a mapping for Inner, got 'a'"  # not declared: no shorthand
    assert error(SHORT, {"inner": 3}) == "inner: expected a mapping for Inner or a string (name), got 3"


def test_fields_checks_a_partial_mapping() -> None:
    assert PLAIN.fields(Inner, {"scale": 2}, "over") == {"scale": 2.0}  # no missing-key check: overrides
    with pytest.raises(PfbenchError, match=r"unknown key 'over.sclae'; did you mean 'scale'\?"):
        PLAIN.fields(Inner, {"sclae": 2}, "over")
    with pytest.raises(PfbenchError, match="over: expected a mapping for Inner, got 3"):
        PLAIN.fields(Inner, 3, "over")  # type: ignore[arg-type]


def test_caller_wording() -> None:
    train_like = Builder(wording=Wording(
        prefix="cfg: ",
        unknown_key="unknown key {parent}{key!r}; did you mean {parent}{close!r}?",
        unknown_key_no_match="unknown key {parent}{key!r}; valid keys: {valid}",
        wrong_type="{path} must be {expected}, got {type} {value!r}{tip}",
    ))
    assert error(train_like, {"inner": {"name": "a", "scael": 1}}) == (
        "cfg: unknown key inner.'scael'; did you mean inner.'scale'?"
    )
    assert error(train_like, {"steps": "10"}) == "cfg: steps must be int, got str '10'"
    assert error(train_like, {"rate": "1e-4"}) == (
        "cfg: rate must be float, got str '1e-4' (YAML reads 1e-4 as text: write 1.0e-4)"
    )
    assert error(train_like, {"inner": {}}) == "cfg: missing key 'inner.name'"
    assert error(train_like, {"zzzzzz": 1}).startswith("cfg: unknown key 'zzzzzz'; valid keys: steps, rate")
