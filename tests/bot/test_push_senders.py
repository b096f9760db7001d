"""Push's platform senders against recording fakes: Slack DMs with metadata, Teams proactive, web inbox."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy import Engine

from bot.slack.push_sender import EVENT_TYPE, SlackPushSender
from bot.store import BotStore
from bot.teams.push_sender import TeamsPushSender
from bot.web.push_sender import WebInboxSender, inbox
from core.messaging import DeliveryFailed, MessageItem, OutgoingMessage, RateLimited, RecipientGone, Sender
from tests.bot.fake_connector import FakeConnector
from tests.bot.fake_slack import FakeSlack


def message(
    user: str = "U1", key: str = "digest:slack:U1:2026-11-28T08:00Z", platform: str = "slack"
) -> OutgoingMessage:
    items = (
        MessageItem("hb:vpn.md", "VPN <setup>", "https://wiki.example/vpn", "because you asked about VPN"),
    )
    return OutgoingMessage(platform, user, key, "digest", "Your knowledge digest", items, footer="digest off")


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as fake:
        yield fake


@pytest.fixture
async def slack_sender(slack: FakeSlack) -> AsyncIterator[SlackPushSender]:
    sender = SlackPushSender(AsyncWebClient(token="xoxb-test", base_url=slack.api_url))
    yield sender
    await sender.aclose()


async def test_slack_dm_carries_the_key_in_metadata_and_find_sees_it(
    slack: FakeSlack, slack_sender: SlackPushSender
) -> None:
    assert isinstance(slack_sender, Sender)
    assert await slack_sender.find("U1", message().key) is None
    receipt = await slack_sender.send(message())
    assert (receipt.channel, receipt.found) == ("DU1", False)
    post = slack.calls_to("chat.postMessage")[0]
    assert post["metadata"] == {
        "event_type": EVENT_TYPE,
        "event_payload": {"key": message().key, "kind": "digest"},
    }
    assert "&lt;setup&gt;" in str(post["blocks"])  # titles are escaped for mrkdwn
    found = await slack_sender.find("U1", message().key)
    assert found is not None and found.found and found.message_id == receipt.message_id
    assert await slack_sender.find("U1", "digest:slack:U1:other") is None
    assert len(slack.calls_to("conversations.open")) == 1  # the DM channel is remembered


async def test_slack_user_who_left_is_gone(slack: FakeSlack, slack_sender: SlackPushSender) -> None:
    slack.gone_users.add("ULEFT")
    with pytest.raises(RecipientGone, match="user_not_found"):
        await slack_sender.send(message("ULEFT"))
    slack.canned["chat.postMessage"] = {"ok": False, "error": "account_inactive"}
    with pytest.raises(RecipientGone, match="account_inactive"):
        await slack_sender.send(message("U2"))


async def test_slack_rate_limits_and_outages_say_whether_to_retry(
    slack: FakeSlack, slack_sender: SlackPushSender
) -> None:
    slack.rate_limit("chat.postMessage", retry_after=7)
    with pytest.raises(RateLimited) as limited:
        await slack_sender.send(message())
    assert limited.value.retry_after == 7
    slack.canned["chat.postMessage"] = {"ok": False, "error": "internal_error"}
    with pytest.raises(DeliveryFailed) as down:
        await slack_sender.send(message())
    assert down.value.retryable
    slack.canned["chat.postMessage"] = {"ok": False, "error": "missing_scope"}
    with pytest.raises(DeliveryFailed) as scope:
        await slack_sender.send(message())
    assert not scope.value.retryable


async def test_slack_unreachable_is_retryable() -> None:
    sender = SlackPushSender(AsyncWebClient(token="xoxb-test", base_url="http://127.0.0.1:9/api/", timeout=2))
    with pytest.raises(DeliveryFailed) as failure:
        await sender.send(message())
    assert failure.value.retryable
    await sender.aclose()


async def test_teams_proactive_message_uses_the_stored_personal_reference(bot_engine: Engine) -> None:
    async with FakeConnector() as connector:
        store = BotStore(bot_engine)
        for conversation, kind in (("a:group", "groupChat"), ("a:personal", "personal")):
            store.save_reference(
                "teams", conversation, user_id="aad-1", service_url=connector.url,
                reference={"conversation": {"id": conversation, "conversationType": kind}},
            )  # fmt: skip
        sender = TeamsPushSender(bot_engine)
        receipt = await sender.send(message("aad-1", "notice:teams:aad-1:x", "teams"))
        await sender.aclose()
    activity = connector.sent()[0]
    assert receipt.channel == "a:personal" and receipt.message_id == "reply-1"
    assert activity["channelData"]["kbPushKey"] == "notice:teams:aad-1:x"
    assert connector.cards()[0]["body"][0]["text"] == "Your knowledge digest"


async def test_teams_without_a_reference_or_with_the_bot_removed_is_gone(bot_engine: Engine) -> None:
    sender = TeamsPushSender(bot_engine)
    with pytest.raises(RecipientGone, match="no Teams conversation"):
        await sender.send(message("aad-2", platform="teams"))
    BotStore(bot_engine).save_reference(
        "teams", "a:gone", user_id="aad-2", service_url="http://127.0.0.1:9/", reference={}
    )
    with pytest.raises(DeliveryFailed) as unreachable:
        await sender.send(message("aad-2", platform="teams"))
    assert unreachable.value.retryable
    await sender.aclose()


async def test_web_inbox_is_exactly_once_by_key(bot_engine: Engine) -> None:
    sender = WebInboxSender(bot_engine)
    first = await sender.send(message("web", "k1", "web"))
    again = await sender.send(message("web", "k1", "web"))
    assert first.message_id == again.message_id and again.found
    assert (await sender.find("web", "k1")) is not None and await sender.find("web", "k2") is None
    assert [m["key"] for m in inbox(bot_engine)] == ["k1"]


def test_dismiss_links_render_as_not_for_me_in_slack_and_teams() -> None:
    from bot.slack.push_sender import blocks
    from bot.teams.push_sender import card

    dismiss = "https://kb.example/push/dismiss?k=1"
    item = MessageItem("hb:vpn.md", "VPN", "https://kb.example/push/open?k=1", "new", dismiss_url=dismiss)
    sent = OutgoingMessage("slack", "U1", "k", "digest", "Your knowledge digest", (item,))
    (section,) = [b for b in blocks(sent) if b["type"] == "section"]
    assert "<https://kb.example/push/dismiss?k=1|not for me>" in section["text"]["text"]
    texts = [b.get("text", "") for b in card(sent)["body"]]
    assert any("[not for me](https://kb.example/push/dismiss?k=1)" in t for t in texts)
    plain = MessageItem("hb:vpn.md", "VPN", "https://wiki.example/vpn", "new")
    (section,) = [b for b in blocks(replace(sent, items=(plain,))) if b["type"] == "section"]
    assert "not for me" not in section["text"]["text"]
