"""Slack never runs unsigned: a blank signing secret stops `kb serve`, an unsigned event gets 401.

The probe: with `KB_SLACK_SIGNING_SECRET=""` (what compose passed for an unset variable) the Slack
routes were mounted with verification off, and an unsigned event ran `admin status` as an admin.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from app.server.assembly import create_app
from core import db
from core.errors import ConfigError
from core.settings import Settings
from knowledge.embeddings import Embedder
from knowledge.service import KnowledgeBase
from tests.bot.fake_slack import TEAM, FakeSlack

TOKEN = "xoxb-very-secret-value"


def _event(text: str) -> str:
    return json.dumps({
        "token": "legacy", "team_id": TEAM, "api_app_id": "A0KB", "type": "event_callback",
        "event": {"type": "message", "channel_type": "im", "channel": "D0AD", "user": "U0ADMIN",
                  "text": text, "ts": "1700000000.000200", "event_ts": "1700000000.000200"},
        "event_id": "EvUnsigned", "event_time": int(time.time()),
    })  # fmt: skip


@pytest.mark.parametrize("secret", ["", "   ", "\t\n"])
async def test_a_blank_signing_secret_is_a_configuration_error(
    make_settings: Callable[..., Settings], embedder: Embedder, secret: str
) -> None:
    async with FakeSlack() as slack:
        settings = make_settings(
            slack_bot_token=TOKEN, slack_signing_secret=secret, slack_api_url=slack.api_url,
            bot_admins=["slack:U0ADMIN"],
        )  # fmt: skip
        engine = db.make_engine(settings)
        db.upgrade(engine)
        kb = KnowledgeBase(settings, engine, embedder=embedder)
        with pytest.raises(ConfigError, match="KB_SLACK_SIGNING_SECRET"):
            create_app(settings, kb)
        engine.dispose()


async def test_unsigned_and_badly_signed_events_are_refused(
    make_settings: Callable[..., Settings], embedder: Embedder, tmp_path: Path
) -> None:
    async with FakeSlack() as slack:
        settings = make_settings(
            slack_bot_token=TOKEN, slack_signing_secret="s3cret-of-the-app", slack_api_url=slack.api_url,
            bot_admins=["slack:U0ADMIN"],
        )  # fmt: skip
        engine = db.make_engine(settings)
        db.upgrade(engine)
        app = create_app(settings, KnowledgeBase(settings, engine, embedder=embedder))
        async with TestClient(TestServer(app)) as client:
            body = _event("admin status")
            json_type = {"Content-Type": "application/json"}
            unsigned = await client.post("/slack/events", data=body, headers=json_type)
            forged_headers = {
                "X-Slack-Request-Timestamp": str(int(time.time())),
                "X-Slack-Signature": "v0=" + "0" * 64,
            }
            forged = await client.post("/slack/events", data=body, headers={**json_type, **forged_headers})
            assert (unsigned.status, forged.status) == (401, 401)
        assert slack.calls_to("chat.postMessage") == []
        engine.dispose()


def test_socket_mode_needs_no_signing_secret(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(slack_bot_token=TOKEN, slack_signing_secret=" ", slack_app_token="xapp-1-A0KB")
    assert settings.slack.signing_secret is None and settings.slack.app_token is not None
