"""The exception tree of `privacy`."""

from __future__ import annotations

from core.errors import KBError


class PrivacyError(KBError):
    """Something in redaction, guarding or access control was asked for wrongly."""


class RedactionConfigError(PrivacyError):
    """A redaction policy names a destination or a kind of personal data that does not exist."""
