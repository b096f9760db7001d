"""The exception tree of `core`.

Every error the product raises on purpose derives from :class:`KBError` and carries a message
that says what happened and a hint that says what to do about it.
"""

from __future__ import annotations


class KBError(Exception):
    """An error meant for a person: what happened, and what to do next."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ConfigError(KBError):
    """A setting is missing or invalid."""


class DatabaseError(KBError):
    """The database cannot be reached or used."""


class NotMigratedError(DatabaseError):
    """The database schema is older than this code expects."""
