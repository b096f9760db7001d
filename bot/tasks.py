"""Work that runs after a chat platform has been acked: tracked, so shutdown and tests can wait for it.

A bare `asyncio.ensure_future` can be garbage-collected mid-flight and its errors vanish; this keeps a
reference to every task, logs failures, and lets `kb serve` drain in-flight answers on shutdown.

AckFirst lets acks go before retrieval: Slack redelivers (and eventually disables the app) when an
ack takes over 3 seconds, while an answer a few hundred milliseconds later is not noticed. In a burst
of events the server's one event loop (and GIL) is the bottleneck, so retrievals (AckFirstSlots: the
CPU-heavy part of an answer) wait to start until no request is being acked, or at most
`max_wait_s` (KB_BOT_ACK_FIRST_WAIT_S), and then start in the order they arrived. The bot's own
light steps ("searching…", recording the question, the final update) do not wait.

The same goes for the operating system's scheduler: `worker_executor` is the event loop's default
executor in `kb serve`, whose threads (retrieval: embedding, FAISS, BM25; the output guard) run
KB_BOT_WORKER_NICE steps nicer than the event loop, so when both want a CPU the loop gets it. Linux
keeps a niceness per thread (threads a worker starts inherit it); torch runs on one intra-op thread
and FAISS on KB_FAISS_THREADS OpenMP threads (1, set in each worker), so their work runs in the
calling worker thread and is nice too. At 50 events in flight on 2 cores, without this the acks and
the bot's steps queue behind other events' embedding.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import threading
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

from knowledge.index import set_threads

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


class AckFirstSlots(asyncio.Semaphore):
    """At most `value` holders at once, each let in only after `gate.turn()` (acks in flight first).

    Passed to KnowledgeBase as its retrieval slots, so an answer's retrieval, not the whole answer,
    gives way to the acks.
    """

    def __init__(self, value: int, *, gate: AckFirst) -> None:
        super().__init__(value)
        self.gate = gate

    async def acquire(self) -> Literal[True]:
        await self.gate.turn()
        return await super().acquire()


def lower_priority(nice: int) -> None:
    """Make the calling thread `nice` steps nicer (an executor's initializer; Linux only, see top)."""
    if nice <= 0 or not sys.platform.startswith("linux"):
        return  # elsewhere PRIO_PROCESS with a thread id would renice the whole process, or fail
    thread = threading.get_native_id()
    os.setpriority(os.PRIO_PROCESS, thread, min(19, os.getpriority(os.PRIO_PROCESS, thread) + nice))


def worker_executor(*, nice: int, faiss_threads: int, max_workers: int | None = None) -> ThreadPoolExecutor:
    """Worker threads `nice` steps nicer than the thread that made them, FAISS on `faiss_threads` in each.

    OpenMP keeps its thread count per thread: the KnowledgeBase sets KB_FAISS_THREADS in the thread
    that builds it, and a worker thread would otherwise search with one OpenMP thread per core,
    which spin while they wait. On the handbook's index that was 20-24 ms of CPU per search
    instead of 5.5 ms, with 2 cores and the event loop sharing them.
    """

    def start() -> None:
        lower_priority(nice)
        set_threads(faiss_threads)

    return ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="kb-work", initializer=start)
