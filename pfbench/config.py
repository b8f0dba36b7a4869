"""Strict conversion of plain config data (parsed YAML) into frozen dataclasses.

One mechanism serves every config reader (``suite.py`` for suites, ``train.py`` for training runs): each
declares a ``Builder`` with its own error wording and shorthand forms. The builder checks keys against the
dataclass fields (an unknown key names the nearest valid one), checks ``bool``/``int``/``float``/``str``
values (a bool is not an int; an int becomes a float where a float is wanted), and recurses into nested
dataclasses, ``X | None``, ``list[X]`` and ``dict[str, X]``. Other annotations (``Any``, tuples) pass the
value through unchecked.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pfbench import PfbenchError

T = TypeVar("T")

_FLOAT_TIP = " (YAML reads 1e-4 as text: write 1.0e-4)"


@dataclass(frozen=True)
class Wording:
    """How a builder words its errors: a prefix plus ``str.format`` templates.

    Templates may use ``path`` (full key path, e.g. ``sweep.nfe``), ``parent`` (the path above the key with a
    trailing dot, e.g. ``sweep.``, or empty), ``key``, ``close`` (the nearest valid key), ``valid`` (the valid
    keys, comma-separated), ``expected`` (e.g. ``int``, ``a list``, ``a mapping for DataSpec``), ``value``,
    ``type`` (the value's type name) and ``tip`` (advice for a number YAML read as text, else empty).

    Attributes:
        prefix: put before every message, e.g. ``"train config: "``.
        unknown_key: an unknown key with a close valid one.
        unknown_key_no_match: an unknown key with no close valid one.
        wrong_type: a value of the wrong type.
        missing_key: a required field that is absent.
    """

    prefix: str = ""
    unknown_key: str = "unknown key {path!r}; did you mean {close!r}?"
    unknown_key_no_match: str = "unknown key {path!r} (valid: {valid})"
    wrong_type: str = "{path}: expected {expected}, got {value!r}"
    missing_key: str = "missing key {path!r}"

    def error(self, template: str, **parts: Any) -> PfbenchError:
        """The error for ``template`` filled with ``parts``, prefixed."""
        return PfbenchError(self.prefix + template.format(**parts))


@dataclass(frozen=True)
class Builder:
    """A strict builder of dataclasses from plain data.

    Attributes:
        shorthands: dataclasses that also accept a bare string, mapped to the field the string fills
            (``{SamplerSpec: "name"}`` reads ``euler`` as ``SamplerSpec(name="euler")``).
        wording: how errors are worded.

    Example:
        ``Builder(shorthands={SamplerSpec: "name"}).build(GridSpec, {"models": ["a"], "samplers": ["euler"]})``
    """

    shorthands: Mapping[type, str] = field(default_factory=dict)
    wording: Wording = field(default_factory=Wording)

    def build(self, cls: type[T], data: Mapping[str, Any], path: str = "") -> T:
        """Builds dataclass ``cls`` from a mapping.

        Args:
            cls: a dataclass type.
            data: its fields as plain data; absent fields take their defaults.
            path: key path of ``data`` in the whole config, for messages (empty at the top).

        Returns:
            The instance (its ``__post_init__`` checks run as usual).

        Raises:
            PfbenchError: an unknown key, a value of the wrong type or a missing required key, naming its path.
        """
        kwargs = self.fields(cls, data, path)
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            if required and f.name not in kwargs:
                raise self.wording.error(self.wording.missing_key, path=_join(path, f.name))
        return cls(**kwargs)

    def fields(self, cls: type, data: Mapping[str, Any], path: str = "") -> dict[str, Any]:
        """Checks a partial mapping of ``cls``'s fields (e.g. overrides applied later) and types its values.

        Args:
            cls: a dataclass type.
            data: some of its fields as plain data.
            path: key path of ``data``, for messages.

        Returns:
            ``{field: typed value}`` for the keys of ``data``.

        Raises:
            PfbenchError: an unknown key or a value of the wrong type, naming its path.
        """
        if not isinstance(data, Mapping):
            raise self._wrong_type(data, f"a mapping for {cls.__name__}", path or cls.__name__)
        hints = typing.get_type_hints(cls)
        valid = [f.name for f in dataclasses.fields(cls)]
        for key in data:
            if key not in valid:
                close = difflib.get_close_matches(str(key), valid, n=1)
                w = self.wording
                parts = {"path": _join(path, str(key)), "parent": _join(path, ""), "key": key}
                if close:
                    raise w.error(w.unknown_key, close=close[0], **parts)
                raise w.error(w.unknown_key_no_match, valid=", ".join(valid), **parts)
        return {key: self.convert(value, hints[key], _join(path, key)) for key, value in data.items()}

    def convert(self, value: Any, hint: Any, path: str) -> Any:
        """Checks ``value`` against the type annotation ``hint``; returns the typed value.

        Raises:
            PfbenchError: a value of the wrong type, naming ``path``.
        """
        origin = typing.get_origin(hint)
        if origin in (types.UnionType, typing.Union):
            options = typing.get_args(hint)
            if value is None and type(None) in options:
                return None
            errors: list[PfbenchError] = []
            for option in options:
                if option is type(None):
                    continue
                try:
                    return self.convert(value, option, path)
                except PfbenchError as err:
                    errors.append(err)
            raise errors[0]  # the first option's complaint, e.g. `X | None` → X's
        if dataclasses.is_dataclass(hint) and isinstance(hint, type):
            if isinstance(value, str) and hint in self.shorthands:
                value = {self.shorthands[hint]: value}
            if not isinstance(value, Mapping):
                short = f" or a string ({self.shorthands[hint]})" if hint in self.shorthands else ""
                raise self._wrong_type(value, f"a mapping for {hint.__name__}{short}", path)
            return self.build(hint, value, path)
        if origin is list:
            if not isinstance(value, list | tuple):
                raise self._wrong_type(value, "a list", path)
            (item,) = typing.get_args(hint)
            return [self.convert(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
        if origin is dict:
            if not isinstance(value, Mapping):
                raise self._wrong_type(value, "a mapping", path)
            _, item = typing.get_args(hint)
            return {str(k): self.convert(v, item, f"{path}.{k}") for k, v in value.items()}
        if hint in (bool, int, float, str):
            is_bool = isinstance(value, bool)
            ok = isinstance(value, (int, float) if hint is float else hint) and (hint is bool or not is_bool)
            if not ok:
                raise self._wrong_type(value, hint.__name__, path)
            return float(value) if hint is float else value
        return value  # Any and unchecked annotations

    def _wrong_type(self, value: Any, expected: str, path: str) -> PfbenchError:
        tip = _FLOAT_TIP if expected == "float" and isinstance(value, str) else ""
        w = self.wording
        return w.error(w.wrong_type, path=path, expected=expected, value=value, type=type(value).__name__, tip=tip)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


__all__ = ["Builder", "Wording"]
