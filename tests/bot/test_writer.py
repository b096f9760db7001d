"""The batch writer: queued writes share one transaction, a failure fails only its own write, urgent first."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine, create_engine, text

from bot.writer import BatchWriter


class Gate:
    """A `hold` that records each transaction and can keep the writer waiting until `release`."""

    def __init__(self, *, closed: bool = False) -> None:
        self.transactions = 0
        self.entered = threading.Event()
        self._open = threading.Event()
        if not closed:
            self._open.set()

    @contextlib.contextmanager
    def hold(self, *, urgent: bool) -> Iterator[None]:
        assert urgent, "the writer's transactions go before the rarer writes"
        self.transactions += 1
        self.entered.set()
        self._open.wait(10)
        yield

    def release(self) -> None:
        self._open.set()


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_engine(f"sqlite:///{tmp_path / 'writes.db'}")
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE notes (n INTEGER PRIMARY KEY)"))
    yield engine
    engine.dispose()


def insert(n: int) -> Callable[[Connection], int]:
    def job(connection: Connection) -> int:
        connection.execute(text("INSERT INTO notes (n) VALUES (:n)"), {"n": n})
        return n

    return job


def notes(engine: Engine) -> list[int]:
    with engine.connect() as connection:
        return sorted(row[0] for row in connection.execute(text("SELECT n FROM notes")))


def test_writes_queued_meanwhile_commit_in_one_transaction(engine: Engine) -> None:
    gate = Gate(closed=True)
    writer = BatchWriter(engine, hold=gate.hold)
    first = writer.submit(insert(0))
    assert gate.entered.wait(5)
    rest = [writer.submit(insert(n)) for n in range(1, 6)]
    gate.release()
    assert [f.result(5) for f in [first, *rest]] == [0, 1, 2, 3, 4, 5]
    assert gate.transactions == 2, "one transaction for the first, one for the five queued behind it"
    assert notes(engine) == [0, 1, 2, 3, 4, 5]
    writer.close()


def test_a_failing_write_fails_alone(engine: Engine) -> None:
    gate = Gate(closed=True)
    writer = BatchWriter(engine, hold=gate.hold)
    writer.submit(insert(0))
    assert gate.entered.wait(5)
    good, duplicate, later = (writer.submit(insert(n)) for n in (1, 0, 2))
    gate.release()
    assert (good.result(5), later.result(5)) == (1, 2)
    with pytest.raises(Exception, match="UNIQUE"):
        duplicate.result(5)
    assert notes(engine) == [0, 1, 2], "the batch was rolled back and its good writes written again"
    writer.close()


def test_urgent_writes_go_first(engine: Engine) -> None:
    gate = Gate(closed=True)
    writer = BatchWriter(engine, hold=gate.hold, max_batch=1)
    order: list[str] = []

    def note(name: str) -> Callable[[Connection], None]:
        return lambda _connection: order.append(name)

    writer.submit(note("first"))
    assert gate.entered.wait(5)
    normal = writer.submit(note("normal"))
    urgent = writer.submit(note("urgent"), urgent=True)
    gate.release()
    normal.result(5)
    urgent.result(5)
    assert order == ["first", "urgent", "normal"]
    writer.close()


async def test_an_event_loops_writes_are_settled_on_the_loop(engine: Engine) -> None:
    writer = BatchWriter(engine)
    results = await asyncio.gather(*(writer.submit_async(insert(n)) for n in range(10)))
    assert results == list(range(10)) and notes(engine) == list(range(10))
    with pytest.raises(Exception, match="UNIQUE"):
        await writer.submit_async(insert(3))
    writer.close()


async def test_a_cancelled_wait_still_writes(engine: Engine) -> None:
    gate = Gate(closed=True)
    writer = BatchWriter(engine, hold=gate.hold)
    blocked = writer.submit_async(insert(0))
    await asyncio.to_thread(gate.entered.wait, 5)
    given_up = writer.submit_async(insert(1))
    given_up.cancel()
    gate.release()
    assert await blocked == 0
    await asyncio.to_thread(writer.close)
    assert notes(engine) == [0, 1], "asked for, so written: a claim's sweep relies on it"


def test_close_writes_what_is_queued_and_refuses_more(engine: Engine) -> None:
    gate = Gate(closed=True)
    writer = BatchWriter(engine, hold=gate.hold)
    queued = [writer.submit(insert(n)) for n in range(3)]
    assert gate.entered.wait(5)
    threading.Timer(0.05, gate.release).start()
    writer.close()
    assert [f.result(0) for f in queued] == [0, 1, 2]
    with pytest.raises(RuntimeError, match="closed"):
        writer.submit(insert(9))


def test_an_idle_writer_ends_its_thread_and_starts_again(engine: Engine) -> None:
    writer = BatchWriter(engine, idle_s=0.01, name="kb-test-writer")
    assert writer.submit(insert(1)).result(5) == 1
    for _ in range(200):
        if not any(t.name == "kb-test-writer" for t in threading.enumerate()):
            break
        threading.Event().wait(0.01)
    assert not any(t.name == "kb-test-writer" for t in threading.enumerate())
    assert writer.submit(insert(2)).result(5) == 2
    writer.close()
