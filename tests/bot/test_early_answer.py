"""An answer starts while its event's claim is written, and posts or records nothing unless the claim holds.

The claim's write is held up by another writer holding SQLite's write lock (a second replica, say),
so what the answer does before the claim is settled can be seen.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import ClientResponse

from bot.conversation import StreamingAnswerService
from bot.store import ANSWERED, CLAIMED, BotStore
from bot.types import Incoming
from knowledge.types import Answer, Question
from tests.bot.fake_slack import TEAM
from tests.bot.test_slack import Harness, mention, sign

QUESTION = "How do I install the VPN client?"


class Watched:
    """The harness's AnswerService, noting when an answer starts and when it is written."""

    def __init__(self, inner: StreamingAnswerService) -> None:
        self.inner = inner
        self.started = asyncio.Event()
        self.written = asyncio.Event()

    async def answer(self, question: Question) -> Answer:
        return await self.inner.answer(question)

    async def stream(self, question: Question) -> AsyncIterator[str | Answer]:
        self.started.set()
        async for part in self.inner.stream(question):
            if isinstance(part, Answer):
                self.written.set()
            yield part

    def preview(self, text: str) -> str:
        return self.inner.preview(text)


def watch(harness: Harness) -> Watched:
    answers = harness.bot.conversation.answers
    assert isinstance(answers, StreamingAnswerService)
    watched = Watched(answers)
    harness.bot.conversation.answers = watched
    return watched


def deliver(harness: Harness, event_id: str, **headers: str) -> asyncio.Task[ClientResponse]:
    body = json.dumps({
        "token": "legacy", "team_id": TEAM, "api_app_id": "A0KB", "type": "event_callback",
        "event": mention(QUESTION), "event_id": event_id, "event_time": int(time.time()),
    })  # fmt: skip
    signed = {**sign(body), "Content-Type": "application/json", **headers}
    return asyncio.create_task(harness.client.post("/slack/events", data=body, headers=signed))


async def test_the_answer_is_written_while_the_claim_waits_and_posted_once_it_holds(harness: Harness) -> None:
    watched = watch(harness)
    blocker = harness.engine.raw_connection()
    blocker.cursor().execute("BEGIN IMMEDIATE")
    try:
        first = deliver(harness, "EvEarly")
        await asyncio.wait_for(watched.written.wait(), timeout=10)
        await asyncio.sleep(0.1)
        assert not first.done(), "the claim is still being written"
        assert harness.slack.calls_to("chat.postMessage") == [], "nothing is posted before the claim holds"
        assert harness.events("question") == [], "nor recorded"
    finally:
        blocker.rollback()
        blocker.close()
    assert (await first).status == 200
    await harness.bot.tasks.drain()
    assert len(harness.slack.calls_to("chat.postMessage")) == 1
    finals = [c for c in harness.slack.calls_to("chat.update") if "Writing" not in json.dumps(c)]
    assert len(finals) == 1 and len(harness.events("question")) == 1
    row = BotStore(harness.engine).claim_state("slack:EvEarly")
    assert row is not None and row.state == ANSWERED


@pytest.mark.parametrize(
    "state", [CLAIMED, ANSWERED], ids=["another replica answers it", "answered before a restart"]
)
async def test_a_delivery_that_loses_the_claim_posts_and_records_nothing(
    harness: Harness, state: str
) -> None:
    other = BotStore(harness.engine, owner="other-replica")
    incoming = Incoming("slack", "U0HR", QUESTION, channel="C0GENERAL", thread="1700000000.000100")
    assert other.claim_event("slack:EvTheirs", incoming)
    if state == ANSWERED:
        other.finish_event("slack:EvTheirs")
    other.close()
    watched = watch(harness)
    blocker = harness.engine.raw_connection()
    blocker.cursor().execute("BEGIN IMMEDIATE")
    try:
        delivery = deliver(harness, "EvTheirs", **{"X-Slack-Retry-Num": "1"})
        await asyncio.wait_for(watched.written.wait(), timeout=10)  # the whole answer, before the claim
    finally:
        blocker.rollback()
        blocker.close()
    assert (await delivery).status == 200
    await harness.bot.tasks.drain()
    assert [c.method for c in harness.slack.calls if c.method.startswith("chat.")] == []
    assert harness.events("question") == []
    row = BotStore(harness.engine).claim_state("slack:EvTheirs")
    assert row is not None and row.owner == "other-replica" and row.state == state


async def test_an_answer_whose_claim_is_lost_is_cancelled(harness: Harness) -> None:
    other = BotStore(harness.engine, owner="other-replica")
    incoming = Incoming("slack", "U0HR", QUESTION, channel="C0GENERAL", thread="1700000000.000100")
    assert other.claim_event("slack:EvSlowLoser", incoming)
    other.close()
    watched = watch(harness)
    never = asyncio.Event()
    cancelled = asyncio.Event()

    async def endless(question: Question) -> AsyncIterator[str | Answer]:
        watched.started.set()
        try:
            await never.wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        yield "never"  # pragma: no cover

    watched.stream = endless  # type: ignore[method-assign]
    blocker = harness.engine.raw_connection()
    blocker.cursor().execute("BEGIN IMMEDIATE")
    try:
        delivery = deliver(harness, "EvSlowLoser")
        await asyncio.wait_for(watched.started.wait(), timeout=10)  # the answer, with the claim pending
    finally:
        blocker.rollback()
        blocker.close()
    assert (await delivery).status == 200
    await asyncio.wait_for(cancelled.wait(), timeout=5)
    await harness.bot.tasks.drain(seconds=5)
    assert [c.method for c in harness.slack.calls if c.method.startswith("chat.")] == []
