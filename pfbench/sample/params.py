"""Sampler parameters given as ``KEY=VALUE`` text (``pfbench sample --param p=0.6``), checked against the sampler.

Values are YAML scalars (``0.6``, ``4``, ``true``). The reference implementation (CompVis/patch-forcing,
``patch_flow/integrators.py`` and its ``configs/sampler/*.yaml``) names some parameters differently; its names are
accepted as aliases (``REFERENCE_NAMES``). Two of its parameters are fixed in pfbench rather than settable
(``REFERENCE_FIXED``): the patch size comes from the model, and the patch difficulty is pooled by the mean; they
are accepted when they agree and refused otherwise, so a reference command line never changes meaning silently.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from collections.abc import Sequence
from typing import Any

import yaml

from pfbench import PfbenchError
from pfbench.config import Builder

# reference name -> pfbench name (look-ahead ratio t_ctx = min(r·t_k, 1))
REFERENCE_NAMES: dict[str, str] = {"context_t_ratio": "r"}
# reference parameters pfbench does not take: what it uses instead ("patch_size": the model's)
REFERENCE_FIXED: dict[str, str] = {"patch_size": "the model's patch size", "mode": "mean"}

_TYPES = Builder()


def parse_params(sampler: Any, pairs: Sequence[str], patch_size: int | None = None) -> dict[str, Any]:
    """``["p=0.6", "context_t_ratio=1.4"]`` -> ``{"p": 0.6, "r": 1.4}`` for the sampler class ``sampler``.

    Args:
        sampler: a registered sampler class (a ``StepSampler`` dataclass).
        pairs: ``KEY=VALUE`` strings; keys are the sampler's fields (``steps`` aside) or reference aliases.
        patch_size: the model's patch size, to check a reference ``patch_size`` against.

    Raises:
        PfbenchError: one line: a malformed pair, an unknown key (naming the nearest valid one), a repeated key, a
            value of the wrong type, or a reference-only parameter that disagrees with pfbench.
    """
    name = getattr(sampler, "name", getattr(sampler, "__name__", "sampler"))
    fields = [f.name for f in dataclasses.fields(sampler) if f.name != "steps"] if dataclasses.is_dataclass(sampler) else []
    hints = typing.get_type_hints(sampler) if fields else {}
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise PfbenchError(f"--param {pair!r}: expected KEY=VALUE, e.g. --param p=0.4")
        value = _scalar(text)
        if key == "steps":
            raise PfbenchError("--param steps: give the step count with --steps N (or an NFE budget with --nfe)")
        if key in REFERENCE_FIXED:
            _check_fixed(key, value, patch_size)
            continue
        field = REFERENCE_NAMES.get(key, key)
        if field not in fields:
            valid = sorted({*fields, *(a for a, f in REFERENCE_NAMES.items() if f in fields)})
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f" (valid: {', '.join(valid) or 'none'})"
            raise PfbenchError(f"--param {key}: unknown parameter of sampler {name!r}{hint}")
        if field in out:
            raise PfbenchError(f"--param {key}: {field!r} is given twice")
        if hints.get(field) is float and isinstance(value, str):
            try:  # YAML 1.1 reads 1e-3 as a string
                value = float(value)
            except ValueError:
                pass
        out[field] = _TYPES.convert(value, hints[field], f"--param {key}")
    return out


def _scalar(text: str) -> Any:
    """A YAML scalar (``0.6`` -> 0.6, ``true`` -> True); text that is not a scalar stays text."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, (bool, int, float, str)) else text


def _check_fixed(key: str, value: Any, patch_size: int | None) -> None:
    """A reference-only parameter: accepted when it agrees with what pfbench uses, else one line saying why not."""
    if key == "mode" and value != "mean":
        raise PfbenchError(f"--param mode={value}: pfbench pools the patch difficulty by the mean only (the "
                           "reference's default); drop the parameter")
    if key == "patch_size" and patch_size is not None and value != patch_size:
        raise PfbenchError(f"--param patch_size={value}: the sampler uses the model's patch size ({patch_size}); "
                           "drop the parameter")


__all__ = ["REFERENCE_FIXED", "REFERENCE_NAMES", "parse_params"]
