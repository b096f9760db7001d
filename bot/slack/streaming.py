"""A streamed answer into one Slack message: drafts at most once per interval, then the final reply.

Slack allows about one chat.update per second per message before it starts answering 429, and a
reader cannot follow faster updates anyway. The model's deltas arrive far more often, so the pacer
keeps only the newest Draft and shows it when the interval since the last update has passed (the
deltas come from `KnowledgeBase.ask_stream`, already redacted and safe to show). Drafts also wait
until the model has been writing for one interval: an answer written faster than that goes straight
from "searching…" to the final answer, without a draft that would only delay it.

The answer is read in the caller's own task and only the drafts' updates run beside it: each task
handing a result to another costs a turn of the event loop, which at 50 events in flight is
several milliseconds, and the last part (the final reply) goes out without any.

    reply = await stream_into_message(conversation.stream(incoming), sender, channel, ts,
                                      interval=1.0, last_update=loop.time())
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from bot.errors import ChatPlatformError, NotClaimed
from bot.slack.blocks import draft_message
from bot.slack.sender import SlackSender
from bot.types import Draft, RenderedReply, plain

log = logging.getLogger(__name__)

SORRY = "Sorry, something went wrong while answering. Please ask again in a minute."


class _Pacer:
    """Shows the newest draft in the message at most once per interval, in a task of its own."""

    def __init__(
        self,
        sender: SlackSender,
        channel: str,
        ts: asyncio.Future[str] | str,
        *,
        interval: float,
        last_update: float,
    ) -> None:
        self.sender, self.channel, self.ts = sender, channel, ts
        self.interval, self.last_update = interval, last_update
        self.draft: Draft | None = None
        self.first_at: float | None = None  # loop time of the first draft
        self.shown = ""
        self.updated = False  # a draft made it into the message
        self._fresh = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._update: asyncio.Future[None] | None = None  # a draft's update in flight

    def offer(self, draft: Draft) -> None:
        self.draft = draft
        if self.first_at is None:
            self.first_at = asyncio.get_running_loop().time()
        self._fresh.set()
        if self._task is None:
            self._task = asyncio.ensure_future(self._show())

    async def _show(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            message_ts = self.ts if isinstance(self.ts, str) else await asyncio.shield(self.ts)
        except (ChatPlatformError, NotClaimed):
            return  # no message to show drafts in: stream_into_message raises the post's error
        while True:
            await self._fresh.wait()
            delay = max(self.last_update, self.first_at or self.last_update) + self.interval - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self._fresh.clear()
            text = self.draft.text if self.draft is not None else ""
            if not text or text == self.shown:
                continue
            self.last_update = loop.time()
            # Shielded: stopping the drafts must not cut an update off halfway (see `finish`).
            self._update = asyncio.ensure_future(
                self.sender.update(self.channel, message_ts, draft_message(text))
            )
            try:
                await asyncio.shield(self._update)
                # The interval counts from Slack's answer too: a request slowed on its way must not
                # bring the next update closer than the interval at Slack's end.
                self.last_update = loop.time()
                self.shown, self.updated = text, True
            except ChatPlatformError as exc:
                log.warning("could not show a draft in %s: %s", self.channel, exc)

    async def finish(self) -> str:
        """No more drafts: wait for one being sent, keep the interval after it, return the message's ts."""
        loop, update = asyncio.get_running_loop(), self._update
        pending = update is not None and not update.done()
        await self.settle()
        if pending and update is not None and not update.cancelled() and update.exception() is None:
            self.updated, self.last_update = True, loop.time()
        message_ts = self.ts if isinstance(self.ts, str) else await self.ts
        if self.updated:
            await asyncio.sleep(max(0.0, self.last_update + self.interval - loop.time()))
        return message_ts

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def settle(self) -> None:
        """No more drafts, and an update already on its way finishes before this returns, so that
        nothing of a cancelled answer runs on after it (and no update is cut off halfway)."""
        self.stop()
        if self._update is not None and not self._update.done():
            await asyncio.wait({self._update})


async def _consume(parts: AsyncIterator[Draft | RenderedReply], pacer: _Pacer) -> RenderedReply:
    try:
        async for part in parts:
            if isinstance(part, RenderedReply):
                return part
            pacer.offer(part)
    except NotClaimed:
        raise  # not ours to answer: no reply at all
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
    final update once this returns, which also keeps the interval after a shown draft. When
    posting the message fails, the answer is abandoned and the post's error raised.
    """
    pacer = _Pacer(sender, channel, ts, interval=interval, last_update=last_update)
    task = asyncio.current_task()
    state = {"consuming": True, "abandoned": False}

    def on_posted(posted: asyncio.Future[str]) -> None:
        failed = not posted.cancelled() and posted.exception() is not None
        if failed and state["consuming"] and task is not None:
            state["abandoned"] = True
            task.cancel()

    if isinstance(ts, asyncio.Future):
        ts.add_done_callback(on_posted)
    try:
        try:
            reply = await _consume(parts, pacer)
        except asyncio.CancelledError:
            if (
                state["abandoned"]
                and task is not None
                and not task.uncancel()
                and isinstance(ts, asyncio.Future)
            ):
                await ts  # the failed post: raises its error
            raise
        finally:
            state["consuming"] = False
        return await pacer.finish(), reply
    finally:
        await pacer.settle()
