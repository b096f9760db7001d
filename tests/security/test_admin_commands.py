"""Every admin command, from someone who is not an admin, on Slack and Teams: refused and audited."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from bot.conversation import Conversation
from bot.store import BotStore
from bot.types import Incoming
from privacy.audit import AuditLog
from tests.bot.conftest import RecordingAnswers

ADMIN_COMMANDS = [
    "admin ingest docs/hr",
    "admin sync handbook",
    "admin retrain --epochs 1",
    "admin status",
    "admin budget",
    "admin models",
    "admin rollback",
]


@pytest.mark.parametrize("platform", ["slack", "teams"])
@pytest.mark.parametrize("text", ADMIN_COMMANDS)
async def test_non_admins_are_refused_and_audited(migrated: Engine, platform: str, text: str) -> None:
    conversation = Conversation(
        RecordingAnswers(), BotStore(migrated), AuditLog(migrated), admins={f"{platform}:UADMIN"}
    )
    reply = await conversation.handle(Incoming(platform, "UEVE", text, channel="C1", private=True))
    assert not reply.ok
    assert "admins only" in reply.text
    (entry,) = AuditLog(migrated).tail(1)
    assert entry.actor == f"{platform}:UEVE"
    assert entry.action == f"admin.{text.split()[1]}"
    assert entry.outcome == "refused: not an admin"
    # An admin of the other platform with the same user id is not an admin here.
    other = "teams" if platform == "slack" else "slack"
    conversation = Conversation(
        RecordingAnswers(), BotStore(migrated), AuditLog(migrated), admins={f"{other}:UEVE"}
    )
    assert "admins only" in (await conversation.handle(Incoming(platform, "UEVE", text))).text
