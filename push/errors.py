"""The exception tree of `push`: every error it raises on purpose is a PushError (a KBError)."""

from __future__ import annotations

from core.errors import KBError


class PushError(KBError):
    """Push could not do what was asked."""


class PushConfigError(PushError):
    """A push preference or setting is invalid (unknown time zone, unknown cadence)."""


class NotLeaderError(PushError):
    """Another replica holds the scheduler lock."""
