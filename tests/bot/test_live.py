"""LiveReplies on its own: the time cap and giving up after failures (the platforms: test_live_status.py)."""

from __future__ import annotations

import asyncio

import pytest

from bot.errors import ChatPlatformError
from bot.live import CAPPED, MAX_FAILURES, LiveReplies
from bot.types import LiveText


def never_ends(text: str = "Run #1 running") -> LiveText:
    async def poll() -> tuple[str, bool]:
        return text, False

    return LiveText("Run #1 queued", poll)


async def test_a_follower_stops_at_its_cap_saying_so() -> None:
    shown: list[str] = []

    async def show(text: str) -> None:
        shown.append(text)

    live = LiveReplies(interval_s=0.01, max_s=0.0)
    await asyncio.wait_for(live.follow("slack:C1", never_ends(), show), 30)
    assert shown == [f"Run #1 running\n\n{CAPPED.format(minutes=0)}"]
    assert len(live) == 0


@pytest.mark.parametrize("broken", ["show", "poll"])
async def test_a_follower_gives_up_after_failures_in_a_row(broken: str) -> None:
    calls: list[str] = []

    async def show(text: str) -> None:
        calls.append(text)
        raise ChatPlatformError("Slack refused chat.update: internal_error")

    async def poll() -> tuple[str, bool]:
        calls.append("poll")
        if broken == "poll":
            raise OSError("database is down")
        return f"step {len(calls)}", False

    async def fine(_text: str) -> None:
        return None

    live = LiveReplies(interval_s=0.01, max_s=60.0)
    task = live.follow("teams:a", LiveText("Run #1 queued", poll), show if broken == "show" else fine)
    await asyncio.wait_for(task, 30)
    assert task.exception() is None
    assert len([c for c in calls if c != "poll"]) == (MAX_FAILURES if broken == "show" else 0)
    assert calls.count("poll") == MAX_FAILURES
