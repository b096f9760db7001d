"""The `Sender` protocol: how push writes to a person on a chat platform, exactly once.

`push` builds an `OutgoingMessage`, records its idempotency key, then hands it to the Sender of
the recipient's platform (Slack DM, Teams proactive message, web inbox). Each platform adapter lives
with its platform in `bot/`; `push` and `bot` meet only here and in the `kb` entry point.

A sender carries the key inside the message (Slack message metadata, the web inbox's unique key) so
that `find` can tell, after a crash between the send and its record, whether the message went out:

    receipt = await sender.find(message.user_id, message.key)
    if receipt is None:
        receipt = await sender.send(message)

Errors: `RecipientGone` (the person left or cannot be written to: record it, never retry),
`RateLimited` (retry after `retry_after` seconds), `DeliveryFailed` (`retryable` says whether a
later attempt can succeed, e.g. the platform is down, or not, e.g. a missing scope).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

from core.errors import KBError


@dataclass(frozen=True)
class MessageItem:
    """One document in a message: what it is, where it is, and why this person gets it."""

    document_id: str
    title: str
    url: str
    note: str = ""  # "because you asked about VPN access", "updated: section 3 changed"
    dismiss_url: str = ""  # "not for me": records a dismissal, which pushes that interest down


@dataclass(frozen=True)
class OutgoingMessage:
    """A message to one person; `key` is its idempotency key, unique per (user, window) or notice."""

    platform: str
    user_id: str
    key: str
    kind: str  # digest or notice
    title: str
    items: tuple[MessageItem, ...] = ()
    footer: str = ""

    @property
    def text(self) -> str:
        """A plain-text rendering: the notification preview and the fallback for rich clients."""
        lines = [self.title]
        for item in self.items:
            note = f" ({item.note})" if item.note else ""
            lines.append(f"• {item.title}: {item.url}{note}")
        if self.footer:
            lines.append(self.footer)
        return "\n".join(lines)


@dataclass(frozen=True)
class Receipt:
    """Proof that a message reached the platform: where it went and the platform's id for it."""

    platform: str
    channel: str
    message_id: str
    sent_at: datetime | None = None
    found: bool = field(default=False, compare=False)  # True when `find` discovered an earlier send


class MessagingError(KBError):
    """A message could not be delivered."""


class RecipientGone(MessagingError):
    """The person cannot be written to any more (left the workspace, deactivated, blocked the bot)."""


class RateLimited(MessagingError):
    """The platform asked us to slow down; try again after `retry_after` seconds."""

    def __init__(self, message: str, *, retry_after: float, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.retry_after = max(0.0, retry_after)


class DeliveryFailed(MessagingError):
    """Sending failed; `retryable` is True when the same message may succeed later."""

    def __init__(self, message: str, *, retryable: bool = True, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.retryable = retryable


@runtime_checkable
class Sender(Protocol):
    """A platform adapter that delivers `OutgoingMessage`s and can look one up by its key."""

    platform: str

    async def send(self, message: OutgoingMessage) -> Receipt:
        """Deliver the message, carrying `message.key` with it; raises a MessagingError."""
        ...

    async def find(self, user_id: str, key: str) -> Receipt | None:
        """The receipt of an already-delivered message carrying `key`, or None when there is none."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...
