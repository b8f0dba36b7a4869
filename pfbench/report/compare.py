"""Compare two result sets (folders or Parquet files, e.g. a committed baseline) and flag regressions.

Rows are matched for kinds ``cell`` and ``diagnostic``; seeds of a key are summarised to mean/std/n first.
``match_by="recipe"`` (the default) matches on ``MATCH_KEYS``: every cell key of ``keys.GROUP_KEYS`` but the model id
(the weights' hash), i.e. by recipe (model name, training timestep sampler, decoder, sampler, budget, ...), so a
model retrained elsewhere (other weights bits, a new model id) is compared with its committed counterpart; where one
side holds several instances (model ids) of one model name, the one instance the other side does not hold is used
(a rerun into the committed folder: the new instance against the committed one), and any other case is an error.
``match_by="id"`` also matches the model id (the same weights only). A key one side never records (a baseline written before the column existed) is not matched on. The change is ``delta = b - a`` (a: baseline, b: candidate). A metric regresses when it gets
worse, in its ``higher_is_better`` direction, by more than its tolerance allows. Rows on one side only are
reported as missing, never dropped silently.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console

from pfbench import PfbenchError
from pfbench.report.keys import CORE_KEYS, GROUP_KEYS, HEADERS, key_text, normalize, recipe_ids, shown_keys
from pfbench.report.stats import pooled_std, summarize
from pfbench.report.tables import TextTable, fmt_key, fmt_num, is_na
from pfbench.report.tolerances import Tolerance, load_tolerances, tolerance_for
from pfbench.results import read_path, write_frame

MATCH_KEYS: tuple[str, ...] = tuple(k for k in GROUP_KEYS if k != "model_id")
COMPARED_KINDS: tuple[str, ...] = ("cell", "diagnostic")
# Columns of a committed baseline file: the keys, the summary over seeds, cost and provenance for context.
BASELINE_COLUMNS: tuple[str, ...] = (
    *MATCH_KEYS, "higher_is_better", "value", "std", "n", "nfe_used", "gflops", "suite", "git_sha",
    "pfbench_version", "torch_version", "hardware",
)
BAD_STATUSES = frozenset({"regressed", "changed"})


def read_side(path: Path) -> pd.DataFrame:
    """Rows of kinds ``COMPARED_KINDS`` from a folder or Parquet file, normalized (``keys.normalize``)."""
    path = Path(path)
    if not path.exists():
        raise PfbenchError(f"{path}: no such results folder or Parquet file")
    df = normalize(read_path(path))
    return df[df["kind"].isin(COMPARED_KINDS)]


def load_side(path: Path, df: pd.DataFrame | None = None, keys: tuple[str, ...] = MATCH_KEYS) -> pd.DataFrame:
    """One row per ``keys`` of ``df`` (default: the rows of ``path``): mean, std, n."""
    df = read_side(path) if df is None else df
    if "n" in df and df["n"].notna().any():  # a baseline file: already one summarised row per key
        side = df.rename(columns={"value": "mean"})
        dup = side.duplicated(list(keys))
        if dup.any():
            raise PfbenchError(f"{path}: baseline has duplicate rows for {side.loc[dup, list(keys)].iloc[0].to_dict()}")
    else:
        side = summarize(df, keys, n_boot=200)
    side = side[[*keys, "higher_is_better", "mean", "std", "n"]].copy()
    side["_key"] = [_key(r) for r in side[list(keys)].itertuples(index=False)]
    return side


def pick_instances(da: pd.DataFrame, db: pd.DataFrame, a: str, b: str) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """For recipe matching: where a side holds several instances (model ids) of one recipe (``keys.RECIPE_KEYS``),
    keep the one the other side does not hold; more than one such instance is an error. Returns both sides and one
    note per choice."""
    ia, ib = recipe_ids(da), recipe_ids(db)
    notes, out = [], []
    for df, own, other, label in ((da, ia, ib, a), (db, ib, ia, b)):
        drop: set[str] = set()
        for recipe, ids in own.items():
            if len(ids) < 2:
                continue
            new = [i for i in ids if i not in other.get(recipe, [])]
            if len(new) != 1:
                raise PfbenchError(f"{label} holds {len(ids)} instances of model {recipe[0]} (model ids "
                                   f"{', '.join(i[:12] for i in ids)}) and {len(new)} of them are not in the other "
                                   "side: compare with --match-by id, or keep each run in its own results folder")
            drop |= set(ids) - {new[0]}
            notes.append(f"{label} holds {len(ids)} instances of {recipe[0]}: using {new[0][:12]} (the one the other "
                         "side does not hold).")
        out.append(df[~df["model_id"].astype("string").isin(drop).fillna(False).astype(bool)])
    return out[0], out[1], notes


def _retrained(da: pd.DataFrame, db: pd.DataFrame) -> str:
    """One note naming the models whose ids differ between the sides (matched by recipe), or ``""``."""
    ia, ib = recipe_ids(da), recipe_ids(db)
    moved = sorted(r for r in set(ia) & set(ib) if ia[r] != ib[r])
    if not moved:
        return ""
    shown = ", ".join(f"{r[0]} {ia[r][0][:8]}→{ib[r][0][:8]}" for r in moved[:4]) + (" …" if len(moved) > 4 else "")
    return f"{len(moved)} model(s) matched by recipe across model ids (retrained: other weights): {shown}."


def _shared_keys(sa: pd.DataFrame, sb: pd.DataFrame, a: str, b: str, match: tuple[str, ...] = MATCH_KEYS) -> list[str]:
    """``MATCH_KEYS`` recorded on both sides, and ``_key`` recomputed from them.

    A key one side never fills (e.g. ``train_timesteps`` in a baseline written before it existed) is left out of
    the match, unless leaving it out would merge rows of the other side: that is an error, never a silent pool.
    """
    keys = [k for k in match if bool(sa[k].notna().any()) == bool(sb[k].notna().any())]
    dropped = [k for k in match if k not in keys]
    for side, label, other in ((sa, a, b), (sb, b, a)):
        side["_key"] = [_key(r) for r in side[keys].itertuples(index=False)]
        if side["_key"].duplicated().any():
            raise PfbenchError(f"{label}: rows differ only in {', '.join(dropped)}, which {other} does not record; "
                               "rebuild that side with `pfbench baseline` from a current results folder")
    return keys


def _key(values: tuple[Any, ...]) -> str:
    """A merge key that treats missing values as equal and 8 / 8.0 / "8" alike."""
    return "\x1f".join("" if is_na(v) else (format(float(v), "g") if isinstance(v, (int, float, np.number)) else str(v))
                       for v in values)


def _fnum(x: Any) -> float:
    return float("nan") if is_na(x) else float(x)


def _status(delta: float, better_sign: float | None, allowed: float | None, a: float, b: float) -> str:
    if math.isnan(b) and not math.isnan(a):
        return "regressed"  # the metric became NaN
    if math.isnan(a) or allowed is None:
        return "info"
    if math.isnan(delta) or abs(delta) <= allowed:
        return "ok"
    if better_sign is None:
        return "changed"  # direction unknown: a change beyond tolerance is flagged
    return "improved" if delta * better_sign > 0 else "regressed"


@dataclass(frozen=True)
class CompareResult:
    """Matched rows with deltas and status, plus the rows found on one side only."""

    a: str  # label of the baseline side
    b: str  # label of the candidate side
    rows: pd.DataFrame  # MATCH_KEYS, a_mean/a_std/a_n, b_..., delta, rel_delta, pooled_std, allowed, tolerance, status
    missing_in_a: pd.DataFrame  # keys present in b only
    missing_in_b: pd.DataFrame  # keys present in a only
    notes: tuple[str, ...] = ()  # how rows were matched, instances chosen, tolerances used, largest difference

    @property
    def regressed(self) -> bool:
        return bool(self.rows["status"].isin(BAD_STATUSES).any())

    @property
    def regressions(self) -> pd.DataFrame:
        return self.rows[self.rows["status"].isin(BAD_STATUSES)]

    @property
    def incomplete(self) -> bool:
        """Some baseline rows have no counterpart in the candidate."""
        return not self.missing_in_b.empty

    def exit_code(self, allow_missing: bool = False) -> int:
        """1 on a regression, or on rows missing from b unless ``allow_missing``; else 0."""
        return int(self.regressed or (self.incomplete and not allow_missing))

    def summary_line(self) -> str:
        counts = self.rows["status"].value_counts()
        parts = [f"{int(counts.get(s, 0))} {s}" for s in ("regressed", "changed", "improved", "ok", "info")
                 if counts.get(s, 0)]
        verdict = "REGRESSED" if self.regressed else ("INCOMPLETE: rows of a missing from b" if self.incomplete
                                                      else "no regression")
        return (f"{verdict}: {len(self.rows)} matched ({', '.join(parts) or 'none'}); "
                f"{len(self.missing_in_b)} only in a, {len(self.missing_in_a)} only in b")

    def tables(self, all_rows: bool = True) -> list[TextTable]:
        """The matched rows (all, or only those not ``ok``/``info``) and the rows missing on either side."""
        def ms(m: Any, s: Any) -> str:
            return f"{fmt_num(m)} ± {fmt_num(s, '.2g')}"

        labels = {**HEADERS, "nfe_budget": "NFE"}
        # every key that varies over the matched and missing rows (variant, CFG interval, training sampler, ...)
        every = pd.concat([self.rows, self.missing_in_a, self.missing_in_b], ignore_index=True)
        varying = {k for _, g in every.groupby("kind") for k in shown_keys(g[list(MATCH_KEYS)])}  # per kind
        key_cols = ["kind", *[k for k in MATCH_KEYS if k in varying or k in CORE_KEYS], "metric"]
        keys = tuple(labels.get(k, k) for k in key_cols)  # one header per key column shown
        shown = self.rows if all_rows else self.rows[~self.rows["status"].isin(["ok", "info"])]
        main = tuple(
            (*[key_text(k, r[k]) for k in key_cols], ms(r["a_mean"], r["a_std"]), ms(r["b_mean"], r["b_std"]),
             f"{r['a_n']}/{r['b_n']}", fmt_num(r["delta"], "+.3g"), fmt_num(r["rel_delta"], "+.1%"),
             r["tolerance"], fmt_num(r["allowed"], ".3g"),
             r["status"].upper() if r["status"] in BAD_STATUSES else r["status"])
            for _, r in shown.iterrows())
        title = f"a = {self.a}  vs  b = {self.b}" + ("" if all_rows else " (changes beyond tolerance)")
        out = [TextTable(title, (*keys, "a", "b", "seeds a/b", "Δ (b − a)", "Δ rel", "tolerance", "allowed",
                                 "status"), main, " ".join([*self.notes, self.summary_line()]))]
        for name, df in ((f"only in a ({self.a})", self.missing_in_b), (f"only in b ({self.b})", self.missing_in_a)):
            if not df.empty:
                rows = tuple((*[key_text(k, r[k]) for k in key_cols], fmt_num(r["mean"]), fmt_key(r["n"]))
                             for _, r in df.iterrows())
                out.append(TextTable(f"missing rows: {name}", (*keys, "value", "seeds"), rows))
        return out

    def markdown(self) -> str:
        """Every matched row and the missing rows, as Markdown tables (for a PR comment or a file)."""
        return "\n".join(t.markdown() for t in self.tables())

    def print(self, console: Console | None = None, all_rows: bool = False) -> None:
        """Tables on the console: changes beyond tolerance (or ``all_rows``), missing rows, verdict.

        Rich tables on a terminal; elsewhere (CI logs, pipes) plain aligned text, never squeezed to the
        console width or truncated, so every key and number stays readable and greppable.
        """
        console = console or Console()
        for t in self.tables(all_rows):
            if t.rows:
                if t.note.endswith(self.summary_line()):  # the notes and the verdict line below say it once
                    t = dataclasses.replace(t, note="")
                if console.is_terminal:
                    console.print(t.rich())
                else:
                    console.out(plain_table(t), highlight=False)  # out(): no markup, no wrapping
        for note in self.notes:
            console.print(note, soft_wrap=True, highlight=False, markup=False)
        color = "red" if self.regressed else ("yellow" if self.incomplete else "green")
        console.print(f"[{color}]{self.summary_line()}[/]", soft_wrap=True)


def plain_table(t: TextTable) -> str:
    """A ``TextTable`` as plain text: title, header, dashes, rows; columns padded to their widest cell."""
    rows = [tuple(c.replace("\n", " ") for c in r) for r in (t.columns, *t.rows)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(t.columns))]

    def line(r: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()

    out = [t.title] if t.title else []
    out += [line(rows[0]), "  ".join("-" * w for w in widths), *(line(r) for r in rows[1:])]
    return "\n".join(out + ([t.note] if t.note else [])) + "\n"


MATCH_BY = ("recipe", "id")


def compare(a: Path, b: Path, tolerances: Mapping[str, Tolerance] | None = None,
            match_by: str = "recipe") -> CompareResult:
    """Compares result set ``b`` (candidate) against ``a`` (baseline).

    Args:
        a, b: a results folder (``results/<suite>``) or one Parquet file (e.g. from ``write_baseline``).
        tolerances: metric name/pattern -> Tolerance; default ``load_tolerances()``.
        match_by: ``recipe`` (model ids ignored, a side's extra instances resolved by ``pick_instances``) or
            ``id`` (the model id is a key too).
    """
    if match_by not in MATCH_BY:
        raise PfbenchError(f"--match-by {match_by!r}: use one of {', '.join(MATCH_BY)}")
    tols = dict(tolerances) if tolerances is not None else load_tolerances()
    da, db = read_side(Path(a)), read_side(Path(b))
    keys: tuple[str, ...] = MATCH_KEYS
    if match_by == "recipe":
        da, db, notes = pick_instances(da, db, str(a), str(b))
        notes = ["matched by recipe (model name, training t-sampler, decoder and cell keys; model ids ignored)."
                 ] + notes + ([_retrained(da, db)] if _retrained(da, db) else [])
    else:
        keys, notes = (*MATCH_KEYS, "model_id"), ["matched by model id (the same weights only)."]
    sa, sb = load_side(Path(a), da, keys), load_side(Path(b), db, keys)
    _shared_keys(sa, sb, str(a), str(b), keys)
    m = sa.merge(sb, on="_key", how="outer", suffixes=("_a", "_b"), indicator=True)
    both = m[m["_merge"] == "both"]
    records = []
    for _, r in both.iterrows():
        am, bm = _fnum(r["mean_a"]), _fnum(r["mean_b"])
        an, bn = (0 if is_na(r[c]) else int(r[c]) for c in ("n_a", "n_b"))
        hib = r["higher_is_better_b"] if not is_na(r["higher_is_better_b"]) else r["higher_is_better_a"]
        sign = None if is_na(hib) else (1.0 if bool(hib) else -1.0)
        pooled = pooled_std(_fnum(r["std_a"]), an, _fnum(r["std_b"]), bn)
        tol = tolerance_for(str(r["metric_a"]), tols)
        allowed = tol.allowed(am, pooled)
        delta = bm - am
        records.append({
            **{k: r[f"{k}_a"] if not is_na(r[f"{k}_a"]) else r[f"{k}_b"] for k in MATCH_KEYS},
            "a_mean": am, "a_std": _fnum(r["std_a"]), "a_n": an, "b_mean": bm, "b_std": _fnum(r["std_b"]), "b_n": bn,
            "delta": delta, "rel_delta": delta / abs(am) if am != 0.0 else float("nan"),
            "pooled_std": pooled, "allowed": float("nan") if allowed is None else allowed,
            "tolerance": tol.describe(), "status": _status(delta, sign, allowed, am, bm),
        })
    cols = [*MATCH_KEYS, "a_mean", "a_std", "a_n", "b_mean", "b_std", "b_n", "delta", "rel_delta", "pooled_std",
            "allowed", "tolerance", "status"]
    rows = pd.DataFrame.from_records(records, columns=cols)
    order = {"regressed": 0, "changed": 1, "improved": 2, "ok": 3, "info": 4}
    rows = rows.assign(_o=rows["status"].map(order)).sort_values(
        ["_o", *MATCH_KEYS], na_position="first", kind="stable").drop(columns="_o")

    def only(which: str, suffix: str) -> pd.DataFrame:
        sub = m[m["_merge"] == which]
        return pd.DataFrame({k: sub[f"{k}{suffix}"] for k in (*MATCH_KEYS, "mean", "n")}).reset_index(drop=True)

    metrics = sorted(set(rows["metric"].astype(str)))
    notes.append("tolerances: " + (", ".join(f"{m} {tolerance_for(m, tols).describe()}" for m in metrics)
                                   or "none used") + ".")
    gated = rows[rows["status"] != "info"] if len(rows) else rows  # timings say how busy the machine was
    if len(gated) and gated["rel_delta"].notna().any():
        top = gated.loc[gated["rel_delta"].abs().idxmax()]
        where = (f"NFE {key_text('nfe_budget', top['nfe_budget'])}" if not pd.isna(top["nfe_budget"])
                 else f"{key_text('fixed_steps', top['fixed_steps'])} steps" if not pd.isna(top.get("fixed_steps"))
                 else "NFE —")
        notes.append(f"largest relative difference {float(top['rel_delta']):+.2g} ({top['metric']}, "
                     f"{key_text('model', top['model'])} · {key_text('sampler', top['sampler'])} · {where})"
                     + (" over the gated metrics (info-only ones aside)." if len(gated) < len(rows) else "."))
    return CompareResult(str(a), str(b), rows.reset_index(drop=True), only("right_only", "_b"), only("left_only", "_a"),
                         tuple(notes))


def write_baseline(results: Path, path: Path) -> Path:
    """Writes a committable baseline: one row per key of ``results`` with mean (``value``), ``std``, ``n``.

    Args:
        results: a results folder (or Parquet file) of per-seed rows.
        path: output ``.parquet``; written atomically.
    """
    results = Path(results)
    if not results.exists():
        raise PfbenchError(f"{results}: no such results folder; run the suite first")
    df = normalize(read_path(results))
    df = df[df["kind"].isin(COMPARED_KINDS)]
    if df.empty:
        raise PfbenchError(f"{results}: no rows of kind {list(COMPARED_KINDS)} to make a baseline from")
    s = summarize(df, MATCH_KEYS, n_boot=200).rename(columns={"mean": "value"})
    prov = df.groupby(list(MATCH_KEYS), dropna=False, sort=True)  # same groups, same order as summarize
    assert prov.ngroups == len(s)
    for col in ("suite", "git_sha", "pfbench_version", "torch_version", "hardware"):
        s[col] = prov[col].agg(lambda x: ",".join(sorted(set(x.dropna().astype(str))))).to_numpy()
        s[col] = s[col].replace("", pd.NA).astype("string")
    s = s[[c for c in BASELINE_COLUMNS if c in s]]
    return write_frame(Path(path), s.reset_index(drop=True))
