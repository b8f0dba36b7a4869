"""pfbench: train, sample and benchmark flow image generators with patch-level timesteps."""

from __future__ import annotations

__version__ = "0.1.0"


class PfbenchError(Exception):
    """A user-facing error: the CLI prints its message on one line and exits non-zero."""


class FieldError(PfbenchError):
    """A bad value of one field, raised where the value is checked (a plugin's constructor, a spec's check) without
    knowing where the field sits in a suite; ``under`` puts the caller's key path in front, one level at a time, so
    a suite reads e.g. ``models.pf.train.timesteps.params.s: must be >= 0``.

    Attributes:
        field: the field's key path from the checked object (``s``, ``params.s``, ``[1]``).
        reason: what is wrong and how to fix it (``must be >= 0``).
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}" if field else reason)
        self.field = field
        self.reason = reason

    def under(self, prefix: str) -> FieldError:
        """The same error with its field below ``prefix`` (``under("eval")``: ``is_order`` -> ``eval.is_order``)."""
        if not prefix:
            return self
        sep = "" if not self.field or self.field.startswith("[") else "."
        return FieldError(f"{prefix}{sep}{self.field}", self.reason)
