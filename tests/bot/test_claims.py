"""Event claims: a question acked to Slack is answered once, even when its replica dies first.

Store-level cases run on SQLite and PostgreSQL (two BotStores on one database are two replicas);
recovery runs through the real Slack app against the fake Web API.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from sqlalchemy import Engine, text, update

from bot.store import ANSWERED, FAILED, IGNORED, BotStore
from bot.types import Incoming
from core.db import session_scope
from core.models import ProcessedEventRow, utcnow
from core.settings import Settings
from knowledge.embeddings import Embedder
from tests.bot.fake_slack import TEAM
from tests.bot.test_slack import mention, sign, slack_harness
from tests.fakes import FakeLLM

QUESTION = Incoming("slack", "U0HR", "How do I install the VPN client?", channel="C0GENERAL", thread="1.5")


def expire(engine: Engine, key: str) -> None:
    with session_scope(engine) as session:
        session.execute(
            update(ProcessedEventRow)
            .where(ProcessedEventRow.event_id == key)  # type: ignore[arg-type]
            .values(lease_until=utcnow() - timedelta(seconds=1))
        )


def test_an_expired_claim_is_taken_over_by_exactly_one_replica(migrated: Engine) -> None:
    dead, a, b = (
        BotStore(migrated, owner="dead"),
        BotStore(migrated, owner="a"),
        BotStore(migrated, owner="b"),
    )
    assert dead.claim_event("slack:Ev1", QUESTION, lease_s=60)
    assert not a.claim_event("slack:Ev1", QUESTION), "a redelivery is turned away"
    assert a.expired_claims() == [], "a live lease is left alone"
    dead.set_reply_ts("slack:Ev1", "1700000000.000042")
    expire(migrated, "slack:Ev1")
    assert a.expired_claims() == ["slack:Ev1"]
    claim = a.take_over("slack:Ev1", lease_s=60, max_attempts=3)
    assert claim is not None and (claim.incoming, claim.reply_ts, claim.attempts) == (
        QUESTION, "1700000000.000042", 2
    )  # fmt: skip
    assert b.take_over("slack:Ev1", lease_s=60, max_attempts=3) is None, "taken once"
    assert not dead.renew("slack:Ev1"), "the old owner's lease is gone"
    assert a.renew("slack:Ev1")
    a.finish_event("slack:Ev1")
    row = a.claim_state("slack:Ev1")
    assert row is not None and (row.state, row.payload, row.lease_until) == (ANSWERED, None, None)
    expire(migrated, "slack:Ev1")
    assert b.take_over("slack:Ev1", lease_s=60, max_attempts=3) is None, "answered is final"


def test_a_claim_that_keeps_failing_is_given_up(migrated: Engine) -> None:
    store = BotStore(migrated)
    store.claim_event("slack:Ev2", QUESTION)
    expire(migrated, "slack:Ev2")
    assert store.take_over("slack:Ev2", lease_s=60, max_attempts=2) is not None  # attempt 2
    expire(migrated, "slack:Ev2")
    assert store.take_over("slack:Ev2", lease_s=60, max_attempts=2) is None
    row = store.claim_state("slack:Ev2")
    assert row is not None and row.state == FAILED
    assert store.expired_claims() == []


def test_events_without_a_question_are_recorded_but_never_rerun(migrated: Engine) -> None:
    store = BotStore(migrated)
    assert store.claim_event("slack:EvReaction")
    assert not store.claim_event("slack:EvReaction")
    row = store.claim_state("slack:EvReaction")
    assert row is not None and (row.state, row.payload) == (IGNORED, None)


def test_old_claims_are_pruned_but_live_ones_kept(migrated: Engine) -> None:
    store = BotStore(migrated)
    store.claim_event("slack:EvOld")
    store.claim_event("slack:EvLive", QUESTION, lease_s=600)
    store.claim_event("slack:EvNew")
    with session_scope(migrated) as session:
        session.execute(
            update(ProcessedEventRow)
            .where(ProcessedEventRow.event_id.in_(["slack:EvOld", "slack:EvLive"]))  # type: ignore[attr-defined]
            .values(received_at=utcnow() - timedelta(days=3))
        )
    assert store.prune_events(older_than=timedelta(hours=48)) == 1
    assert store.claim_state("slack:EvOld") is None
    assert store.claim_state("slack:EvLive") is not None and store.claim_state("slack:EvNew") is not None
    assert store.claim_event("slack:EvOld"), "a pruned id can be claimed again"


async def test_a_dead_replicas_question_is_answered_on_recovery_and_only_once(
    make_settings: Callable[..., Settings], tmp_path: Path, embedder: Embedder
) -> None:
    async with slack_harness(make_settings, tmp_path, embedder) as harness:
        dead = BotStore(harness.engine, owner="dead")
        # Died after the ack, before posting anything; and another one after "searching…".
        dead.claim_event("slack:EvLost", QUESTION)
        dead.claim_event("slack:EvHalf", QUESTION)
        dead.set_reply_ts("slack:EvHalf", "1700000000.000777")
        expire(harness.engine, "slack:EvLost")
        expire(harness.engine, "slack:EvHalf")
        handlers = harness.bot.handlers
        assert await handlers.recover() == 2
        await harness.bot.tasks.drain()
        assert await handlers.recover() == 0, "answered claims are never re-run"
        [searching] = harness.slack.calls_to("chat.postMessage")
        assert searching["thread_ts"] == "1.5"
        updated = sorted(call["ts"] for call in harness.slack.calls_to("chat.update"))
        assert updated == ["1700000000.000001", "1700000000.000777"], "the half-done one edits its message"
        assert all("[1]" in call["text"] for call in harness.slack.calls_to("chat.update"))
        assert len(harness.events("question")) == 2
        for key in ("slack:EvLost", "slack:EvHalf"):
            row = dead.claim_state(key)
            assert row is not None and row.state == ANSWERED
        # Slack's redelivery of an event recovered here is still turned away.
        await harness.event(mention("How do I install the VPN client?"), event_id="EvLost")
        assert len(harness.slack.calls_to("chat.update")) == 2


async def test_a_slow_answer_keeps_its_lease_so_no_one_else_answers_it(
    make_settings: Callable[..., Settings], tmp_path: Path, embedder: Embedder
) -> None:
    llm = FakeLLM(piece_chars=8, delay_s=0.05)  # about 1 s of writing
    llm.enqueue("Install HaldenConnect from the Software Center, then sign in with your account [1].")
    async with slack_harness(
        make_settings, tmp_path, embedder, llm=llm, bot_claim_lease_s=0.3, bot_stream_interval_s=0.2
    ) as harness:
        body = json.dumps({
            "token": "legacy", "team_id": TEAM, "api_app_id": "A0KB", "type": "event_callback",
            "event": mention("How do I install the VPN client?"), "event_id": "EvSlow",
            "event_time": int(time.time()),
        })  # fmt: skip
        headers = {**sign(body), "Content-Type": "application/json"}
        assert (await harness.client.post("/slack/events", data=body, headers=headers)).status == 200
        await asyncio.sleep(0.7)  # more than two leases: only renewal keeps the claim
        assert await harness.bot.handlers.recover() == 0
        await harness.bot.tasks.drain()
        finals = [c for c in harness.slack.calls_to("chat.update") if "Writing" not in json.dumps(c)]
        assert len(finals) == 1 and len(harness.slack.calls_to("chat.postMessage")) == 1
        row = BotStore(harness.engine).claim_state("slack:EvSlow")
        assert row is not None and row.state == ANSWERED and row.attempts == 1


async def test_when_the_claim_cannot_be_written_slack_is_asked_to_deliver_again(
    make_settings: Callable[..., Settings], tmp_path: Path, embedder: Embedder
) -> None:
    async with slack_harness(make_settings, tmp_path, embedder) as harness:
        with harness.engine.begin() as connection:  # the database loses the table for a moment
            connection.execute(text("alter table processed_events rename to processed_events_away"))
        failed = await harness.event(mention("How do I install the VPN client?"), event_id="EvDbDown")
        assert failed.status >= 500, "no ack: Slack will deliver the event again"
        with harness.engine.begin() as connection:
            connection.execute(text("alter table processed_events_away rename to processed_events"))
        retried = await harness.event(
            mention("How do I install the VPN client?"), event_id="EvDbDown", **{"X-Slack-Retry-Num": "1"}
        )
        assert retried.status == 200
        assert len(harness.slack.calls_to("chat.update")) == 1, "the redelivery is answered"


async def test_the_running_app_sweeps_for_lost_claims_by_itself(
    make_settings: Callable[..., Settings], tmp_path: Path, embedder: Embedder
) -> None:
    async with slack_harness(make_settings, tmp_path, embedder, bot_claim_sweep_s=0.1) as harness:
        BotStore(harness.engine, owner="dead").claim_event("slack:EvSwept", QUESTION)
        expire(harness.engine, "slack:EvSwept")
        for _ in range(100):  # the sweep runs every 0.1 s; give it up to 5 s on a busy machine
            row = BotStore(harness.engine).claim_state("slack:EvSwept")
            if row is not None and row.state == ANSWERED:
                break
            await asyncio.sleep(0.05)
        await harness.bot.tasks.drain()
        assert len(harness.slack.calls_to("chat.update")) == 1
        row = BotStore(harness.engine).claim_state("slack:EvSwept")
        assert row is not None and row.state == ANSWERED
