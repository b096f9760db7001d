"""The bot's writes to Slack's Web API: one thin adapter over AsyncWebClient.

Slack's errors become ChatPlatformError here, so handlers deal with one exception type (MessageGone
when the message or its channel no longer exists). 429s are retried inside the client (slack_sdk's
AsyncRateLimitErrorRetryHandler honours Retry-After).
"""

from __future__ import annotations

from typing import Any

from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient

from bot.errors import ChatPlatformError, MessageGone
from bot.slack.blocks import Block, SlackMessage

SEARCHING = "Searching the knowledge base…"
RATE_LIMIT_RETRIES = 3
# Slack's errors for a message (or its channel) that is no longer there to edit.
GONE = frozenset({"message_not_found", "channel_not_found", "is_archived"})


def make_client(token: str, *, base_url: str, timeout: int = 30) -> AsyncWebClient:
    """A Web API client for `base_url` (Slack's own, or the loopback fake in tests) that retries 429s."""
    client = AsyncWebClient(token=token, base_url=base_url, timeout=timeout)
    client.retry_handlers.append(AsyncRateLimitErrorRetryHandler(max_retry_count=RATE_LIMIT_RETRIES))
    return client


class SlackSender:
    def __init__(self, client: AsyncWebClient) -> None:
        self.client = client

    async def post(self, channel: str, message: SlackMessage, *, thread: str | None = None) -> str:
        """Post a message (in `thread` when given); returns its ts, which later updates need."""
        response = await self._call(
            "chat.postMessage", channel=channel, text=message.text, blocks=message.blocks, thread_ts=thread
        )
        return str(response.get("ts", ""))

    async def searching(self, channel: str, *, thread: str | None) -> str:
        return await self.post(channel, SlackMessage(SEARCHING, []), thread=thread)

    async def update(self, channel: str, ts: str, message: SlackMessage) -> None:
        await self._call("chat.update", channel=channel, ts=ts, text=message.text, blocks=message.blocks)

    async def publish_home(self, user: str, view: Block) -> None:
        await self._call("views.publish", user_id=user, view=view)

    async def _call(self, method: str, **kwargs: Any) -> dict[str, Any]:
        args = {key: value for key, value in kwargs.items() if value is not None}
        try:
            response = await self.client.api_call(method, json=args)
        except SlackApiError as exc:
            error = exc.response.get("error", "unknown_error") if exc.response else "unknown_error"
            if error in GONE:
                raise MessageGone(f"Slack refused {method}: {error}") from exc
            raise ChatPlatformError(
                f"Slack refused {method}: {error}", hint="check the bot's scopes and channel membership"
            ) from exc
        except (SlackClientError, OSError, TimeoutError) as exc:
            raise ChatPlatformError(f"could not reach Slack for {method}: {exc}") from exc
        return dict(response.data) if isinstance(response.data, dict) else {}
