"""Slack user groups and channel membership in access control, against the fake Web API."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from bot.slack.directory import SlackDirectory
from core.settings import Settings
from knowledge.embeddings import Embedder
from tests.bot.fake_slack import BOT_USER, FakeSlack
from tests.bot.test_slack import cited_titles, dm, mention, slack_harness

GROUPS = {
    "ok": True,
    "usergroups": [
        {"id": "S01", "handle": "HR", "users": ["U0ANNA", "U0BEN"]},
        {"id": "S02", "handle": "it", "users": ["U0BEN"]},
        {"id": "S03", "handle": "old", "users": ["U0ANNA"], "date_delete": 1700000000},
    ],
}


def private(channel: str) -> dict[str, Any]:
    return {"ok": True, "channel": {"id": channel, "is_channel": True, "is_private": True}}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_user_groups_are_read_once_per_ttl_and_fall_back_without_the_scope() -> None:
    clock = Clock()
    async with FakeSlack() as slack:
        directory = SlackDirectory(
            AsyncWebClient(token="xoxb-t", base_url=slack.api_url), ttl_s=60, clock=clock
        )
        slack.canned["usergroups.list"] = GROUPS
        assert await directory.groups("U0BEN") == {"hr", "it"}
        assert await directory.groups("U0ANNA") == {"hr"}, "deleted groups do not count"
        assert await directory.groups("U0NOBODY") == frozenset()
        assert len(slack.calls_to("usergroups.list")) == 1
        assert slack.calls_to("usergroups.list")[0]["include_users"] == "true"
        slack.canned["usergroups.list"] = {"ok": False, "error": "missing_scope", "needed": "usergroups:read"}
        clock.now = 61
        assert await directory.groups("U0BEN") == frozenset(), "without the scope: configured groups only"
        assert len(slack.calls_to("usergroups.list")) == 2
        assert await directory.groups("U0ANNA") == frozenset()
        assert len(slack.calls_to("usergroups.list")) == 2, "not asked again before the TTL"


async def test_a_private_channels_audience_is_its_members_without_the_bot() -> None:
    async with FakeSlack() as slack:
        directory = SlackDirectory(AsyncWebClient(token="xoxb-t", base_url=slack.api_url))
        slack.canned["conversations.info"] = private("C0SECRET")
        slack.canned["conversations.members"] = [
            {"ok": True, "members": ["U0ANNA", BOT_USER], "response_metadata": {"next_cursor": "p2"}},
            {"ok": True, "members": ["U0BEN"], "response_metadata": {"next_cursor": ""}},
        ]
        assert await directory.audience("C0SECRET") == ("U0ANNA", "U0BEN")
        assert [c.get("cursor") for c in slack.calls_to("conversations.members")] == [None, "p2"]
        await directory.audience("C0SECRET")
        assert len(slack.calls_to("conversations.info")) == 1, "cached"
        slack.canned["conversations.info"] = {"ok": True, "channel": {"id": "C0PUB", "is_channel": True}}
        assert await directory.audience("C0PUB") is None, "a public channel: everyone"
        slack.canned["conversations.info"] = {"ok": False, "error": "missing_scope"}
        assert await directory.audience("C0UNKNOWN") is None, "cannot tell: the public rule"


async def test_answers_in_channels_use_only_the_groups_every_member_shares(
    make_settings: Callable[..., Settings], tmp_path: Path, embedder: Embedder
) -> None:
    async with slack_harness(make_settings, tmp_path, embedder) as harness:
        slack = harness.slack
        slack.canned["usergroups.list"] = GROUPS
        slack.canned["conversations.info"] = private("C0HR")
        slack.canned["conversations.members"] = {"ok": True, "members": ["U0ANNA", "U0BEN", BOT_USER]}
        question = "How much does band H5 pay?"
        await harness.event(mention(question, channel="C0HR", user="U0ANNA"), event_id="EvHrRoom")
        # Only Slack knows Anna is in HR (KB_BOT_USER_GROUPS does not name her): her DM may cite Pay.
        await harness.event(dm(question, user="U0ANNA"), event_id="EvAnnaDm")
        slack.canned["conversations.members"] = {"ok": True, "members": ["U0ANNA", "U0CARL"]}
        harness.bot.conversation.directories["slack"] = SlackDirectory(harness.bot.handlers.sender.client)
        await harness.event(mention(question, channel="C0MIXED", user="U0ANNA"), event_id="EvMixed")
        room, direct, mixed = slack.calls_to("chat.update")
    assert any("Pay" in line for line in cited_titles(room)), "everyone in the room is in HR"
    assert any("Pay" in line for line in cited_titles(direct))
    assert not any("Pay" in line for line in cited_titles(mixed)), "Carl is not in HR"


async def test_a_prefetch_starts_the_lookup_that_the_answer_then_shares() -> None:
    async with FakeSlack() as slack:
        directory = SlackDirectory(AsyncWebClient(token="xoxb-t", base_url=slack.api_url))
        slack.canned["conversations.info"] = private("C0SECRET")
        slack.canned["conversations.members"] = [{"ok": True, "members": ["U0ANNA"]}]
        slack.canned["usergroups.list"] = GROUPS
        directory.prefetch(channel="C0SECRET", user="U0ANNA")  # returns at once, nothing awaited
        for _ in range(100):  # the lookups run on their own while the event is being claimed
            if slack.calls_to("conversations.members") and slack.calls_to("usergroups.list"):
                break
            await asyncio.sleep(0.01)
        assert len(slack.calls_to("conversations.info")) == 1
        assert await directory.audience("C0SECRET") == ("U0ANNA",)
        assert await directory.groups("U0ANNA") == {"hr"}
        assert len(slack.calls_to("conversations.info")) == len(slack.calls_to("usergroups.list")) == 1


async def test_an_asker_whose_answer_is_cancelled_leaves_the_shared_lookup_to_the_others() -> None:
    """An answer is cancelled when its event's claim is lost; its lookups are others' too."""
    async with FakeSlack() as slack:
        directory = SlackDirectory(AsyncWebClient(token="xoxb-t", base_url=slack.api_url), ttl_s=60)
        slack.canned["usergroups.list"] = GROUPS
        slack.canned["conversations.info"] = private("C0PRIV")
        slack.canned["conversations.members"] = {"ok": True, "members": ["U0ANNA", "U0BEN"]}
        losers = [
            asyncio.ensure_future(directory.groups("U0BEN")),
            asyncio.ensure_future(directory.audience("C0PRIV")),
        ]
        await asyncio.sleep(0)  # both are waiting for Slack now
        for loser in losers:
            loser.cancel()
        assert await directory.groups("U0BEN") == {"hr", "it"}
        assert await directory.audience("C0PRIV") == ("U0ANNA", "U0BEN")
        assert len(slack.calls_to("usergroups.list")) == 1 and len(slack.calls_to("conversations.info")) == 1


async def test_warming_learns_the_public_channels_so_their_first_question_asks_slack_nothing() -> None:
    async with FakeSlack() as slack:
        directory = SlackDirectory(AsyncWebClient(token="xoxb-t", base_url=slack.api_url), ttl_s=60)
        slack.canned["users.conversations"] = [
            {"ok": True, "channels": [{"id": "C0PUB1"}, {"id": "C0ODD", "is_private": True}],
             "response_metadata": {"next_cursor": "page2"}},
            {"ok": True, "channels": [{"id": "C0PUB2", "is_private": False}]},
        ]  # fmt: skip
        slack.canned["conversations.info"] = private("C0ODD")
        slack.canned["conversations.members"] = {"ok": True, "members": ["U0ANNA"]}
        assert await directory.warm() == 2
        assert await directory.audience("C0PUB1") is None and await directory.audience("C0PUB2") is None
        assert slack.calls_to("conversations.info") == []
        assert await directory.audience("C0ODD") == ("U0ANNA",), "a private channel is still looked up"
        assert slack.calls_to("users.conversations")[1]["cursor"] == "page2"


async def test_warming_without_the_scope_caches_nothing() -> None:
    async with FakeSlack() as slack:
        directory = SlackDirectory(AsyncWebClient(token="xoxb-t", base_url=slack.api_url), ttl_s=60)
        slack.canned["users.conversations"] = {"ok": False, "error": "missing_scope"}
        slack.canned["conversations.info"] = private("C0PRIV")
        slack.canned["conversations.members"] = {"ok": True, "members": ["U0ANNA"]}
        assert await directory.warm() == 0
        assert await directory.audience("C0PRIV") == ("U0ANNA",)
