"""The benchmark entry point behind ``pfbench bench NAME key=value ...`` and ``benchmarks/run.py``.

``BENCHES`` maps each name to its function; options are the function's keyword arguments, typed from their
defaults, and a misspelt bench or option name is an error naming the nearest valid one.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from pfbench import PfbenchError
from pfbench.bench.cell import fid_cell
from pfbench.bench.metrics import fd_speed, feature_throughput
from pfbench.bench.sampling import sampler_overhead
from pfbench.bench.throughput import dedup_speedup, gpu_throughput
from pfbench.bench.training import train_throughput

BENCHES: dict[str, Callable[..., dict[str, Any]]] = {
    "overhead": sampler_overhead,
    "dedup": dedup_speedup,
    "gpu-throughput": gpu_throughput,
    "fd": fd_speed,
    "features": feature_throughput,
    "train-throughput": train_throughput,
    "fid-cell": fid_cell,
}


def _bench(name: str) -> Callable[..., dict[str, Any]]:
    if name not in BENCHES:
        close = difflib.get_close_matches(name, list(BENCHES), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise PfbenchError(f"unknown bench {name!r}{hint} (known: {', '.join(BENCHES)})")
    return BENCHES[name]


def _check_options(name: str, keys: Iterable[str]) -> Mapping[str, inspect.Parameter]:
    params = inspect.signature(_bench(name)).parameters
    for key in keys:
        if key not in params:
            close = difflib.get_close_matches(key, list(params), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise PfbenchError(f"bench {name!r} has no option {key!r}{hint} (options: {', '.join(params)})")
    return params


def run_bench(name: str, **kw: Any) -> dict[str, Any]:
    """Runs the bench ``name`` (a key of ``BENCHES``) with keyword options.

    Returns the bench's plain (JSON-serialisable) result dict. Unknown bench or option names are
    errors that name the nearest valid one.
    """
    _check_options(name, kw)
    return _bench(name)(**kw)


def parse_options(name: str, options: Sequence[str]) -> dict[str, Any]:
    """Turns CLI ``key=value`` strings into typed keyword options for ``run_bench(name, ...)``.

    Values take the type of the option's default: int, float, bool (true/false/1/0), str, or a
    comma-separated tuple of str; an option whose default is None takes an int.
    """
    out: dict[str, Any] = {}
    for item in options:
        key, sep, value = item.partition("=")
        if not sep:
            raise PfbenchError(f"bench option {item!r} is not key=value, e.g. batch_size=4")
        default = _check_options(name, [key])[key].default
        try:
            if isinstance(default, bool):
                if value.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(value)
                out[key] = value.lower() in ("true", "1")
            elif isinstance(default, tuple) or (default is None and key == "samplers"):
                out[key] = tuple(v for v in value.split(",") if v)
            elif isinstance(default, float):
                out[key] = float(value)
            elif isinstance(default, int) or default is None:
                out[key] = int(value)
            else:
                out[key] = value
        except ValueError:
            raise PfbenchError(f"bench option {key}={value!r}: expected a value like {default!r}") from None
    return out
