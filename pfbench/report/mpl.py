"""matplotlib for the report: the file-only Agg backend (figures are saved, never shown) and its pyplot.

Imported by every module that draws, so the backend is chosen in one place, before pyplot loads.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
from matplotlib import ticker  # noqa: E402

__all__ = ["plt", "ticker"]
