"""stream_into_message on its own: pacing, a draft in flight, a failed "searching…" post, cancellation.

The sender is a recording one (SlackSender over no client, its `update` noting what would go out
and when); the parts are an async generator standing in for Conversation.stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bot.errors import ChatPlatformError
from bot.slack.blocks import SlackMessage
from bot.slack.sender import SlackSender
from bot.slack.streaming import stream_into_message
from bot.types import Draft, RenderedReply, plain

INTERVAL = 0.1


class RecordingSender(SlackSender):
    """Notes each update (loop time, text); each takes `delay_s`, as a Web API call does."""

    def __init__(self, *, delay_s: float = 0.0) -> None:
        super().__init__(client=None)  # type: ignore[arg-type]  # never called: update is replaced
        self.delay_s = delay_s
        self.updates: list[tuple[float, str, str]] = []  # (sent at, message ts, text)
        self.finished: list[float] = []
        self.left = asyncio.Event()  # an update has left, finished or not

    async def update(self, channel: str, ts: str, message: SlackMessage) -> None:
        sent = asyncio.get_running_loop().time()
        self.left.set()
        await asyncio.sleep(self.delay_s)
        self.updates.append((sent, ts, message.text))
        self.finished.append(asyncio.get_running_loop().time())


async def parts(
    words: int, *, every_s: float, read: list[int] | None = None
) -> AsyncIterator[Draft | RenderedReply]:
    text = ""
    for n in range(words):
        await asyncio.sleep(every_s)
        text += f"word{n} "
        if read is not None:
            read.append(n)
        yield Draft(text, lambda raw: raw)
    yield plain(text.strip())


async def test_drafts_keep_the_interval_and_the_final_reply_waits_one_after_the_last() -> None:
    loop = asyncio.get_running_loop()
    sender = RecordingSender()
    started = loop.time()
    ts, reply = await stream_into_message(
        parts(12, every_s=0.025), sender, "C1", "1.0", interval=INTERVAL, last_update=started
    )
    returned = loop.time()
    assert ts == "1.0" and reply.text == " ".join(f"word{n}" for n in range(12))
    sent = [at for at, _, _ in sender.updates]
    assert len(sent) >= 1, "an answer written over 0.3 s shows drafts"
    gaps = [b - a for a, b in zip([started, *sent], [*sent, returned], strict=True)]
    assert min(gaps) >= INTERVAL * 0.9, f"updates closer than the interval: {gaps}"


async def test_an_answer_faster_than_the_interval_shows_no_draft() -> None:
    sender = RecordingSender()
    loop = asyncio.get_running_loop()
    _, reply = await stream_into_message(
        parts(5, every_s=0.001), sender, "C1", "1.0", interval=INTERVAL, last_update=loop.time()
    )
    assert sender.updates == [] and reply.ok


async def test_a_draft_being_sent_is_finished_before_the_final_reply() -> None:
    sender = RecordingSender(delay_s=0.15)  # slower than the rest of the answer takes
    loop = asyncio.get_running_loop()
    _, reply = await stream_into_message(
        parts(8, every_s=0.02), sender, "C1", "1.0", interval=0.05, last_update=loop.time()
    )
    done = loop.time()
    assert len(sender.updates) == 1, "the draft in flight was not cut off"
    assert sender.finished[0] <= done and reply.ok


async def test_a_failed_post_abandons_the_answer_and_raises_its_error() -> None:
    loop = asyncio.get_running_loop()
    posted: asyncio.Future[str] = loop.create_future()
    loop.call_later(0.05, posted.set_exception, ChatPlatformError("Slack refused chat.postMessage"))
    read: list[int] = []
    with pytest.raises(ChatPlatformError, match="postMessage"):
        await stream_into_message(
            parts(100, every_s=0.01, read=read), RecordingSender(), "C1", posted, interval=INTERVAL,
            last_update=loop.time(),
        )  # fmt: skip
    assert len(read) < 20, "the answer stopped when the post failed"


async def test_a_post_that_fails_after_the_answer_still_raises() -> None:
    loop = asyncio.get_running_loop()
    posted: asyncio.Future[str] = loop.create_future()
    loop.call_later(0.05, posted.set_exception, ChatPlatformError("could not reach Slack"))
    with pytest.raises(ChatPlatformError, match="reach"):
        await stream_into_message(
            parts(2, every_s=0.001),
            RecordingSender(),
            "C1",
            posted,
            interval=INTERVAL,
            last_update=loop.time(),
        )


async def test_cancelling_the_answer_cancels_it_and_its_drafts() -> None:
    loop = asyncio.get_running_loop()
    sender = RecordingSender()
    read: list[int] = []
    answering = asyncio.ensure_future(
        stream_into_message(
            parts(100, every_s=0.01, read=read), sender, "C1", "1.0", interval=0.02, last_update=loop.time()
        )
    )
    await asyncio.sleep(0.1)
    answering.cancel()
    with pytest.raises(asyncio.CancelledError):
        await answering
    shown, stopped_at = len(sender.updates), len(read)
    await asyncio.sleep(0.1)
    assert (len(sender.updates), len(read)) == (shown, stopped_at), "nothing runs on after the cancel"


async def test_a_draft_in_flight_when_the_answer_is_cancelled_finishes_before_the_cancel_returns() -> None:
    loop = asyncio.get_running_loop()
    sender = RecordingSender(delay_s=0.2)  # the first draft's update is on its way for 200 ms
    answering = asyncio.ensure_future(
        stream_into_message(
            parts(100, every_s=0.01), sender, "C1", "1.0", interval=0.02, last_update=loop.time()
        )
    )
    await sender.left.wait()  # an event, not a duration: the update is on its way
    answering.cancel()
    with pytest.raises(asyncio.CancelledError):
        await answering
    assert len(sender.updates) == 1, "the update was neither cut off nor left running"
    await asyncio.sleep(0.3)
    assert len(sender.updates) == 1
