"""What every part of BotStore shares: the engine, the bot's database threads and the batch writer.

Synchronous SQLAlchemy like the rest of the product; async callers go through `run` (or `start`).
The writes on an event's path (the claim, its updates, behaviour events) are Core statements built
once: an ORM session costs about 1.2 ms of CPU per write (unit of work, identity map, refresh), a
prepared Core statement a fraction of that, and an event makes three: its claim (the ack waits for
it), its message's ts (the final answer waits for it) and its close, which also records the
question once the answer is out. They are committed in batches by one thread (bot/writer.py,
claims first), which under a burst of events writes each one for a fraction of what a transaction
of its own cost. Rarer writes (preferences, references) keep the ORM and the bot's worker threads.

A method on the event path comes in two halves: `name(...)` for plain callers, which queues the
write and waits for its commit, and `_name_job(...)`, which builds the write for the batch writer.
Each part lists its pairs in a `BATCHED` table; `start` hands a listed method's job to the writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import socket
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar, TypeVar

from sqlalchemy import Connection, Engine
from sqlmodel import Session

from bot.writer import BatchWriter, WriteGate
from core.db import session_scope
from privacy.redaction import Redactor

T = TypeVar("T")
Write = tuple[Callable[[Connection], T], bool]  # a batched write: its job, and whether it is urgent
Batched = Mapping[Callable[..., Any], Callable[..., Write[Any]]]  # method -> the job it queues


def replica_name() -> str:
    """Who holds a claim, for the logs: host, process and a random suffix (pids repeat in containers)."""
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class StoreBase:
    """The engine, the threads and the writer; the parts (claims, behaviour, preferences) add rows."""

    # The event path's writes, which `start` hands to the batch writer (set by BotStore).
    batched: ClassVar[Batched] = {}

    def __init__(self, engine: Engine, *, owner: str | None = None) -> None:
        self.engine = engine
        self.owner = owner or replica_name()
        # Question and answer texts feed push profiles and training data: no PII in them.
        self._redactor = Redactor()
        self._gate = WriteGate() if engine.dialect.name == "sqlite" else None
        # The event path's writes (claims first) commit in batches on one thread (bot/writer.py);
        # everything else runs on the bot's own threads, so that it never queues behind embedding
        # and search work in the event loop's default executor.
        self._writer = BatchWriter(engine, hold=self._gate.hold if self._gate else None)
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="kb-bot-db")

    async def run(self, work: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one of these (blocking) methods off the event loop, on the bot's database threads."""
        return await self.start(work, *args, **kwargs)

    def start(self, work: Callable[..., T], *args: Any, **kwargs: Any) -> asyncio.Future[T]:
        """Like `run`, but returns at once: the work is under way, its future is the outcome.

        A plain future rather than a task around `run`: awaiting it costs two turns of the event
        loop fewer, which at 50 events in flight (each turn runs every ready callback) is ~10 ms
        a turn on the ack path. The event path's writes go straight to the batch writer.
        """
        loop = asyncio.get_running_loop()
        batched = self.batched.get(getattr(work, "__func__", work))
        if batched is not None and getattr(work, "__self__", None) is self:
            job, urgent = batched(self, *args, **kwargs)
            written: asyncio.Future[T] = self._writer.submit_async(job, urgent=urgent)
            return written
        return loop.run_in_executor(self._executor, functools.partial(work, *args, **kwargs))

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._writer.close()

    def _write(self, job: Callable[[Connection], T], urgent: bool) -> T:
        """A batched write from a plain (non-async) caller: queue it and wait for its commit."""
        return self._writer.submit(job, urgent=urgent).result()

    @contextlib.contextmanager
    def _writing(self, *, urgent: bool = False) -> Iterator[Session]:
        """An ORM session in a write transaction (the rarer writes)."""
        with self._turn(urgent=urgent), session_scope(self.engine) as session:
            yield session

    @contextlib.contextmanager
    def _transaction(self, *, urgent: bool = False) -> Iterator[Connection]:
        """A connection in a write transaction, committed on success (the event path's writes)."""
        with self._turn(urgent=urgent), self.engine.begin() as connection:
            yield connection

    def _turn(self, *, urgent: bool) -> contextlib.AbstractContextManager[None]:
        return self._gate.hold(urgent=urgent) if self._gate else contextlib.nullcontext()


def update_job(statement: Any, values: dict[str, Any]) -> Write[bool]:
    """A prepared UPDATE as a batched write; True when it changed a row."""
    return (lambda connection: bool(connection.execute(statement, values).rowcount)), False
