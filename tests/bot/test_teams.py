"""Teams on loopback: activities posted to `/api/messages`, replies captured by a fake connector.

Teams delivers an activity again when a turn fails or is slow: a copy is answered once (bot/claims.py).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import Engine, select
from sqlalchemy import text as sql
from sqlmodel import Session

from app.server.assembly import create_app
from bot.store import ANSWERED, BotStore
from bot.teams.app import TEAMS_BOT_KEY, TeamsBot, mount_teams
from bot.types import Incoming
from bot.wiring import build_conversation
from core import db
from core.models import BehaviourEventRow
from core.settings import Settings
from knowledge.embeddings import Embedder
from knowledge.service import KnowledgeBase
from tests.bot.fake_connector import AnonymousConnections, FakeConnector
from tests.bot.test_claims import expire
from tests.bot.test_slack import PAGES

HR_USER = "aad-hr-1"


@dataclass
class Harness:
    client: TestClient[web.Request, web.Application]
    connector: FakeConnector
    engine: Engine
    bot: TeamsBot

    def activity(
        self, text: str, *, personal: bool = True, user: str = HR_USER, **extra: Any
    ) -> dict[str, Any]:
        conversation: dict[str, Any] = {
            "id": "a:personal-1",
            "conversationType": "personal",
            "tenantId": "t1",
        }
        if not personal:
            conversation = {"id": "19:general@thread.tacv2;messageid=1", "conversationType": "channel",
                            "tenantId": "t1", "isGroup": True}  # fmt: skip
        return {
            "type": "message", "id": f"act-{len(self.connector.activities)}", "text": text,
            "channelId": "msteams", "serviceUrl": self.connector.url, "locale": "en-US",
            "from": {"id": f"29:{user}", "aadObjectId": user, "name": "Hana"},
            "recipient": {"id": "28:kb-bot", "name": "kb"}, "conversation": conversation, **extra,
        }  # fmt: skip

    async def post(self, activity: dict[str, Any], **headers: str) -> ClientResponse:
        return await self.client.post("/api/messages", json=activity, headers=headers)


async def _harness(
    settings: Settings, tmp_path: Path, embedder: Embedder, **mount: Any
) -> AsyncIterator[Harness]:
    engine = db.make_engine(settings)
    db.upgrade(engine)
    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in PAGES.items():
        (docs / name).write_text(text)
    kb = KnowledgeBase(settings, engine, embedder=embedder)
    kb.ingest([docs])
    conversation = build_conversation(settings, kb, user_groups={f"teams:{HR_USER}": ["hr"]})
    app = create_app(settings, kb, conversation=conversation)  # mounts Teams when KB_TEAMS_APP_ID is set
    if TEAMS_BOT_KEY not in app:
        assert mount_teams(app, settings, conversation, **mount) is not None
    async with FakeConnector() as connector, TestClient(TestServer(app)) as client:
        yield Harness(client, connector, engine, app[TEAMS_BOT_KEY])
    engine.dispose()


@pytest.fixture
async def harness(
    make_settings: Callable[..., Settings], tmp_path: Path, embedder: Embedder
) -> AsyncIterator[Harness]:
    connections = AnonymousConnections()  # proactive messages (a dead replica's re-run) need a token
    async for item in _harness(
        make_settings(), tmp_path, embedder, allow_anonymous=True, connections=connections
    ):
        yield item


def card_text(card: dict[str, Any]) -> str:
    return json.dumps(card["body"])


async def test_personal_chat_gets_an_adaptive_card_with_the_askers_sources(harness: Harness) -> None:
    response = await harness.post(harness.activity("How much does band H5 pay?"))
    assert response.status == 202
    assert harness.connector.sent("typing"), "a typing indicator goes first"
    [card] = harness.connector.cards()
    assert card["type"] == "AdaptiveCard" and "Pay" in card_text(card)
    assert [a["data"]["kb_action"] for a in card["actions"]][:2] == ["feedback_up", "feedback_down"]
    [reference] = BotStore(harness.engine).references("teams", HR_USER)
    assert reference.service_url == harness.connector.url
    assert reference.reference["conversation"]["id"] == "a:personal-1"


async def test_channel_mention_answers_from_public_documents_only(harness: Harness) -> None:
    mention = {"type": "mention", "text": "<at>kb</at>", "mentioned": {"id": "28:kb-bot", "name": "kb"}}
    activity = harness.activity("<at>kb</at> How much does band H5 pay?", personal=False, entities=[mention])
    assert (await harness.post(activity)).status == 202
    [card] = harness.connector.cards()
    assert "Pay" not in card_text(card)
    with Session(harness.engine) as session:
        question = session.execute(select(BehaviourEventRow)).scalars().one()
    assert question.text == "How much does band H5 pay?", "the mention is not part of the question"


async def test_feedback_submit_is_recorded(harness: Harness) -> None:
    await harness.post(harness.activity("How do I install the VPN client?"))
    [card] = harness.connector.cards()
    data = card["actions"][1]["data"]
    await harness.post(harness.activity("", value=data))
    with Session(harness.engine) as session:
        feedback = session.execute(
            select(BehaviourEventRow).where(BehaviourEventRow.kind == "feedback")  # type: ignore[arg-type]
        ).scalars().one()  # fmt: skip
    assert (feedback.question_id, feedback.data) == (int(data["question_id"]), {"value": -1})
    assert harness.connector.sent()[-1]["text"].startswith("Thanks")


async def test_malformed_activity_is_a_400(harness: Harness) -> None:
    response = await harness.client.post(
        "/api/messages", data="{oops", headers={"Content-Type": "application/json"}
    )
    assert response.status == 400
    assert (await harness.post({"type": "message"})).status == 400


async def test_with_auth_configured_unauthenticated_activities_are_rejected(
    make_settings: Callable[..., Settings], tmp_path: Path, embedder: Embedder
) -> None:
    settings = make_settings(teams_app_id="00000000-0000-0000-0000-00000000b07", teams_app_password="hunter2")
    async for harness in _harness(settings, tmp_path, embedder):
        assert (await harness.post(harness.activity("hi"))).status == 401
        forged = await harness.post(harness.activity("hi"), Authorization="Bearer not.a.jwt")
        assert forged.status == 401
        assert harness.connector.activities == []


async def test_unknown_activity_types_and_huge_messages_do_not_break_the_endpoint(harness: Harness) -> None:
    odd = {**harness.activity("hi"), "type": "somethingNew"}
    assert (await harness.post(odd)).status < 500
    huge = await harness.post(harness.activity("x" * 1_000_000))
    assert huge.status == 413
    assert (await harness.post(harness.activity("help"))).status == 202, "still answering"
    assert "subscribe" in json.dumps(harness.connector.cards() or harness.connector.sent()[-1])


def questions(engine: Engine) -> list[BehaviourEventRow]:
    with Session(engine) as session:
        query = select(BehaviourEventRow).where(BehaviourEventRow.kind == "question")  # type: ignore[arg-type]
        return list(session.execute(query).scalars())


def claims(engine: Engine) -> list[tuple[str, str]]:
    with engine.connect() as connection:
        return [(r.event_id, r.state) for r in connection.execute(sql("select * from processed_events"))]


async def test_a_redelivered_activity_is_answered_once(harness: Harness) -> None:
    activity = harness.activity("How do I install the VPN client?", id="act-vpn")
    assert (await harness.post(activity)).status == 202
    again = await harness.post(activity)  # Teams' retry of a turn it thought failed
    assert again.status < 300
    assert len(harness.connector.cards()) == 1 and len(harness.connector.sent("typing")) == 1
    assert len(questions(harness.engine)) == 1
    [(key, state)] = claims(harness.engine)
    assert key.startswith("teams:") and key.endswith(":act-vpn") and state == ANSWERED


async def test_copies_arriving_together_are_answered_once(harness: Harness) -> None:
    activity = harness.activity("How do I install the VPN client?", id="act-twice")
    responses = await asyncio.gather(*(harness.post(activity) for _ in range(3)))
    assert all(r.status < 300 for r in responses)
    assert len(harness.connector.cards()) == 1 and len(questions(harness.engine)) == 1


async def test_the_same_activity_id_in_another_conversation_is_another_question(harness: Harness) -> None:
    await harness.post(harness.activity("How do I install the VPN client?", id="1700000000000"))
    await harness.post(
        harness.activity("How do I install the VPN client?", id="1700000000000", personal=False)
    )
    assert len(harness.connector.cards()) == 2


async def test_a_redelivered_button_is_recorded_once(harness: Harness) -> None:
    await harness.post(harness.activity("How do I install the VPN client?"))
    [card] = harness.connector.cards()
    click = harness.activity("", value=card["actions"][0]["data"], id="act-click")
    await harness.post(click)
    await harness.post(click)
    with Session(harness.engine) as session:
        feedback = session.execute(
            select(BehaviourEventRow).where(BehaviourEventRow.kind == "feedback")  # type: ignore[arg-type]
        ).scalars().all()  # fmt: skip
    assert len(feedback) == 1 and len(harness.connector.sent()) == 2, "one card, one thanks"


async def test_a_dead_replicas_question_is_answered_proactively_and_once(harness: Harness) -> None:
    await harness.post(harness.activity("help"))  # the conversation's reference is known from here on
    question = Incoming("teams", HR_USER, "How much does band H5 pay?", channel="a:personal-1", private=True)
    dead = BotStore(harness.engine, owner="dead")
    assert dead.claim_event("teams:c0ffee:act-lost", question)  # died after taking the activity
    expire(harness.engine, "teams:c0ffee:act-lost")
    assert await harness.bot.claims.recover() == 1
    await harness.bot.tasks.drain()
    assert await harness.bot.claims.recover() == 0, "answered claims are never re-run"
    answer = harness.connector.cards()[-1]
    assert "Pay" in card_text(answer), "the asker's own groups still apply in a personal chat"
    row = dead.claim_state("teams:c0ffee:act-lost")
    assert row is not None and row.state == ANSWERED
    dead.close()
