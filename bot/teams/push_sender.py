"""Push's Teams adapter (a `core.messaging.Sender`): proactive messages through stored conversation refs.

The bot keeps a `ConversationRefRow` for every conversation a person had with it (bot/teams/app.py);
push writes into the newest personal one: `POST {serviceUrl}/v3/conversations/{id}/activities`
with an Adaptive Card, authenticated by a Bot Framework token when the app has an id.

Limits: the Bot Connector has no API to read a conversation's messages back, so `find` cannot see a
message the platform took but whose reply was lost; it returns None, and such a message may be sent
again after a crash in that narrow window (Slack and the web inbox do not have this gap). The key
travels in the activity's `channelData` so a later reader (Graph, an export) can still tell copies.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from sqlalchemy import Engine, select
from sqlmodel import Session, col

from core.messaging import DeliveryFailed, OutgoingMessage, RateLimited, Receipt, RecipientGone
from core.models import ConversationRefRow

CARD_TYPE = "application/vnd.microsoft.card.adaptive"
TokenProvider = Callable[[], Awaitable[str | None]]


def card(message: OutgoingMessage) -> dict[str, Any]:
    """An Adaptive Card: the title, one block per document (linked, with why), the footer."""
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "text": message.title, "weight": "Bolder", "wrap": True}
    ]
    for item in message.items[:20]:
        title = f"[{item.title}]({item.url})" if item.url else f"**{item.title}**"
        body.append({"type": "TextBlock", "text": title, "wrap": True, "spacing": "Medium"})
        note = item.note + (f" · [not for me]({item.dismiss_url})" if item.dismiss_url else "")
        if note:
            body.append(
                {"type": "TextBlock", "text": note, "wrap": True, "isSubtle": True, "spacing": "None"}
            )
    if message.footer:
        body.append(
            {"type": "TextBlock", "text": message.footer, "wrap": True, "size": "Small", "isSubtle": True}
        )
    return {
        "type": "AdaptiveCard",
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "version": "1.5",
        "body": body,
    }


class TeamsPushSender:
    """Proactive Teams messages; `token` gives a Bot Framework bearer token (None: no auth, tests)."""

    platform = "teams"

    def __init__(
        self, engine: Engine, *, token: TokenProvider | None = None, timeout_s: float = 30.0
    ) -> None:
        self.engine = engine
        self._token = token
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def send(self, message: OutgoingMessage) -> Receipt:
        ref = self._reference(message.user_id)
        if ref is None:
            raise RecipientGone(
                f"no Teams conversation with {message.user_id} is known",
                hint="the person must message the bot once (or install it) before it can write to them",
            )
        url = f"{ref.service_url.rstrip('/')}/v3/conversations/{ref.conversation_id}/activities"
        activity = {
            "type": "message",
            "text": message.text,
            "attachments": [{"contentType": CARD_TYPE, "content": card(message)}],
            "channelData": {"kbPushKey": message.key, "kbPushKind": message.kind},
        }
        headers = {}
        if self._token is not None:
            token = await self._token()
            if token:
                headers["Authorization"] = f"Bearer {token}"
        try:
            async with self._client().post(url, json=activity, headers=headers) as response:
                if response.status < 300:
                    body = await response.json(content_type=None)
                    return Receipt(self.platform, ref.conversation_id, str((body or {}).get("id", "")))
                raise _convert(response.status, response.headers.get("Retry-After"), await response.text())
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise DeliveryFailed(f"could not reach the Teams connector: {type(exc).__name__}") from exc

    async def find(self, user_id: str, key: str) -> Receipt | None:
        return None  # the Bot Connector cannot list a conversation's messages (see the module docstring)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    def _reference(self, user_id: str) -> ConversationRefRow | None:
        query = (
            select(ConversationRefRow)
            .where(col(ConversationRefRow.platform) == "teams", col(ConversationRefRow.user_id) == user_id)
            .order_by(col(ConversationRefRow.updated_at).desc())
        )
        with Session(self.engine) as session:
            refs = list(session.execute(query).scalars())
        personal = [
            r for r in refs if (r.reference.get("conversation") or {}).get("conversationType") == "personal"
        ]
        chosen = personal or refs
        return chosen[0] if chosen else None


def _convert(status: int, retry_after: str | None, body: str) -> Exception:
    if status == 429:
        try:
            seconds = float(retry_after or 1)
        except ValueError:
            seconds = 1.0
        return RateLimited("Teams rate-limited the message", retry_after=seconds)
    if status in (403, 404):
        # The bot was removed, the person blocked it, or the conversation no longer exists.
        return RecipientGone(f"Teams refused the conversation (HTTP {status})")
    if status in (400, 401):
        return DeliveryFailed(
            f"Teams rejected the message (HTTP {status}): {body[:200]}", retryable=False,
            hint="check KB_TEAMS_APP_ID / KB_TEAMS_APP_PASSWORD and the card",
        )  # fmt: skip
    return DeliveryFailed(f"Teams connector error (HTTP {status})")
