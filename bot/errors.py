"""The exception tree of `bot`: chat platform failures converted at their adapters."""

from __future__ import annotations

from core.errors import KBError


class BotError(KBError):
    """Something in the bot failed in a way a person should hear about."""


class ChatPlatformError(BotError):
    """A chat platform's API refused or failed a call (Slack Web API, Teams connector)."""


class MessageGone(ChatPlatformError):
    """The message to edit is no longer there (deleted, or its channel is gone): nothing to update."""


class NotClaimed(BotError):
    """This delivery lost its event's claim (a redelivery, or another replica had it): post nothing.

    Raised inside an answer started before its claim was settled, where it would otherwise post.
    """
