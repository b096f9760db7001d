"""Slack end to end on loopback: signed requests to `kb serve`'s app, answers seen by a fake Web API."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import Engine, select
from sqlmodel import Session

from app.server.assembly import create_app
from bot.slack.app import SLACK_BOT_KEY, SlackBot
from bot.slack.sender import SEARCHING
from core import db
from core.llm import LLM
from core.models import BehaviourEventRow
from core.settings import Settings
from knowledge.embeddings import Embedder
from knowledge.service import KnowledgeBase
from privacy.audit import AuditLog
from tests.bot.fake_slack import TEAM, FakeSlack

TOKEN = "xoxb-very-secret-value"  # the conftest checks that no secret value reaches a log
SECRET = "hunter2"
PAGES = {
    "vpn.md": "# VPN\n\n## Installing\n\nInstall HaldenConnect from the Software Center, then sign in.\n",
    "pay.md": "---\ntitle: Pay\nacl_groups: [hr]\n---\n# Pay\n\nBand H5 pays 61,000 to 78,000 EUR.\n",
}


@dataclass
class Harness:
    client: TestClient[web.Request, web.Application]
    bot: SlackBot
    slack: FakeSlack
    engine: Engine

    async def post(self, path: str, body: str, *, content_type: str, **headers: str) -> ClientResponse:
        headers = {**sign(body), "Content-Type": content_type, **headers}
        response = await self.client.post(path, data=body, headers=headers)
        await self.bot.tasks.drain()
        return response

    async def event(self, event: dict[str, Any], *, event_id: str = "Ev01", **headers: str) -> ClientResponse:
        body = json.dumps({
            "token": "legacy", "team_id": TEAM, "api_app_id": "A0KB", "type": "event_callback",
            "event": event, "event_id": event_id, "event_time": int(time.time()),
        })  # fmt: skip
        return await self.post("/slack/events", body, content_type="application/json", **headers)

    async def command(self, text: str, *, user: str = "U0ALICE", team: str = TEAM) -> ClientResponse:
        form = {
            "token": "legacy", "team_id": team, "team_domain": "halden", "channel_id": "C0GENERAL",
            "channel_name": "general", "user_id": user, "user_name": "alice", "command": "/kb", "text": text,
            "api_app_id": "A0KB", "response_url": self.slack.response_url("command"), "trigger_id": "1.2.3",
        }  # fmt: skip
        return await self.post(
            "/slack/commands", urlencode(form), content_type="application/x-www-form-urlencoded"
        )

    async def click(self, action: dict[str, Any], *, user: str = "U0ALICE") -> ClientResponse:
        payload = {
            "type": "block_actions", "user": {"id": user}, "api_app_id": "A0KB", "team": {"id": TEAM},
            "container": {"type": "message", "channel_id": "C0GENERAL", "message_ts": "1700000000.000002"},
            "channel": {"id": "C0GENERAL"}, "message": {"ts": "1700000000.000002"}, "trigger_id": "1.2.3",
            "response_url": self.slack.response_url("action"), "actions": [{"block_id": "b", "type": "button",
            "action_ts": "1700000001.0", **action}],
        }  # fmt: skip
        body = urlencode({"payload": json.dumps(payload)})
        return await self.post("/slack/interactions", body, content_type="application/x-www-form-urlencoded")

    def events(self, kind: str) -> list[BehaviourEventRow]:
        with Session(self.engine) as session:
            query = select(BehaviourEventRow).where(BehaviourEventRow.kind == kind)  # type: ignore[arg-type]
            return list(session.execute(query).scalars().all())


def sign(body: str, *, at: float | None = None, secret: str = SECRET) -> dict[str, str]:
    """Slack's v0 request signature: HMAC-SHA256 of "v0:<timestamp>:<body>" with the signing secret."""
    stamp = str(int(at if at is not None else time.time()))
    digest = hmac.new(secret.encode(), f"v0:{stamp}:{body}".encode(), hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": f"v0={digest}"}


def mention(
    text: str, *, ts: str = "1700000000.000100", channel: str = "C0GENERAL", user: str = "U0HR"
) -> dict[str, Any]:
    return {"type": "app_mention", "user": user, "text": f"<@UBOT> {text}", "ts": ts, "channel": channel,
            "event_ts": ts}  # fmt: skip


def dm(text: str, *, user: str = "U0HR", **extra: Any) -> dict[str, Any]:
    return {"type": "message", "channel_type": "im", "channel": "D0HR", "user": user, "text": text,
            "ts": "1700000000.000200", "event_ts": "1700000000.000200", **extra}  # fmt: skip


def cited_titles(update: dict[str, Any]) -> list[str]:
    return [
        b["text"]["text"] for b in update["blocks"] if b["type"] == "section" and "*[" in b["text"]["text"]
    ]


@contextlib.asynccontextmanager
async def slack_harness(
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    embedder: Embedder,
    *,
    llm: LLM | None = None,
    pages: Mapping[str, str] = PAGES,
    **overrides: Any,
) -> AsyncIterator[Harness]:
    """`kb serve`'s app with Slack on, over `pages`, talking to a FakeSlack; `llm` makes answers stream."""
    async with FakeSlack() as slack:
        settings = make_settings(**{
            "slack_bot_token": TOKEN, "slack_signing_secret": SECRET, "slack_api_url": slack.api_url,
            "bot_admins": ["slack:U0ADMIN"], "bot_user_groups": {"slack:U0HR": ["hr"]},
            "docs_base_url": "https://wiki.example/", **overrides,
        })  # fmt: skip
        engine = db.make_engine(settings)
        db.upgrade(engine)
        docs = tmp_path / "docs"
        docs.mkdir(exist_ok=True)
        for name, text in pages.items():
            (docs / name).write_text(text)
        kb = KnowledgeBase(settings, engine, embedder=embedder)
        kb.ingest([docs])
        kb.llm = llm
        app = create_app(settings, kb)  # exactly as `kb serve` builds it
        bot = app[SLACK_BOT_KEY]
        async with TestClient(TestServer(app)) as client:
            yield Harness(client, bot, slack, engine)
        engine.dispose()


async def test_url_verification_echoes_the_challenge(harness: Harness) -> None:
    body = json.dumps({"token": "legacy", "challenge": "3eZbrw1aB", "type": "url_verification"})
    response = await harness.post("/slack/events", body, content_type="application/json")
    assert response.status == 200
    assert (await response.json()) == {"challenge": "3eZbrw1aB"}


async def test_mention_gets_searching_then_an_answer_with_sources_in_its_thread(harness: Harness) -> None:
    response = await harness.event(mention("How do I install the VPN client?"))
    assert response.status == 200
    [searching] = harness.slack.calls_to("chat.postMessage")
    assert (searching["text"], searching["thread_ts"], searching["channel"]) == (
        SEARCHING, "1700000000.000100", "C0GENERAL"
    )  # fmt: skip
    [update] = harness.slack.calls_to("chat.update")
    assert update["ts"] == "1700000000.000001", "the searching message is the one replaced"
    assert "[1]" in update["blocks"][0]["text"]["text"]
    [first, *_] = [b for b in update["blocks"] if b.get("accessory", {}).get("action_id") == "kb_source_1"]
    assert (
        first["accessory"]["url"].startswith("https://wiki.example/")
        and "vpn.md" in first["accessory"]["url"]
    )
    actions = [e["action_id"] for b in update["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert actions[:2] == ["kb_feedback_up", "kb_feedback_down"]
    [question] = harness.events("question")
    assert (question.user_id, question.channel, question.thread) == ("U0HR", "C0GENERAL", "1700000000.000100")
    assert "Authorization" in harness.slack.calls[-1].headers


async def test_dm_is_answered_with_the_askers_groups(harness: Harness) -> None:
    await harness.event(mention("How much does band H5 pay?"), event_id="EvPublic")
    await harness.event(dm("How much does band H5 pay?"), event_id="EvDirect")
    public, direct = harness.slack.calls_to("chat.update")
    assert not any("Pay" in line for line in cited_titles(public)), (
        "public channels cite public documents only"
    )
    assert "Pay" in cited_titles(direct)[0]
    assert "thread_ts" not in harness.slack.calls_to("chat.postMessage")[1], "a DM answers in place"


async def test_bots_and_the_bot_itself_are_ignored(harness: Harness) -> None:
    await harness.event(dm("hello", bot_id="B0OTHER"), event_id="EvBot")
    await harness.event(dm("hello", user="UBOT"), event_id="EvSelf")
    await harness.event(dm("edited", subtype="message_changed"), event_id="EvEdit")
    assert [c.method for c in harness.slack.calls if c.method.startswith("chat.")] == []


async def test_a_redelivered_event_is_answered_once(harness: Harness) -> None:
    first = await harness.event(mention("How do I install the VPN client?"), event_id="EvTwice")
    again = await harness.event(
        mention("How do I install the VPN client?"), event_id="EvTwice",
        **{"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"},
    )  # fmt: skip
    assert (first.status, again.status) == (200, 200)
    assert len(harness.slack.calls_to("chat.update")) == 1
    assert len(harness.events("question")) == 1


async def test_forged_signature_is_rejected(harness: Harness) -> None:
    body = json.dumps({"type": "event_callback", "event_id": "EvForged", "event": mention("hi")})
    headers = {**sign(body, secret="not-the-secret"), "Content-Type": "application/json"}
    response = await harness.client.post("/slack/events", data=body, headers=headers)
    assert response.status == 401
    started = {"users.conversations"}  # the directory's warm-up at start, before any request
    assert [call for call in harness.slack.calls if call.method not in started] == []


async def test_stale_timestamp_is_rejected(harness: Harness) -> None:
    body = json.dumps({"type": "event_callback", "event_id": "EvOld", "event": mention("hi")})
    headers = {**sign(body, at=time.time() - 6 * 60), "Content-Type": "application/json"}
    response = await harness.client.post("/slack/events", data=body, headers=headers)
    assert response.status == 401
    assert harness.events("question") == []


async def test_rate_limited_calls_are_retried(harness: Harness) -> None:
    harness.slack.rate_limit("chat.postMessage", retry_after=0)
    await harness.event(mention("How do I install the VPN client?"))
    assert len(harness.slack.calls_to("chat.postMessage")) == 2, "one 429, then the retry"
    assert len(harness.slack.calls_to("chat.update")) == 1


async def test_slash_command_answers_the_asker_privately(harness: Harness) -> None:
    response = await harness.command("How much does band H5 pay?", user="U0HR")
    assert response.status == 200
    assert (await response.text()) == SEARCHING
    [reply] = harness.slack.calls_to("response_url")
    assert reply["response_type"] == "ephemeral"
    assert any("Pay" in line for line in cited_titles(reply)), "an ephemeral reply may use the asker's groups"


async def test_feedback_and_source_clicks_are_recorded(harness: Harness) -> None:
    await harness.event(mention("How do I install the VPN client?"))
    [question] = harness.events("question")
    response = await harness.click({"action_id": "kb_feedback_up", "value": str(question.id)})
    assert response.status == 200
    await harness.click(
        {"action_id": "kb_source_1", "value": f"{question.id}:1", "url": "https://wiki.example/x"}
    )
    [feedback], [click] = harness.events("feedback"), harness.events("source_click")
    assert (feedback.question_id, feedback.data, feedback.user_id) == (question.id, {"value": 1}, "U0ALICE")
    assert (click.question_id, click.data) == (question.id, {"number": 1, "uri": "https://wiki.example/x"})
    assert harness.slack.calls_to("response_url")[0]["text"] == "Thanks for the feedback!"


async def test_show_more_sources_lists_every_source(harness: Harness) -> None:
    await harness.event(mention("How do I install the VPN client?"))
    [question] = harness.events("question")
    await harness.click({"action_id": "kb_more_sources", "value": str(question.id)})
    [reply] = harness.slack.calls_to("response_url")
    assert len(cited_titles(reply)) == len(question.data["citations"])


async def test_admin_command_from_a_non_admin_is_refused_and_audited(harness: Harness) -> None:
    await harness.command("admin retrain --epochs 1", user="U0ALICE")
    [reply] = harness.slack.calls_to("response_url")
    assert "admins only" in reply["text"]
    [entry] = AuditLog(harness.engine).tail(1, action="admin.")
    assert (entry.actor, entry.action, entry.outcome) == (
        "slack:U0ALICE",
        "admin.retrain",
        "refused: not an admin",
    )
    await harness.command("admin retrain", user="U0ADMIN")
    # The training desk is wired in; without a student model it refuses, saying what to set.
    assert "set KB_TRAIN_STUDENT" in harness.slack.calls_to("response_url")[1]["text"]


async def test_app_home_shows_subscriptions_and_recent_questions(harness: Harness) -> None:
    await harness.command("subscribe vpn", user="U0HR")
    await harness.event(dm("How do I install the VPN client?"), event_id="EvAsk")
    await harness.event(
        {"type": "app_home_opened", "user": "U0HR", "channel": "D0HR", "tab": "home"}, event_id="EvHome"
    )
    [publish] = harness.slack.calls_to("views.publish")
    text = json.dumps(publish["view"])
    assert publish["user_id"] == "U0HR" and "*vpn*" in text and "install the VPN client" in text


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        ("{not json", "application/json", 400),
        (json.dumps({"type": "event_callback", "event": {"text": "x" * 1_000_000}}), "application/json", 413),
        (json.dumps({"type": "event_callback", "event_id": "EvOdd", "event": {"type": "reaction_added"}}),
         "application/json", 200),
        (json.dumps({"type": "event_callback", "event_id": "EvEmpty", "event": {"type": "app_mention"}}),
         "application/json", 200),
    ],
)  # fmt: skip
async def test_bad_input_gets_a_clear_answer_and_nothing_breaks(
    harness: Harness, body: str, content_type: str, status: int
) -> None:
    response = await harness.post("/slack/events", body, content_type=content_type)
    assert response.status == status
    assert (await harness.command("help")).status == 200, "the server still answers"


async def test_a_command_from_another_workspace_is_declined_politely(harness: Harness) -> None:
    response = await harness.command("How do I install the VPN client?", team="T0OTHER")
    assert response.status == 200
    assert "not installed in your workspace" in (await response.json())["text"]
    assert harness.slack.calls_to("response_url") == []


@pytest.mark.parametrize(
    ("text", "user", "says"),
    [
        ("digest hourly", "U0ALICE", "`digest` takes daily, weekly, off or now"),
        ("admin retrain --epsilon -1", "U0ADMIN", "--epsilon must be greater than 0"),
        ("admin retrain --epsilon -1", "U0ALICE", "admins only"),
        ("admin budget", "U0ADMIN", "Privacy budget: ε 0 of 16 used, 16 left"),
        ("admin models", "U0ADMIN", "v0 base active"),
        ("admin rollback", "U0ADMIN", "Say which version"),
        ("subscribe", "U0ALICE", "needs a topic"),
    ],
)
async def test_commands_with_bad_arguments_get_a_polite_explanation(
    harness: Harness, text: str, user: str, says: str
) -> None:
    assert (await harness.command(text, user=user)).status == 200
    [reply] = harness.slack.calls_to("response_url")
    assert says in reply["text"]
    if text.startswith("admin"):
        [entry] = AuditLog(harness.engine).tail(1, action="admin.")
        assert entry.actor == f"slack:{user}" and entry.outcome, "every admin command is audited"


@pytest.mark.parametrize(
    "body",
    [
        {"type": "event_callback", "event_id": "EvNoEvent"},
        {
            "type": "event_callback",
            "event_id": "EvNoText",
            "event": {"type": "message", "channel_type": "im"},
        },
        {"type": "event_callback", "event": {"type": "app_mention", "user": "U1", "text": "hi"}},
        {"type": "something_new", "event_id": "EvNew"},
        {"event_id": "EvNoType", "event": "not an object"},
    ],
)
async def test_events_with_missing_or_odd_fields_are_acked_and_ignored(
    harness: Harness, body: dict[str, Any]
) -> None:
    response = await harness.post("/slack/events", json.dumps(body), content_type="application/json")
    assert response.status < 500
    assert [c.method for c in harness.slack.calls if c.method.startswith("chat.")] == []
    assert (await harness.command("help")).status == 200, "the server still answers"


async def test_a_slash_command_without_a_user_is_declined(harness: Harness) -> None:
    body = urlencode({"team_id": TEAM, "command": "/kb", "text": "help", "channel_id": "C1"})
    response = await harness.post("/slack/commands", body, content_type="application/x-www-form-urlencoded")
    assert response.status == 200 and "could not tell who asked" in await response.text()
