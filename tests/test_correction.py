"""Multiple-comparison correction of claim tables (pfbench.report.correction): Holm within a family, BH over
the report, verdicts from the Holm-adjusted p; interpolated and incomparable bases are not counted."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.multitest import multipletests

from pfbench.report.correction import FAILS, HOLDS, SHOWN, UNSURE, bh, correct, holm

RAW = (0.01, 0.04, 0.03)


def _table(ps: tuple[float, ...], family: str = "f", diff: float = 1.0, kind: str = "primary") -> pd.DataFrame:
    return pd.DataFrame({"family": family, "claim": [f"c{i}" for i in range(len(ps))], "basis_kind": kind,
                         "p": list(ps), "diff": diff, "verdict": HOLDS})


def test_toy_family_holm_and_bh_match_statsmodels_and_hand_values() -> None:
    p = np.array(RAW)
    assert holm(p) == pytest.approx(multipletests(p, method="holm")[1])
    assert bh(p) == pytest.approx(multipletests(p, method="fdr_bh")[1])
    # by hand: Holm sorts 0.01, 0.03, 0.04 -> 3*0.01, 2*0.03, max(0.06, 1*0.04); BH: 3/1*0.01, min(3/2*0.03,
    # 3/3*0.04), 0.04
    assert holm(p) == pytest.approx([0.03, 0.06, 0.06])
    assert bh(p) == pytest.approx([0.03, 0.04, 0.04])
    out = correct(_table(RAW))
    assert out["p_holm"].to_numpy() == pytest.approx([0.03, 0.06, 0.06])
    assert out["q_bh"].to_numpy() == pytest.approx([0.03, 0.04, 0.04])
    # every raw p is below 0.05; after Holm only the first claim holds
    assert list(out["verdict"]) == [HOLDS, UNSURE, UNSURE]


def test_holm_is_per_family_and_bh_over_the_report() -> None:
    other = _table((0.001, 0.2), family="g", diff=-1.0)
    out = correct(pd.concat([_table(RAW), other], ignore_index=True))
    f, g = out[out["family"] == "f"], out[out["family"] == "g"]
    assert f["p_holm"].to_numpy() == pytest.approx([0.03, 0.06, 0.06])  # another family does not change Holm
    assert g["p_holm"].to_numpy() == pytest.approx([0.002, 0.2])
    assert out["q_bh"].to_numpy() == pytest.approx(multipletests([*RAW, 0.001, 0.2], method="fdr_bh")[1])
    assert list(g["verdict"]) == [FAILS, UNSURE]  # significant against the claim


def test_uncounted_rows_are_not_adjusted_and_do_not_dilute() -> None:
    shown = _table((0.001, 0.001), kind="interpolated").assign(verdict=SHOWN)
    out = correct(pd.concat([_table(RAW), shown], ignore_index=True))
    assert out["p_holm"].iloc[:3].to_numpy() == pytest.approx([0.03, 0.06, 0.06])
    assert out["q_bh"].iloc[:3].to_numpy() == pytest.approx([0.03, 0.04, 0.04])
    assert out["p_holm"].iloc[3:].isna().all() and (out["verdict"].iloc[3:] == SHOWN).all()


def test_missing_p_is_inconclusive_and_left_out() -> None:
    out = correct(_table((0.01, math.nan)))
    assert out["p_holm"].iloc[0] == pytest.approx(0.01)  # a family of one tested claim
    assert list(out["verdict"]) == [HOLDS, UNSURE]
