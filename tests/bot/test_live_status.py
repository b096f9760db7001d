"""`admin status` while a training run is live: its Slack message and Teams card are edited in place.

Over loopback against the recording fakes (Slack's Web API, the Bot Connector), through slack-bolt
and the Agents SDK as `kb serve` wires them, with the real training desk reading the run's row. The
test moves the run on by writing its row, as the worker does, and waits for the edits it expects
to arrive at the fake: no fixed sleeps.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import Engine

from app.server.assembly import create_app
from app.server.training import chat_hooks
from bot.live import SUPERSEDED
from bot.teams.app import TEAMS_BOT_KEY, mount_teams
from bot.wiring import build_conversation
from core import db
from core.settings import Settings
from knowledge.embeddings import Embedder
from knowledge.service import KnowledgeBase
from privacy.budget import BudgetLedger
from tests.bot.fake_connector import AnonymousConnections, FakeConnector
from tests.bot.test_slack import Harness, dm, slack_harness
from tests.bot.test_teams import Harness as TeamsHarness
from training.run import run_name
from training.runs import RunStore

INTERVAL = 0.05  # KB_BOT_STATUS_INTERVAL_S here; 5 s by default
TEAMS_ADMIN = "aad-admin-1"
STEP = re.compile(r"step (\d+)/3")


def start_run(engine: Engine) -> RunStore:
    """Run #1 claimed by a worker, its ε reserved in the ledger as distill reserves it."""
    runs = RunStore(engine)
    runs.create("slack:U0ADMIN", {"epsilon": 4.0, "epochs": 1})
    assert runs.claim("worker-1") is not None
    BudgetLedger(engine, epsilon=16.0, delta=1e-4).reserve(
        run_name(1), dataset_hash="d", epsilon=4.0, delta=1e-5,
        details={"noise_multiplier": 0.68, "sample_rate": 0.1, "accountant": "rdp", "steps": 3},
    )  # fmt: skip
    return runs


def succeed(runs: RunStore) -> None:
    report = {"epsilon_spent": 3.9, "correctness": 0.41, "activation": "active as kb-v1", "elapsed_s": 12.0}
    runs.finish(1, "succeeded", report=report, version=1)


@pytest.fixture
async def slack(
    make_settings: Callable[..., Settings], tmp_path: Path, embedder: Embedder
) -> AsyncIterator[Harness]:
    async with slack_harness(make_settings, tmp_path, embedder, bot_status_interval_s=INTERVAL) as harness:
        yield harness


def edits(harness: Harness) -> list[tuple[str, str]]:
    """(ts, text) of every chat.update, the first being the status reply replacing "searching…"."""
    return [(body["ts"], body["text"]) for body in harness.slack.calls_to("chat.update")]


async def ask_status(harness: Harness, *, event_id: str = "EvStatus") -> tuple[str, asyncio.Task[None]]:
    """`admin status` in the admin's DM: the status message's ts and the task that follows the run."""
    posts = len(harness.slack.calls_to("chat.postMessage"))
    await harness.event(dm("admin status", user="U0ADMIN", channel="D0ADMIN"), event_id=event_id)
    ts = [c.response["ts"] for c in harness.slack.calls if c.method == "chat.postMessage"][posts]
    assert next(text for edited, text in edits(harness) if edited == ts).endswith(
        "Run #1 running (ε=4.0, 1 epochs, by slack:U0ADMIN)."
    )
    task = harness.bot.handlers.live.following("slack:D0ADMIN")
    assert task is not None, "a live run: the message follows it"
    return ts, task


async def test_slack_status_message_follows_the_run_until_it_succeeds(slack: Harness) -> None:
    runs = start_run(slack.engine)
    ts, task = await ask_status(slack)
    for step in (1, 2, 3):
        runs.progress(1, stage="training", step=step, total=3, loss=2.0 / step)
        await slack.slack.until(lambda step=step: f"step {step}/3" in edits(slack)[-1][1])  # type: ignore[misc]
    succeed(runs)
    await slack.slack.until(lambda: "Run #1 succeeded" in edits(slack)[-1][1])
    await asyncio.wait_for(task, 60)

    shown = edits(slack)
    assert {edit_ts for edit_ts, _ in shown} == {ts}, "every edit is of the one status message"
    steps = [int(m.group(1)) for _, text in shown if (m := STEP.search(text))]
    assert steps == [1, 2, 3], shown
    assert "loss 0.667" in shown[3][1] and "ε so far" in shown[3][1]
    assert "version 1" in shown[-1][1] and "ε spent 3.9" in shown[-1][1]
    assert all(a != b for (_, a), (_, b) in itertools.pairwise(shown)), "only changes go out"
    times = [c.at for c in slack.slack.calls if c.method == "chat.update"]
    assert all(b - a >= INTERVAL for a, b in itertools.pairwise(times)), "paced"
    assert len(slack.bot.handlers.live) == 0


