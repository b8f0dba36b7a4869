"""pfbench: train, sample and benchmark flow image generators with patch-level timesteps."""

from __future__ import annotations

__version__ = "0.1.0"


class PfbenchError(Exception):
    """A user-facing error: the CLI prints its message on one line and exits non-zero."""
