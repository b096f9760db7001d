"""The ack path under load: known redeliveries skip bolt (signature still checked), acks go before answers."""

from __future__ import annotations

import asyncio
import json
import time

from aiohttp import ClientResponse
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse

from bot.tasks import AckFirst
from tests.bot.fake_slack import TEAM
from tests.bot.test_slack import Harness, mention, sign

RETRY = {"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"}


def _body(event_id: str) -> str:
    return json.dumps({
        "token": "legacy", "team_id": TEAM, "api_app_id": "A0KB", "type": "event_callback",
        "event": mention("How do I install the VPN client?"), "event_id": event_id,
        "event_time": int(time.time()),
    })  # fmt: skip


def _count_dispatches(harness: Harness) -> list[str]:
    """Records each request that reaches bolt (bolt is the outside library here)."""
    seen: list[str] = []
    dispatch = harness.bot.bolt.async_dispatch

    async def recording(request: AsyncBoltRequest) -> BoltResponse:
        seen.append(str(request.body.get("event_id")))
        return await dispatch(request)

    harness.bot.bolt.async_dispatch = recording  # type: ignore[method-assign, assignment]
    return seen


async def test_a_redelivery_of_a_claimed_event_is_acked_without_bolt(harness: Harness) -> None:
    dispatched = _count_dispatches(harness)
    body = _body("EvFast")
    first = await harness.post("/slack/events", body, content_type="application/json")
    again = await harness.post("/slack/events", body, content_type="application/json", **RETRY)
    assert (first.status, again.status) == (200, 200)
    assert dispatched == ["EvFast"], "the redelivery was answered before bolt"
    assert len(harness.slack.calls_to("chat.update")) == 1


async def test_a_forged_redelivery_still_goes_to_bolt_and_is_rejected(harness: Harness) -> None:
    body = _body("EvForgedRetry")
    await harness.post("/slack/events", body, content_type="application/json")
    headers = {**sign(body, secret="not-the-secret"), "Content-Type": "application/json", **RETRY}
    response = await harness.client.post("/slack/events", data=body, headers=headers)
    assert response.status == 401


async def test_a_stale_redelivery_is_rejected(harness: Harness) -> None:
    body = _body("EvStaleRetry")
    await harness.post("/slack/events", body, content_type="application/json")
    headers = {**sign(body, at=time.time() - 6 * 60), "Content-Type": "application/json", **RETRY}
    response = await harness.client.post("/slack/events", data=body, headers=headers)
    assert response.status == 401


async def test_a_first_delivery_with_a_retry_header_is_answered(harness: Harness) -> None:
    """Slack's retry of an event this replica never saw (another replica took the first one down)."""
    dispatched = _count_dispatches(harness)
    response = await harness.post(
        "/slack/events", _body("EvElsewhere"), content_type="application/json", **RETRY
    )
    assert response.status == 200
    assert dispatched == ["EvElsewhere"]
    assert len(harness.slack.calls_to("chat.update")) == 1


async def test_answers_wait_for_the_acks_in_flight() -> None:
    gate = AckFirst(max_wait_s=5.0)
    order: list[str] = []

    async def answer() -> None:
        await gate.turn()
        order.append("answer")

    with gate.acking():
        task = asyncio.create_task(answer())
        await asyncio.sleep(0.01)
        order.append("ack")
    await task
    assert order == ["ack", "answer"]


async def test_an_answer_waits_at_most_max_wait_however_busy() -> None:
    gate = AckFirst(max_wait_s=0.05)
    with gate.acking():
        started = time.perf_counter()
        await gate.turn()
        waited = time.perf_counter() - started
    assert 0.04 <= waited < 1.0


async def test_no_wait_when_nothing_is_being_acked() -> None:
    gate = AckFirst(max_wait_s=5.0)
    started = time.perf_counter()
    await gate.turn()
    assert time.perf_counter() - started < 0.05


async def test_a_redelivery_during_the_first_claim_waits_for_it_and_skips_bolt(harness: Harness) -> None:
    dispatched = _count_dispatches(harness)
    body = _body("EvRace")
    # Another writer (a second replica, say) holds SQLite's write lock: the first claim has to wait.
    blocker = harness.engine.raw_connection()
    blocker.cursor().execute("BEGIN IMMEDIATE")

    def post(**headers: str) -> asyncio.Task[ClientResponse]:
        signed = {**sign(body), "Content-Type": "application/json", **headers}
        return asyncio.create_task(harness.client.post("/slack/events", data=body, headers=signed))

    try:
        first = post()
        for _ in range(500):
            if harness.bot.handlers.seen("EvRace"):
                break
            await asyncio.sleep(0.01)
        again = post(**RETRY)
        await asyncio.sleep(0.2)
        assert not first.done() and not again.done(), "the redelivery waits for the claim being written"
    finally:
        blocker.rollback()
        blocker.close()
    assert ((await first).status, (await again).status) == (200, 200)
    await harness.bot.tasks.drain()
    assert dispatched == ["EvRace"], "the redelivery was answered before bolt"
    assert len(harness.slack.calls_to("chat.update")) == 1
