"""Group commit for the bot's event-path writes: one thread, one transaction for every write queued.

    writer = BatchWriter(engine, hold=gate.hold)
    future = writer.submit(lambda connection: connection.execute(statement, row).rowcount, urgent=True)
    future.result()   # or asyncio.wrap_future(future) on the event loop

At 50 Slack events in flight the bot makes some 300 writes a second (claims, reply messages,
questions, closed claims). Written one transaction each from a pool of threads, each write took
the GIL four or five times (checkout, execute, commit, return), every time waiting up to the
switch interval behind the busy event loop, and SQLite let one writer in at a time anyway: a claim
took ~35 ms under load, and a queue of urgent claims held the other writes back for ~400 ms. Here
each transaction takes whatever is queued (urgent writes first, at most `max_batch`) and commits
once, so the work a write waits behind shrinks as the load grows instead of piling up.

A write's future is settled only after its transaction commits. When one write of a batch fails,
the batch is rolled back and each write is run again alone, so a failure only fails its own write.
The thread starts on the first write and ends after `idle_s` without one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine

log = logging.getLogger(__name__)

T = TypeVar("T")
Job = Callable[[Connection], Any]
Outcome = Future[Any] | asyncio.Future[Any]  # a plain caller's future, or an event loop's
Hold = Callable[..., contextlib.AbstractContextManager[None]]

DEFAULT_MAX_BATCH = 100
DEFAULT_IDLE_S = 30.0


class WriteGate:
    """One writer at a time (SQLite's own rule, kept in-process); urgent writers go first.

    SQLite makes a blocked writer sleep and retry, up to 100 ms a turn; waiting here wakes the next
    writer as soon as the last one commits. The batch writer's transactions (event claims, which
    Slack's ack waits for) are let in before the bot's rarer writes.
    """

    def __init__(self) -> None:
        self._turn = threading.Condition()
        self._busy = False
        self._urgent = 0

    @contextlib.contextmanager
    def hold(self, *, urgent: bool) -> Iterator[None]:
        with self._turn:
            self._urgent += urgent
            while self._busy or (self._urgent and not urgent):
                self._turn.wait()
            self._urgent -= urgent
            self._busy = True
        try:
            yield
        finally:
            with self._turn:
                self._busy = False
                self._turn.notify_all()


class BatchWriter:
    def __init__(
        self,
        engine: Engine,
        *,
        hold: Hold | None = None,
        max_batch: int = DEFAULT_MAX_BATCH,
        idle_s: float = DEFAULT_IDLE_S,
        name: str = "kb-bot-writer",
    ) -> None:
        """`hold(urgent=True)` is taken around each transaction (SQLite's one-writer gate), if given."""
        self.engine = engine
        self.max_batch = max_batch
        self.idle_s = idle_s
        self.name = name
        self._hold = hold
        self._turn = threading.Condition()
        self._urgent: deque[tuple[Job, Outcome]] = deque()
        self._normal: deque[tuple[Job, Outcome]] = deque()
        self._thread: threading.Thread | None = None
        self._closed = False

    def submit(self, job: Callable[[Connection], T], *, urgent: bool = False) -> Future[T]:
        """Queue `job` (run with the batch's connection, inside its transaction); its result comes later."""
        future: Future[T] = Future()
        self._queue(job, future, urgent=urgent)
        return future

    def submit_async(self, job: Callable[[Connection], T], *, urgent: bool = False) -> asyncio.Future[T]:
        """`submit` for the running event loop: a batch settles all of that loop's futures in one
        callback, rather than waking the loop (a syscall, and a wait for the GIL) once per write."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue(job, future, urgent=urgent)
        return future

    def _queue(self, job: Job, future: Outcome, *, urgent: bool) -> None:
        with self._turn:
            if self._closed:
                raise RuntimeError("the bot's database writer is closed")
            (self._urgent if urgent else self._normal).append((job, future))
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name=self.name, daemon=True)
                self._thread.start()
            self._turn.notify()

    def close(self, *, timeout: float = 5.0) -> None:
        """Write what is queued, then stop; later writes raise RuntimeError."""
        with self._turn:
            self._closed = True
            thread = self._thread
            self._turn.notify()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _work(self) -> None:
        while True:
            with self._turn:
                if not self._urgent and not self._normal and not self._closed:
                    self._turn.wait(self.idle_s)
                if not self._urgent and not self._normal:
                    self._thread = None  # idle or closed: a later write starts a new thread
                    return
                batch = self._take()
            self._run(batch)

    def _take(self) -> list[tuple[Job, Outcome]]:
        batch: list[tuple[Job, Outcome]] = []
        for queue in (self._urgent, self._normal):
            while queue and len(batch) < self.max_batch:
                batch.append(queue.popleft())
        # A plain caller that gave up is not written for; an event loop's write is (it was asked for
        # by a request that has gone, e.g. a claim: its lease runs out and the sweep answers it).
        return [(job, f) for job, f in batch if not isinstance(f, Future) or f.set_running_or_notify_cancel()]

    def _run(self, batch: list[tuple[Job, Outcome]]) -> None:
        if not batch:
            return
        try:
            with self._transaction() as connection:
                results = [job(connection) for job, _ in batch]
        except Exception as exc:
            if len(batch) == 1:
                _settle([(batch[0][1], False, exc)])
                return
            log.debug("a batch of %d writes failed (%s): writing them one by one", len(batch), exc)
            _settle([self._run_alone(job, future) for job, future in batch])
            return
        _settle([(future, True, result) for (_, future), result in zip(batch, results, strict=True)])

    def _run_alone(self, job: Job, future: Outcome) -> tuple[Outcome, bool, Any]:
        try:
            with self._transaction() as connection:
                return future, True, job(connection)
        except Exception as exc:
            return future, False, exc

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Connection]:
        held = self._hold(urgent=True) if self._hold else contextlib.nullcontext()
        with held, self.engine.begin() as connection:
            yield connection


def _settle(outcomes: list[tuple[Outcome, bool, Any]]) -> None:
    """Each future's result (ok) or exception: plain ones here, each event loop's in one callback."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
    for future, ok, value in outcomes:
        if not isinstance(future, Future):
            by_loop.setdefault(future.get_loop(), []).append((future, ok, value))
        elif ok:
            future.set_result(value)
        else:
            future.set_exception(value)
    for loop, settled in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is waiting any more
            loop.call_soon_threadsafe(_settle_on_loop, settled)


def _settle_on_loop(outcomes: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, ok, value in outcomes:
        if future.done():  # its request was cancelled meanwhile
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
