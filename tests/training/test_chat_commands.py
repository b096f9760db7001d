"""The training admin commands from Teams (activities on loopback), with the real desk and no model server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from app.server.assembly import create_app
from app.server.training import chat_hooks
from bot.teams.app import TEAMS_BOT_KEY, mount_teams
from bot.wiring import build_conversation
from core import db
from core.settings import Settings
from core.training import routing_from_db
from knowledge.embeddings import Embedder
from knowledge.service import KnowledgeBase
from privacy.audit import AuditLog
from tests.bot.fake_connector import AnonymousConnections, FakeConnector
from tests.bot.test_teams import HR_USER, Harness, card_text
from training.registry import Registry

ADMIN = "aad-admin-1"


@pytest.fixture
async def teams(
    make_settings: Callable[..., Settings], tmp_path: Path, embedder: Embedder
) -> AsyncIterator[Harness]:
    student = tmp_path / "student"
    student.mkdir()
    settings = make_settings(
        bot_admins=[f"teams:{ADMIN}"], train_student=str(student), train_dir=str(tmp_path / "train"),
        llm_url="http://127.0.0.1:9", llm_model="base", privacy_budget_epsilon=8.0,
    )  # fmt: skip
    engine = db.make_engine(settings)
    db.upgrade(engine)
    kb = KnowledgeBase(settings, engine, embedder=embedder)
    conversation = build_conversation(settings, kb, hooks=chat_hooks(settings, kb))
    app = create_app(settings, kb, conversation=conversation)
    if TEAMS_BOT_KEY not in app:
        mount_teams(app, settings, conversation, allow_anonymous=True, connections=AnonymousConnections())
    async with FakeConnector() as connector, TestClient(TestServer(app)) as client:
        yield Harness(client, connector, engine, app[TEAMS_BOT_KEY])
    engine.dispose()


async def _say(teams: Harness, text: str, *, user: str = ADMIN) -> str:
    """Everything the bot said back, as plain text (message texts and the cards' text blocks)."""
    before = len(teams.connector.activities)
    await teams.post(teams.activity(text, user=user))
    await teams.bot.tasks.drain()
    said = []
    for activity in teams.connector.activities[before:]:
        said.append(str(activity.get("text") or ""))
        for attachment in activity.get("attachments") or []:
            said += [str(b.get("text", "")) for b in json.loads(card_text(attachment["content"]))]
    return " ".join(said)


async def test_training_commands_from_teams(teams: Harness, tmp_path: Path) -> None:
    assert "admins only" in await _say(teams, "admin retrain --epsilon 4", user=HR_USER)
    assert "greater than 0" in await _say(teams, "admin retrain --epsilon 0")
    assert "at most 50" in await _say(teams, "admin retrain --epochs 100000")
    assert "more than the privacy budget has left" in await _say(teams, "admin retrain --epsilon 9")
    assert "Run #1 queued" in await _say(teams, "admin retrain --epsilon 2 --epochs 1")
    assert "already waiting" in await _say(teams, "admin retrain --epsilon 2")
    assert "Run #1 queued" in await _say(teams, "admin status")
    assert "ε 0 of 8 used" in await _say(teams, "admin budget")
    assert "v0 base active" in await _say(teams, "admin models")
    assert "no model version 5" in await _say(teams, "admin rollback 5")

    # A registered version while the model server is down: refused, the base keeps serving.
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    registry = Registry(teams.engine, tmp_path / "train" / "models", base_name="base")
    registry.register(1, adapter, {"figures": {}}, base=tmp_path / "student")
    assert "could not be reached" in await _say(teams, "admin rollback 1")
    assert routing_from_db(teams.engine)().active == "base"
    outcomes = [e.outcome for e in AuditLog(teams.engine).tail(20, action="admin.")]
    assert any(o.startswith("refused: the model server could not be reached") for o in outcomes)
    assert "refused: not an admin" in outcomes
