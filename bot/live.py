"""Replies that follow something for a while: a sent message edited in place as its LiveText changes.

`admin status` while a training run is queued or running is the one such reply today. Slack edits
its message (chat.update) and Teams its card (the connector's update activity); the web chat and
slash commands, which cannot edit what they sent, show the reply once.

    live = LiveReplies(interval_s=5.0, max_s=1800.0)       # KB_BOT_STATUS_INTERVAL_S / _MAX_S
    live.follow("slack:C0GENERAL", reply.live, show)       # show(text) edits the sent message

Each follower waits `interval_s` after its last edit (counted from the platform's answer, so a slow
request never brings two edits closer: Slack allows about one per second per message), polls, and
edits only when the text changed. It stops when the text says it has ended (the final state is
shown), after `max_s` (with a note to ask again), when the message is gone (MessageGone: deleted,
quietly), after a few failures in a row, or on shutdown (`stop`). One follower per conversation:
a newer one replaces the older, whose message gets a note that it is no longer updated.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable

from bot.errors import MessageGone
from bot.types import LiveText

log = logging.getLogger(__name__)

Show = Callable[[str], Awaitable[None]]
SUPERSEDED = "_(No longer updated: a newer `admin status` follows this.)_"
CAPPED = "_(No longer updated after {minutes:g} minutes: ask `admin status` again.)_"
MAX_FAILURES = 3  # polls or edits failing in a row before a follower gives up


class LiveReplies:
    def __init__(self, *, interval_s: float, max_s: float) -> None:
        self.interval_s, self.max_s = interval_s, max_s
        self._live: dict[str, tuple[asyncio.Task[None], asyncio.Event]] = {}

    def follow(self, where: str, live: LiveText, show: Show) -> asyncio.Task[None]:
        """Edit the message `show` writes to as `live` changes; `where`'s older follower stops."""
        older = self._live.pop(where, None)
        if older is not None:
            older[1].set()
        superseded = asyncio.Event()
        task = asyncio.get_running_loop().create_task(
            self._follow(live, show, superseded), name=f"live-{where}"
        )
        self._live[where] = (task, superseded)
        task.add_done_callback(functools.partial(self._done, where))
        return task

    def following(self, where: str) -> asyncio.Task[None] | None:
        held = self._live.get(where)
        return held[0] if held is not None else None

    def __len__(self) -> int:
        return len(self._live)

    async def stop(self) -> None:
        """Shutdown: every follower stops where it is (its message keeps its last state)."""
        tasks = [task for task, _ in self._live.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _done(self, where: str, task: asyncio.Task[None]) -> None:
        held = self._live.get(where)
        if held is not None and held[0] is task:
            del self._live[where]

    async def _follow(self, live: LiveText, show: Show, superseded: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        deadline, shown, failures = loop.time() + self.max_s, live.text, 0
        while failures < MAX_FAILURES:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(superseded.wait(), self.interval_s)
            try:
                if superseded.is_set():
                    await show(f"{shown}\n\n{SUPERSEDED}")
                    return
                text, ended = await live.poll()
                if not ended and loop.time() >= deadline:
                    await show(f"{text}\n\n{CAPPED.format(minutes=round(self.max_s / 60, 1))}")
                    return
                if text != shown:
                    await show(text)
                    shown = text
                if ended:
                    return
                failures = 0
            except MessageGone as exc:
                log.info("stopped following a message that is gone: %s", exc)
                return
            except Exception:
                failures += 1
                log.warning("a live reply could not be updated (%d in a row)", failures, exc_info=True)
        log.warning("gave up following a live reply after %d failures in a row", failures)
