"""Work that runs after a chat platform has been acked: tracked, so shutdown and tests can wait for it.

A bare `asyncio.ensure_future` can be garbage-collected mid-flight and its errors vanish; this keeps a
reference to every task, logs failures, and lets `kb serve` drain in-flight answers on shutdown.

AckFirst lets acks go before answers: Slack redelivers (and eventually disables the app) when an
ack takes over 3 seconds, while an answer a few hundred milliseconds later is not noticed. In a burst
of events the server's one event loop (and GIL) is the bottleneck, so answers wait to start until no
request is being acked, or at most `max_wait_s`, and then start in the order they arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine, Iterator
from typing import Any

log = logging.getLogger(__name__)


class BackgroundTasks:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, work: Coroutine[Any, Any, None], *, name: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())

    def __len__(self) -> int:
        return len(self._tasks)

    async def drain(self, *, seconds: float = 30.0) -> None:
        """Wait for every task, including ones spawned while waiting; cancel what is left after `seconds`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while self._tasks:
            left = deadline - loop.time()
            if left <= 0:
                for task in list(self._tasks):
                    task.cancel()
                await asyncio.gather(*self._tasks, return_exceptions=True)
                return
            await asyncio.wait(set(self._tasks), timeout=left)


class AckFirst:
    """Counts requests being acked; `turn()` waits until there are none (at most `max_wait_s`)."""

    def __init__(self, *, max_wait_s: float = 0.2) -> None:
        self.max_wait_s = max_wait_s
        self._acking = 0
        self._quiet: asyncio.Event | None = None  # created in the loop, on first use

    @contextlib.contextmanager
    def acking(self) -> Iterator[None]:
        """Around the handling of one request that Slack waits for."""
        self._acking += 1
        self._event().clear()
        try:
            yield
        finally:
            self._acking -= 1
            if not self._acking:
                self._event().set()

    async def turn(self) -> None:
        """Return once no request is being acked, or after `max_wait_s` however busy it stays."""
        if not self._acking:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event().wait(), timeout=self.max_wait_s)

    def _event(self) -> asyncio.Event:
        if self._quiet is None:
            self._quiet = asyncio.Event()
            self._quiet.set()
        return self._quiet
