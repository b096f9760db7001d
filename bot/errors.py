"""The exception tree of `bot`: chat platform failures converted at their adapters."""

from __future__ import annotations

from core.errors import KBError


class BotError(KBError):
    """Something in the bot failed in a way a person should hear about."""


class ChatPlatformError(BotError):
    """A chat platform's API refused or failed a call (Slack Web API, Teams connector)."""
