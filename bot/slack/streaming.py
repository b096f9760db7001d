"""A streamed answer into one Slack message: drafts at most once per interval, then the final reply.

Slack allows about one chat.update per second per message before it starts answering 429, and a
reader cannot follow faster updates anyway. The model's deltas arrive far more often, so the pacer
keeps only the newest Draft and shows it when the interval since the last update has passed (the
deltas come from `KnowledgeBase.ask_stream`, already redacted and safe to show). Drafts also wait
until the model has been writing for one interval: an answer written faster than that goes straight
from "searching…" to the final answer, without a draft that would only delay it.

    reply = await stream_into_message(conversation.stream(incoming), sender, channel, ts,
                                      interval=1.0, last_update=loop.time())
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from bot.errors import ChatPlatformError
from bot.slack.blocks import draft_message
from bot.slack.sender import SlackSender
from bot.types import Draft, RenderedReply, plain

log = logging.getLogger(__name__)

SORRY = "Sorry, something went wrong while answering. Please ask again in a minute."


class _Newest:
    """The newest draft, and an event that is set when one arrives that was not shown yet."""

    def __init__(self) -> None:
        self.draft: Draft | None = None
        self.fresh = asyncio.Event()
        self.first_at: float | None = None  # loop time of the first draft

    async def consume(self, parts: AsyncIterator[Draft | RenderedReply]) -> RenderedReply:
        try:
            async for part in parts:
                if isinstance(part, RenderedReply):
                    return part
                self.draft = part
                if self.first_at is None:
                    self.first_at = asyncio.get_running_loop().time()
                self.fresh.set()
        except Exception:
            # A bug must still end in a reply, not in a "searching…" message that never changes.
            log.exception("answering a Slack message failed")
        return plain(SORRY, ok=False)


async def stream_into_message(
    parts: AsyncIterator[Draft | RenderedReply],
    sender: SlackSender,
    channel: str,
    ts: asyncio.Future[str] | str,
    *,
    interval: float,
    last_update: float,
) -> tuple[str, RenderedReply]:
    """Show drafts of `parts` in message `ts` (may still be being posted); return (ts, final reply).

    No two updates of the message are sent less than `interval` seconds apart, counting from
    `last_update` (the loop time the message was posted or last changed); the caller sends the
    final update once this returns, which also keeps the interval after a shown draft.
    """
    loop = asyncio.get_running_loop()
    newest = _Newest()
    producer = asyncio.ensure_future(newest.consume(parts))
    try:
        message_ts = ts if isinstance(ts, str) else await ts
    except BaseException:
        producer.cancel()
        raise
    shown = ""
    while True:
        waiter = asyncio.ensure_future(newest.fresh.wait())
        await asyncio.wait({producer, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if producer.done():
            break
        delay = max(last_update, newest.first_at or last_update) + interval - loop.time()
        if delay > 0:
            await asyncio.wait({producer}, timeout=delay)
            if producer.done():
                break
        newest.fresh.clear()
        text = newest.draft.text if newest.draft is not None else ""
        if not text or text == shown:
            continue
        last_update = loop.time()
        try:
            await sender.update(channel, message_ts, draft_message(text))
            shown = text
        except ChatPlatformError as exc:
            log.warning("could not show a draft in %s: %s", channel, exc)
    reply = producer.result()
    if shown:
        await asyncio.sleep(max(0.0, last_update + interval - loop.time()))
    return message_ts, reply
