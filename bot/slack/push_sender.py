"""Push's Slack adapter (a `core.messaging.Sender`): digests and notices as direct messages.

`conversations.open` gives the DM channel, `chat.postMessage` posts with message `metadata`
(`event_type` kb_push, the idempotency key in `event_payload`), and `find` reads the DM's recent
history with `include_all_metadata` to see whether a message with that key is already there.
Scopes: im:write, chat:write, im:history.

429s are not retried here: they become `RateLimited(retry_after)` so that push's delivery, which
keeps the per-channel rate, decides when to try again. People who left the workspace become
`RecipientGone`; errors a retry cannot fix (auth, scopes, bad blocks) `DeliveryFailed(retryable=False)`.
"""

from __future__ import annotations

from typing import Any

from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from core.messaging import DeliveryFailed, OutgoingMessage, RateLimited, Receipt, RecipientGone

EVENT_TYPE = "kb_push"
HISTORY_LIMIT = 50  # a key is looked for among this many newest messages of the DM
GONE = frozenset(
    {
        "user_not_found",
        "user_disabled",
        "account_inactive",
        "user_not_visible",
        "cannot_dm_bot",
        "is_archived",
    }
)
PERMANENT = frozenset(
    {"not_authed", "invalid_auth", "token_revoked", "token_expired", "missing_scope", "no_permission",
     "invalid_blocks", "invalid_metadata_format", "msg_too_long", "not_allowed_token_type",
     "team_access_not_granted"}
)  # fmt: skip


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def blocks(message: OutgoingMessage) -> list[dict[str, Any]]:
    """Block Kit for a digest or notice: a header, one section per document, the footer as context."""
    out: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": message.title[:150]}}
    ]
    for item in message.items[:20]:
        title = _escape(item.title)
        link = f"<{item.url}|{title}>" if item.url else f"*{title}*"
        note = f"\n{_escape(item.note)}" if item.note else ""
        if item.dismiss_url:
            note += f"  ·  <{item.dismiss_url}|not for me>"
        out.append({"type": "section", "text": {"type": "mrkdwn", "text": f"{link}{note}"[:3000]}})
    if message.footer:
        out.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _escape(message.footer)}]})
    return out


class SlackPushSender:
    """Direct messages through Slack's Web API; `client` must not retry 429s itself."""

    platform = "slack"

    def __init__(self, client: AsyncWebClient) -> None:
        self.client = client
        self._channels: dict[str, str] = {}

    async def send(self, message: OutgoingMessage) -> Receipt:
        channel = await self._dm(message.user_id)
        metadata = {"event_type": EVENT_TYPE, "event_payload": {"key": message.key, "kind": message.kind}}
        body = {
            "channel": channel, "text": _escape(message.text[:3000]), "blocks": blocks(message),
            "unfurl_links": False, "metadata": metadata,
        }  # fmt: skip
        response = await self._call("chat.postMessage", json=body)
        return Receipt(self.platform, channel, str(response.get("ts", "")))

    async def find(self, user_id: str, key: str) -> Receipt | None:
        channel = await self._dm(user_id)
        # Read methods take form arguments, not JSON.
        form = {"channel": channel, "limit": str(HISTORY_LIMIT), "include_all_metadata": "true"}
        response = await self._call("conversations.history", data=form)
        for item in response.get("messages", []):
            metadata = item.get("metadata") or {}
            if (
                metadata.get("event_type") == EVENT_TYPE
                and (metadata.get("event_payload") or {}).get("key") == key
            ):
                return Receipt(self.platform, channel, str(item.get("ts", "")), found=True)
        return None

    async def aclose(self) -> None:
        session = getattr(self.client, "session", None)
        if session is not None and not session.closed:
            await session.close()

    async def _dm(self, user_id: str) -> str:
        if user_id not in self._channels:
            response = await self._call("conversations.open", data={"users": user_id})
            self._channels[user_id] = str((response.get("channel") or {}).get("id", ""))
        return self._channels[user_id]

    async def _call(
        self, method: str, *, json: dict[str, Any] | None = None, data: dict[str, str] | None = None
    ) -> dict[str, Any]:
        try:
            response = await self.client.api_call(method, json=json, data=data)
        except SlackApiError as exc:
            raise _convert(method, exc) from exc
        except (SlackClientError, OSError, TimeoutError) as exc:
            raise DeliveryFailed(f"could not reach Slack for {method}: {type(exc).__name__}") from exc
        return dict(response.data) if isinstance(response.data, dict) else {}


def _convert(method: str, exc: SlackApiError) -> Exception:
    response = exc.response
    error = str(response.get("error", "unknown_error")) if response is not None else "unknown_error"
    status = getattr(response, "status_code", 200)
    if status == 429 or error == "ratelimited":
        headers = getattr(response, "headers", {}) or {}
        retry_after = next((v for k, v in headers.items() if k.lower() == "retry-after"), "1")
        try:
            seconds = float(retry_after[0] if isinstance(retry_after, list) else retry_after)
        except ValueError:
            seconds = 1.0
        return RateLimited(f"Slack rate-limited {method}", retry_after=seconds)
    if error in GONE:
        return RecipientGone(f"Slack: {error}", hint="the person left the workspace or cannot get DMs")
    if error in PERMANENT:
        return DeliveryFailed(
            f"Slack refused {method}: {error}", retryable=False, hint="check the bot token and its scopes"
        )
    return DeliveryFailed(f"Slack failed {method}: {error} (HTTP {status})")
