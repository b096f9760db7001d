"""Delivery: exactly once through crashes and retries, recipients who left, rate limits, holds, ACLs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import Engine, select
from sqlmodel import Session, col

from core.messaging import DeliveryFailed, MessageItem, OutgoingMessage, RateLimited, RecipientGone
from core.models import BehaviourEventRow, PushDeliveryRow, as_utc
from core.settings import Settings
from push.delivery import Dispatcher, Draft, RateLimiter, TokenBucket
from push.ledger import record_response
from push.recipients import load_users
from tests.push.push_fakes import T0, Clock, RecordingSender, add_document, add_user


@pytest.fixture
def push_settings(make_settings: Callable[..., Settings], database_url: str) -> Settings:
    return make_settings(database_url=database_url, push_retry_base_s=60.0, push_max_per_day=3)


@pytest.fixture
def world(migrated: Engine) -> Engine:
    add_document(migrated, "vpn")
    add_document(migrated, "payroll", acl=["hr"])
    return migrated


def draft(
    engine: Engine, settings: Settings, user_key: str, key: str, *docs: str, explicit: bool = False
) -> Draft:
    user = load_users(engine, settings, only=[user_key])[0]
    items = tuple(MessageItem(d, d.title(), f"https://wiki.example/{d}", "because") for d in docs)
    return Draft(
        key=key, kind="digest", user=user, window_end=T0, title="Digest", items=items, explicit=explicit
    )


def rows(engine: Engine) -> dict[str, PushDeliveryRow]:
    with Session(engine) as session:
        return {r.key: r for r in session.execute(select(PushDeliveryRow)).scalars()}


def dispatcher(engine: Engine, settings: Settings, sender: RecordingSender, clock: Clock) -> Dispatcher:
    return Dispatcher(engine, settings, {"slack": sender}, limiter=RateLimiter({}), clock=clock)


async def test_a_key_is_sent_once_however_often_it_is_submitted(
    world: Engine, push_settings: Settings
) -> None:
    user = add_user(world, "U1")
    sender, clock = RecordingSender(), Clock()
    dispatch = dispatcher(world, push_settings, sender, clock)
    first = await dispatch.submit(draft(world, push_settings, user, "k1", "vpn"))
    again = await asyncio.gather(
        *(dispatch.submit(draft(world, push_settings, user, "k1", "vpn")) for _ in range(3))
    )
    assert (first, set(again)) == ("sent", {"duplicate"})
    assert [m.key for m in sender.sent] == ["k1"]
    row = rows(world)["k1"]
    assert (row.state, row.attempts, row.documents, row.message_id) == ("sent", 1, ["vpn"], "1")


async def test_a_lost_reply_is_found_not_resent(world: Engine, push_settings: Settings) -> None:
    """The platform got the message but we never heard back (the crash window): find() settles it."""
    user = add_user(world, "U1")
    sender, clock = RecordingSender(), Clock()
    sender.deliver_then_fail("U1", DeliveryFailed("read timed out"))
    dispatch = dispatcher(world, push_settings, sender, clock)
    assert await dispatch.submit(draft(world, push_settings, user, "k1", "vpn")) == "retry"
    clock.advance(minutes=2)
    assert await dispatch.resume() == ["sent"]
    assert len(sender.sent) == 1 and sender.finds == ["k1"]
    assert rows(world)["k1"].reason == "found after a restart"


async def test_rows_left_sending_by_a_crash_are_resolved_by_find(
    world: Engine, push_settings: Settings
) -> None:
    u1, u2 = add_user(world, "U1"), add_user(world, "U2")
    sender, clock = RecordingSender(), Clock()
    dispatch = dispatcher(world, push_settings, sender, clock)
    # Both rows were claimed (state sending) by a process that then died; only U1's message went out.
    for user, key in ((u1, "k1"), (u2, "k2")):
        assert dispatch._claim(
            draft(world, push_settings, user, key, "vpn"),
            (MessageItem("vpn", "Vpn", "u"),),
            "sending",
            clock(),
            attempts=1,
        )
    sender.sent.append(
        OutgoingMessage(platform="slack", user_id="U1", key="k1", kind="digest", title="Digest")
    )
    clock.advance(seconds=1)
    states = await dispatch.resume(orphans_before=clock())
    assert sorted(states) == ["sent", "sent"]
    assert sorted(m.key for m in sender.sent) == ["k1", "k2"]  # k1 not repeated, k2 not lost
    assert rows(world)["k1"].reason == "found after a restart"


async def test_fresh_sending_rows_of_a_live_process_are_left_alone(
    world: Engine, push_settings: Settings
) -> None:
    user = add_user(world, "U1")
    sender, clock = RecordingSender(), Clock()
    dispatch = dispatcher(world, push_settings, sender, clock)
    dispatch._claim(
        draft(world, push_settings, user, "k1", "vpn"),
        (MessageItem("vpn", "Vpn", "u"),),
        "sending",
        clock(),
        attempts=1,
    )
    assert await dispatch.resume() == []  # younger than the orphan age: someone is sending it
    clock.advance(minutes=11)
    assert await dispatch.resume() == ["sent"]


async def test_a_recipient_who_left_is_recorded_and_never_retried(
    world: Engine, push_settings: Settings
) -> None:
    gone, stays = add_user(world, "UGONE"), add_user(world, "U2")
    sender, clock = RecordingSender(), Clock()
    sender.fail("UGONE", RecipientGone("Slack: user_not_found"))
    dispatch = dispatcher(world, push_settings, sender, clock)
    states = await dispatch.submit_all(
        [draft(world, push_settings, gone, "kg", "vpn"), draft(world, push_settings, stays, "k2", "vpn")]
    )
    assert states == ["gone", "sent"]
    assert rows(world)["kg"].reason == "Slack: user_not_found"
    clock.advance(days=2)
    assert await dispatch.resume() == []
    assert [m.user_id for m in sender.sent] == ["U2"]


async def test_a_short_rate_limit_is_waited_out_in_place(world: Engine, push_settings: Settings) -> None:
    user = add_user(world, "U1")
    sender, clock = RecordingSender(), Clock()
    sender.fail("U1", RateLimited("ratelimited", retry_after=0.05))
    assert (
        await dispatcher(world, push_settings, sender, clock).submit(
            draft(world, push_settings, user, "k1", "vpn")
        )
        == "sent"
    )
    assert rows(world)["k1"].attempts == 2 and len(sender.sent) == 1


async def test_a_platform_that_is_down_is_retried_later_with_backoff(
    world: Engine, push_settings: Settings
) -> None:
    user = add_user(world, "U1")
    sender, clock = RecordingSender(), Clock()
    sender.fail("U1", DeliveryFailed("Slack is down (503)"))
    dispatch = dispatcher(world, push_settings, sender, clock)
    assert await dispatch.submit(draft(world, push_settings, user, "k1", "vpn")) == "retry"
    row = rows(world)["k1"]
    assert row.reason == "Slack is down (503)" and row.next_attempt_at is not None
    assert as_utc(row.next_attempt_at) - clock() == timedelta(seconds=60)  # push_retry_base_s, first retry
    assert await dispatch.resume() == []  # not yet due
    clock.advance(seconds=61)
    assert await dispatch.resume() == ["sent"]
    assert len(sender.sent) == 1 and sender.finds == ["k1"]  # checked before resending


async def test_errors_that_cannot_succeed_fail_at_once_with_their_reason(
    world: Engine, push_settings: Settings
) -> None:
    user = add_user(world, "U1")
    sender, clock = RecordingSender(), Clock()
    sender.fail("U1", DeliveryFailed("Slack refused chat.postMessage: missing_scope", retryable=False))
    assert (
        await dispatcher(world, push_settings, sender, clock).submit(
            draft(world, push_settings, user, "k1", "vpn")
        )
        == "failed"
    )
    assert "missing_scope" in rows(world)["k1"].reason


async def test_attempts_are_capped(
    world: Engine, make_settings: Callable[..., Settings], database_url: str
) -> None:
    settings = make_settings(database_url=database_url, push_max_attempts=2, push_retry_base_s=10.0)
    user = add_user(world, "U1")
    sender, clock = RecordingSender(), Clock()
    sender.fail("U1", *[DeliveryFailed("503")] * 5)
    dispatch = dispatcher(world, settings, sender, clock)
    assert await dispatch.submit(draft(world, settings, user, "k1", "vpn")) == "retry"
    clock.advance(minutes=5)
    assert await dispatch.resume() == ["failed"]
    assert rows(world)["k1"].attempts == 2


async def test_one_persons_broken_delivery_never_blocks_the_others(
    world: Engine, push_settings: Settings
) -> None:
    users = [add_user(world, f"U{i}") for i in range(6)]
    sender, clock = RecordingSender(), Clock()
    sender.fail("U0", ZeroDivisionError("a bug in an adapter"))
    sender.fail("U1", RateLimited("ratelimited", retry_after=600))
    states = await dispatcher(world, push_settings, sender, clock).submit_all(
        [draft(world, push_settings, u, f"k{i}", "vpn") for i, u in enumerate(users)]
    )
    assert states[:2] == ["retry", "retry"] and states[2:] == ["sent"] * 4
    assert rows(world)["k0"].reason == "ZeroDivisionError"


async def test_quiet_hours_defer_until_they_end(world: Engine, push_settings: Settings) -> None:
    user = add_user(world, "U1", timezone="Europe/Berlin", quiet=(22, 7))
    sender, clock = RecordingSender(), Clock(T0.replace(hour=23, minute=0))  # 00:00 in Berlin
    dispatch = dispatcher(world, push_settings, sender, clock)
    assert await dispatch.submit(draft(world, push_settings, user, "k1", "vpn")) == "deferred"
    row = rows(world)["k1"]
    assert row.reason == "quiet hours"
    assert as_utc(row.next_attempt_at or T0) == T0.replace(hour=6, minute=0) + timedelta(
        days=1
    )  # 07:00 Berlin
    clock.advance(hours=6, minutes=59)
    assert await dispatch.resume() == []  # not due before quiet hours end
    clock.advance(minutes=2)
    assert await dispatch.resume() == ["sent"] and len(sender.sent) == 1
    # An explicit request ("digest now") is answered even in quiet hours.
    clock.now = T0.replace(hour=23) + timedelta(days=1)
    assert await dispatch.submit(draft(world, push_settings, user, "k2", "vpn", explicit=True)) == "sent"


async def test_the_frequency_cap_defers_past_the_daily_limit(world: Engine, push_settings: Settings) -> None:
    user = add_user(world, "U1")
    sender, clock = RecordingSender(), Clock()
    dispatch = dispatcher(world, push_settings, sender, clock)
    states = []
    for n in range(4):
        states.append(await dispatch.submit(draft(world, push_settings, user, f"k{n}", "vpn")))
        clock.advance(minutes=10)
    assert states == ["sent", "sent", "sent", "deferred"]
    assert rows(world)["k3"].reason == "frequency cap (3 a day)"
    clock.now = T0 + timedelta(days=1, minutes=1)
    assert await dispatch.resume() == ["sent"]


async def test_nothing_outside_the_recipients_groups_is_ever_sent(
    world: Engine, push_settings: Settings
) -> None:
    user = add_user(world, "U1")  # no groups: may read vpn (public), not payroll (hr)
    sender, clock = RecordingSender(), Clock()
    dispatch = dispatcher(world, push_settings, sender, clock)
    assert (
        await dispatch.submit(draft(world, push_settings, user, "k1", "vpn", "payroll", "unknown-doc"))
        == "sent"
    )
    assert await dispatch.submit(draft(world, push_settings, user, "k2", "payroll")) == "empty"
    assert [[i.document_id for i in m.items] for m in sender.sent] == [["vpn"]]


async def test_a_click_is_logged_and_becomes_a_behaviour_event(
    world: Engine, push_settings: Settings
) -> None:
    user = add_user(world, "U1")
    await dispatcher(world, push_settings, RecordingSender(), Clock()).submit(
        draft(world, push_settings, user, "k1", "vpn")
    )
    assert record_response(world, "k1", "vpn") is True
    assert record_response(world, "k1", "payroll") is False  # not in that message
    assert record_response(world, "k1", "vpn", action="dismissed") is True
    row = rows(world)["k1"]
    assert row.clicked_at is not None and row.dismissed_at is not None
    with Session(world) as session:
        events = (
            session.execute(select(BehaviourEventRow).order_by(col(BehaviourEventRow.id))).scalars().all()
        )
    assert [(e.kind, e.data["document_id"], e.data.get("value")) for e in events] == [
        ("source_click", "vpn", None),
        ("feedback", "vpn", -1),
    ]


async def test_token_bucket_keeps_the_rate_per_conversation() -> None:
    limiter = RateLimiter({"slack": (20.0, 1.0)})
    started = time.perf_counter()
    await asyncio.gather(*(limiter.acquire("slack", "D1") for _ in range(5)))
    one_channel = time.perf_counter() - started
    started = time.perf_counter()
    await asyncio.gather(*(limiter.acquire("slack", f"D{n}") for n in range(2, 7)))
    many_channels = time.perf_counter() - started
    assert one_channel >= 4 / 20 * 0.95  # 5 messages at 20/s with a burst of 1
    assert many_channels < 0.05  # other conversations do not wait
    overall = RateLimiter({"teams": (1000.0, 1000.0)}, global_limits={"teams": (20.0, 1.0)})
    started = time.perf_counter()
    await asyncio.gather(*(overall.acquire("teams", f"C{n}") for n in range(5)))
    assert time.perf_counter() - started >= 4 / 20 * 0.95  # the app-wide limit binds across conversations
    bucket = TokenBucket(1000.0, 1.0)
    bucket.block(0.1)
    started = time.perf_counter()
    await bucket.acquire()
    assert time.perf_counter() - started >= 0.09  # Retry-After is honoured


async def test_through_the_slack_adapter_limits_outages_and_leavers_are_each_handled(
    world: Engine, push_settings: Settings
) -> None:
    from slack_sdk.web.async_client import AsyncWebClient

    from bot.slack.push_sender import SlackPushSender
    from tests.bot.fake_slack import FakeSlack

    users = [add_user(world, u) for u in ("U1", "U2", "UGONE")]
    async with FakeSlack() as slack:
        slack.rate_limit("chat.postMessage", retry_after=0, times=2)  # two 429s, then it goes through
        slack.gone_users.add("UGONE")
        sender = SlackPushSender(AsyncWebClient(token="xoxb-test", base_url=slack.api_url))
        clock = Clock()
        dispatch = Dispatcher(world, push_settings, {"slack": sender}, clock=clock)  # real Slack rate limits
        states = await dispatch.submit_all([draft(world, push_settings, u, f"k-{u}", "vpn") for u in users])
        assert states == ["sent", "sent", "gone"]
        slack.canned["chat.postMessage"] = {"ok": False, "error": "service_unavailable"}  # Slack is down
        u1_again = draft(world, push_settings, users[0], "k-next", "vpn")
        assert await dispatch.submit(u1_again) == "retry"
        del slack.canned["chat.postMessage"]
        clock.advance(minutes=2)
        assert await dispatch.resume() == ["sent"]
        await sender.aclose()
    keys = [
        c["metadata"]["event_payload"]["key"] for c in slack.calls_to("chat.postMessage") if "metadata" in c
    ]
    assert sorted(set(keys)) == ["k-next", "k-slack:U1", "k-slack:U2"]
    assert len(slack.posts_to("U1")) == 2 and len(slack.posts_to("U2")) == 1  # each delivered once


async def test_a_held_message_is_dropped_when_the_person_opts_out_meanwhile(
    world: Engine, push_settings: Settings
) -> None:
    from core.db import session_scope
    from core.models import DigestPrefRow

    user = add_user(world, "U1", quiet=(22, 7))
    sender, clock = RecordingSender(), Clock(T0.replace(hour=23))
    dispatch = dispatcher(world, push_settings, sender, clock)
    assert await dispatch.submit(draft(world, push_settings, user, "k1", "vpn")) == "deferred"
    with session_scope(world) as session:
        pref = session.get(DigestPrefRow, ("slack", "U1"))
        assert pref is not None
        pref.cadence = "off"
    clock.advance(hours=9)
    assert await dispatch.resume() == ["skipped"]
    assert sender.sent == [] and rows(world)["k1"].reason == "the person turned push off"