async def test_a_deleted_status_message_stops_its_follower_quietly(
    slack: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    runs = start_run(slack.engine)
    _, task = await ask_status(slack)
    slack.slack.canned["chat.update"] = {"ok": False, "error": "message_not_found"}
    before = len(edits(slack))
    with caplog.at_level(logging.INFO, logger="bot.live"):
        runs.progress(1, stage="training", step=1, total=3, loss=2.0)
        await asyncio.wait_for(task, 60)
    assert not task.cancelled() and task.exception() is None
    assert len(edits(slack)) == before + 1, "one refused edit, then nothing"
    assert [r.levelno for r in caplog.records if r.name == "bot.live"] == [logging.INFO]
    assert len(slack.bot.handlers.live) == 0


async def test_a_second_status_in_the_channel_takes_over(slack: Harness) -> None:
    runs = start_run(slack.engine)
    first_ts, first = await ask_status(slack, event_id="EvFirst")
    second_ts, second = await ask_status(slack, event_id="EvSecond")
    await asyncio.wait_for(first, 60)
    assert (first_ts, SUPERSEDED) in [(ts, text[-len(SUPERSEDED) :]) for ts, text in edits(slack)]
    assert slack.bot.handlers.live.following("slack:D0ADMIN") is second and not second.done()
    succeed(runs)
    await asyncio.wait_for(second, 60)
    assert edits(slack)[-1][0] == second_ts and "Run #1 succeeded" in edits(slack)[-1][1]


async def test_status_without_a_live_run_is_one_reply_and_others_are_refused(slack: Harness) -> None:
    await slack.event(dm("admin status", user="U0ADMIN", channel="D0ADMIN"), event_id="EvNone")
    assert "No training runs yet" in edits(slack)[-1][1]
    start_run(slack.engine)
    await slack.event(dm("admin status", user="U0HR"), event_id="EvNotAdmin")
    assert "admins only" in edits(slack)[-1][1]
    assert len(slack.bot.handlers.live) == 0


async def test_shutdown_stops_the_followers(slack: Harness) -> None:
    start_run(slack.engine)
    _, task = await ask_status(slack)
    await slack.client.close()  # kb serve's shutdown hooks run
    assert task.cancelled()


# -- Teams: the card is updated through the connector (updateActivity), one proactive turn each --


@pytest.fixture
async def teams(
    make_settings: Callable[..., Settings], tmp_path: Path, embedder: Embedder
) -> AsyncIterator[TeamsHarness]:
    settings = make_settings(bot_admins=[f"teams:{TEAMS_ADMIN}"], bot_status_interval_s=INTERVAL)
    engine = db.make_engine(settings)
    db.upgrade(engine)
    kb = KnowledgeBase(settings, engine, embedder=embedder)
    conversation = build_conversation(settings, kb, hooks=chat_hooks(settings, kb))
    app = create_app(settings, kb, conversation=conversation)
    mount_teams(app, settings, conversation, allow_anonymous=True, connections=AnonymousConnections())
    async with FakeConnector() as connector, TestClient(TestServer(app)) as client:
        yield TeamsHarness(client, connector, engine, app[TEAMS_BOT_KEY])
    engine.dispose()


def card_says(card: dict[str, Any]) -> str:
    return " ".join(str(block.get("text", "")) for block in card["body"])


async def teams_status(teams: TeamsHarness) -> tuple[str, asyncio.Task[None]]:
    """`admin status` in the admin's chat: the id the connector gave its card, and its follower."""
    assert (await teams.post(teams.activity("admin status", user=TEAMS_ADMIN))).status == 202
    [(index, card)] = [(i, a) for i, a in enumerate(teams.connector.activities) if a.get("attachments")][-1:]
    assert "Run #1 running" in card_says(card["attachments"][0]["content"])
    task = teams.bot.live.following("teams:a:personal-1") if teams.bot.live else None
    assert task is not None
    return f"reply-{index + 1}", task


async def test_teams_status_card_is_updated_in_place_until_the_run_succeeds(teams: TeamsHarness) -> None:
    runs = start_run(teams.engine)
    card_id, task = await teams_status(teams)
    for step in (1, 2):
        runs.progress(1, stage="training", step=step, total=3, loss=1.5)
        await teams.connector.until(
            lambda step=step: any(
                f"step {step}/3" in card_says(c) for c in teams.connector.updated_cards(card_id)
            )  # type: ignore[misc]
        )
    succeed(runs)
    await asyncio.wait_for(task, 60)

    assert {activity_id for activity_id, _ in teams.connector.updates} == {card_id}
    cards = [card_says(c) for c in teams.connector.updated_cards(card_id)]
    assert [int(m.group(1)) for text in cards if (m := STEP.search(text))] == [1, 2]
    assert "Run #1 succeeded" in cards[-1]
    sent = [a for a in teams.connector.sent() if a.get("attachments")]
    assert len(sent) == 1, "updates, not new cards"
    assert json.dumps(teams.connector.updates[-1][1]).count("AdaptiveCard") == 1


async def test_a_deleted_teams_card_stops_its_follower_quietly(teams: TeamsHarness) -> None:
    runs = start_run(teams.engine)
    card_id, task = await teams_status(teams)
    teams.connector.gone.add(card_id)
    runs.progress(1, stage="training", step=1, total=3, loss=1.5)
    await asyncio.wait_for(task, 60)
    assert not task.cancelled() and task.exception() is None
    assert len(teams.connector.updates) == 1, "one refused update, then nothing"
    assert not [a for a in teams.connector.sent() if "Sorry" in str(a.get("text"))], "no apology to the user"


# -- the web chat cannot edit what it sent: one reply, as before --


async def test_web_chat_status_is_one_reply(
    make_settings: Callable[..., Settings], tmp_path: Path, embedder: Embedder
) -> None:
    settings = make_settings(bot_admins=["web:web"])
    engine = db.make_engine(settings)
    db.upgrade(engine)
    start_run(engine)
    async with TestClient(
        TestServer(create_app(settings, KnowledgeBase(settings, engine, embedder=embedder)))
    ) as client:
        reply = await (await client.post("/api/ask", json={"question": "admin status"})).json()
    assert "Run #1 running" in reply["text"]
    engine.dispose()
