"""The bot's rows: behaviour events for push, subscriptions, digest cadence, claimed events, references.

Synchronous SQLAlchemy like the rest of the product; async callers go through `run` (or `start`).
The writes on an event's path (the claim, its updates, behaviour events) are Core statements built
once: an ORM session costs about 1.2 ms of CPU per write (unit of work, identity map, refresh), a
prepared Core statement a fraction of that, and an event makes three: its claim (Slack's ack
waits for it), its message's ts (the final answer waits for it) and its close, which also records
the question once the answer is out. They are committed in batches by one thread (bot/writer.py,
claims first), which under a burst of events writes each one for a fraction of what a transaction
of its own cost. Rarer writes (preferences, references) keep the ORM and the bot's worker threads.

    store = BotStore(engine)
    if store.claim_event("slack:Ev0123", incoming, lease_s=120):   # False: another delivery has it
        ...answer, its buttons naming the question "slack:Ev0123"...
        store.finish_event("slack:Ev0123", question=reply.unrecorded)   # closed, question recorded

An event's claim is `claimed` while a replica answers it, and `answered` (or `ignored`, `failed`)
afterwards. The answering replica renews its lease; when a replica dies, its claims' leases run
out and `take_over` hands each to exactly one other replica (a compare-and-set UPDATE), which
answers from the stored `payload` into the stored `reply_ts` message: a re-run edits the same
message rather than posting a second answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, Table, bindparam, delete, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, SQLModel, col

from bot.types import Incoming, UnrecordedQuestion
from bot.writer import BatchWriter, WriteGate
from core.db import session_scope
from core.models import (
    BehaviourEventRow,
    ConversationRefRow,
    DigestPrefRow,
    ProcessedEventRow,
    SubscriptionRow,
    as_utc,
    utcnow,
)
from knowledge.types import Answer, Citation
from privacy.redaction import Redactor

log = logging.getLogger(__name__)

T = TypeVar("T")
Write = tuple[Callable[[Connection], T], bool]  # a batched write: its job, and whether it is urgent

DEFAULT_CADENCE = "weekly"
DEFAULT_LEASE_S = 120.0

CLAIMED, ANSWERED, IGNORED, FAILED = "claimed", "answered", "ignored", "failed"

_EVENTS: Table = SQLModel.metadata.tables[ProcessedEventRow.__tablename__]
_BEHAVIOUR: Table = SQLModel.metadata.tables[BehaviourEventRow.__tablename__]
# Built once: SQLAlchemy then finds each one's compiled form in its cache by identity, cheaply.
_CLAIM = insert(_EVENTS)
_ADD_EVENT = insert(_BEHAVIOUR)
_THE_EVENT = _EVENTS.c.event_id == bindparam("key")
_SET_REPLY_TS = update(_EVENTS).where(_THE_EVENT).values(reply_ts=bindparam("new_reply_ts"))
_FINISH = (
    update(_EVENTS).where(_THE_EVENT).values(state=bindparam("new_state"), lease_until=None, payload=None)
)
_RENEW = (
    update(_EVENTS)
    .where(_THE_EVENT, _EVENTS.c.owner == bindparam("me"), _EVENTS.c.state == CLAIMED)
    .values(lease_until=bindparam("new_lease"))
)
_BY_REF = (
    select(_BEHAVIOUR.c.id)
    .where(_BEHAVIOUR.c.ref == bindparam("ref"), _BEHAVIOUR.c.kind == "question")
    .order_by(_BEHAVIOUR.c.id)
    .limit(1)
)
_READ_CLAIM = select(
    _EVENTS.c.state, _EVENTS.c.lease_until, _EVENTS.c.attempts, _EVENTS.c.payload, _EVENTS.c.reply_ts
).where(_THE_EVENT)
_TAKE_OVER = (
    update(_EVENTS)
    .where(_THE_EVENT, _EVENTS.c.state == CLAIMED, _EVENTS.c.attempts == bindparam("tries"))
    .values(
        owner=bindparam("me"), attempts=bindparam("new_attempts"), lease_until=bindparam("new_lease"),
        state=bindparam("new_state"),
    )
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Claim:
    """An event taken over from a replica whose lease ran out: what to answer, and where."""

    key: str
    incoming: Incoming
    reply_ts: str | None
    attempts: int


def replica_name() -> str:
    """Who holds a claim, for the logs: host, process and a random suffix (pids repeat in containers)."""
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class BotStore:
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
        self._claim_statement = _claim_statement(engine.dialect.name)

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
        batched = _BATCHED.get(getattr(work, "__func__", work))
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

    def claim_event(
        self, event_id: str, incoming: Incoming | None = None, *, lease_s: float = DEFAULT_LEASE_S
    ) -> bool:
        """True for the first delivery of `event_id` anywhere (any replica, any restart), else False.

        With `incoming` the claim holds a lease and what is needed to answer again; without it the
        event needs no answer and is recorded only to turn its redeliveries away.
        """
        return self._write(*self._claim_job(event_id, incoming, lease_s=lease_s))

    def _claim_job(
        self, event_id: str, incoming: Incoming | None = None, *, lease_s: float = DEFAULT_LEASE_S
    ) -> Write[bool]:
        now = utcnow()
        row: dict[str, Any] = {
            "event_id": event_id[:200], "received_at": now, "state": IGNORED, "owner": "", "attempts": 0,
            "lease_until": None, "payload": None, "reply_ts": None,
        }  # fmt: skip
        if incoming is not None:
            row |= {"state": CLAIMED, "owner": self.owner, "attempts": 1, "payload": incoming.to_json()}
            row["lease_until"] = now + timedelta(seconds=lease_s)
        statement = self._claim_statement

        def claim(connection: Connection) -> bool:
            if statement is not None:  # INSERT … ON CONFLICT DO NOTHING: no row back when it was taken
                return connection.execute(statement, row).first() is not None
            try:
                with connection.begin_nested():
                    connection.execute(_CLAIM, row)
            except IntegrityError:
                return False
            return True

        return claim, True

    def renew(self, event_id: str, *, lease_s: float = DEFAULT_LEASE_S) -> bool:
        """Extend our lease while we still answer; False when the claim is no longer ours."""
        return self._write(*self._renew_job(event_id, lease_s=lease_s))

    def _renew_job(self, event_id: str, *, lease_s: float = DEFAULT_LEASE_S) -> Write[bool]:
        lease = utcnow() + timedelta(seconds=lease_s)
        return _update_job(_RENEW, {"key": event_id, "me": self.owner, "new_lease": lease})

    def set_reply_ts(self, event_id: str, ts: str) -> None:
        """The message the answer goes into, so a re-run edits it instead of posting another."""
        self._write(*self._set_reply_ts_job(event_id, ts))

    def _set_reply_ts_job(self, event_id: str, ts: str) -> Write[bool]:
        return _update_job(_SET_REPLY_TS, {"key": event_id, "new_reply_ts": ts[:40]})

    def finish_event(
        self, event_id: str, *, state: str = ANSWERED, question: UnrecordedQuestion | None = None
    ) -> int | None:
        """Close a claim; the payload (the question's text) is not kept past the answer.

        With `question` (an answer sent with buttons that name it by `ref`) its question event is
        written in the same transaction, so that a re-run after a crash records it once; the
        event's id is returned. A question that cannot be written is logged and left out: the
        claim still closes, as the answer has been delivered.
        """
        return self._write(*self._finish_job(event_id, state=state, question=question))

    def _finish_job(
        self, event_id: str, *, state: str = ANSWERED, question: UnrecordedQuestion | None = None
    ) -> Write[int | None]:
        values = {"key": event_id, "new_state": state}
        add = (
            self._record_question_job(question.incoming, question.answer, ref=question.ref)[0]
            if question
            else None
        )

        def finish(connection: Connection) -> int | None:
            connection.execute(_FINISH, values)  # first: it opens the transaction the savepoint is in
            if add is None:
                return None
            try:
                with connection.begin_nested():
                    return add(connection)
            except Exception:
                log.exception("could not record the question of %s; its answer was delivered", event_id)
                return None

        return finish, False

    def question_by_ref(self, ref: str) -> int | None:
        """The id of the question event recorded under `ref` (see `finish_event`), if written yet."""
        with self.engine.connect() as connection:
            return connection.execute(_BY_REF, {"ref": ref[:200]}).scalar()

    def expired_claims(self, *, prefix: str = "", limit: int = 50) -> list[str]:
        """Event ids (starting with `prefix`) whose replica stopped renewing its lease (died, or hung)."""
        query = (
            select(col(ProcessedEventRow.event_id))
            .where(col(ProcessedEventRow.state) == CLAIMED, col(ProcessedEventRow.lease_until) < utcnow())
            .where(col(ProcessedEventRow.event_id).startswith(prefix))
            .order_by(col(ProcessedEventRow.received_at))
            .limit(limit)
        )
        with Session(self.engine) as session:
            return list(session.execute(query).scalars().all())

    def take_over(self, event_id: str, *, lease_s: float, max_attempts: int) -> Claim | None:
        """Take an expired claim for this replica; None when another replica was quicker.

        A claim that has had `max_attempts` tries is marked failed instead: a question that
        crashes every replica must not crash them forever.
        """
        now = utcnow()
        with self._transaction() as connection:
            row = connection.execute(_READ_CLAIM, {"key": event_id}).one_or_none()
            if row is None or row.state != CLAIMED or row.lease_until is None:
                return None
            if as_utc(row.lease_until) >= now:
                return None
            tries, payload, reply_ts = row.attempts, row.payload, row.reply_ts
            give_up = tries >= max_attempts or not payload
            taken = connection.execute(
                _TAKE_OVER,
                {
                    "key": event_id, "tries": tries,  # the compare in compare-and-set
                    "me": self.owner, "new_attempts": tries + 1, "new_state": FAILED if give_up else CLAIMED,
                    "new_lease": now + timedelta(seconds=lease_s),
                },
            ).rowcount  # fmt: skip
            if not taken or give_up or payload is None:
                return None
            return Claim(event_id, Incoming.from_json(payload), reply_ts, tries + 1)

    def claim_state(self, event_id: str) -> ProcessedEventRow | None:
        with Session(self.engine) as session:
            return session.get(ProcessedEventRow, event_id)

    def prune_events(self, *, older_than: timedelta) -> int:
        """Forget events received before `older_than` ago (Slack stops redelivering within an hour).

        Claims still being answered under a live lease are kept whatever their age.
        """
        now = utcnow()
        with self._transaction() as connection:
            gone = connection.execute(
                delete(_EVENTS).where(
                    _EVENTS.c.received_at < now - older_than,
                    or_(_EVENTS.c.state != CLAIMED, _EVENTS.c.lease_until < now),
                )
            ).rowcount
        return int(gone or 0)

    def record_question(self, incoming: Incoming, answer: Answer) -> int:
        """The question event: redacted question and answer texts, and what the answer cited.

        Citations keep their document id and chunk ids (never the passages' text), so training can
        read a liked answer's context back from the chunks table while the document still exists.
        """
        return self._write(*self._record_question_job(incoming, answer))

    def _record_question_job(
        self, incoming: Incoming, answer: Answer, *, ref: str | None = None
    ) -> Write[int]:
        def contents() -> tuple[str, dict[str, Any]]:  # redacted on the writer's thread, not the loop
            data: dict[str, Any] = {
                "abstained": answer.abstained,
                "refused": answer.refused,
                "confidence": answer.confidence,
                "model": answer.model,
                "answer": "" if answer.refused else self._redactor.redact(answer.text).text,
                "citations": [_cited(c) for c in answer.citations],
            }
            return ("" if answer.refused else self._redactor.redact(incoming.text).text), data

        return self._add_job("question", incoming, contents=contents, ref=ref)

    def record_feedback(self, incoming: Incoming, question_id: int | None, *, value: int) -> int:
        """`value` is +1 or -1 for a button, 0 for a written `feedback ...` comment."""
        return self._write(*self._record_feedback_job(incoming, question_id, value=value))

    def _record_feedback_job(self, incoming: Incoming, question_id: int | None, *, value: int) -> Write[int]:
        def contents() -> tuple[str, dict[str, Any]]:
            return self._redactor.redact(incoming.text).text, {"value": value}

        return self._add_job("feedback", incoming, question_id=question_id, contents=contents)

    def record_click(self, incoming: Incoming, question_id: int | None, *, number: int, uri: str) -> int:
        return self._write(*self._record_click_job(incoming, question_id, number=number, uri=uri))

    def _record_click_job(
        self, incoming: Incoming, question_id: int | None, *, number: int, uri: str
    ) -> Write[int]:
        data = {"number": number, "uri": uri}
        return self._add_job("source_click", incoming, question_id=question_id, contents=lambda: ("", data))

    def question(self, question_id: int) -> BehaviourEventRow | None:
        with Session(self.engine) as session:
            row = session.get(BehaviourEventRow, question_id)
            return row if row is not None and row.kind == "question" else None

    def recent_questions(self, platform: str, user_id: str, *, limit: int = 5) -> list[BehaviourEventRow]:
        query = (
            select(BehaviourEventRow)
            .where(col(BehaviourEventRow.kind) == "question")
            .where(col(BehaviourEventRow.platform) == platform, col(BehaviourEventRow.user_id) == user_id)
            .order_by(col(BehaviourEventRow.id).desc())
            .limit(limit)
        )
        with Session(self.engine) as session:
            return list(session.execute(query).scalars().all())

    def subscribe(self, incoming: Incoming, topic: str) -> bool:
        """True when this is a new subscription, False when the user already had it."""
        try:
            with self._writing() as session:
                session.add(
                    SubscriptionRow(
                        platform=incoming.platform, user_id=incoming.user, topic=topic, created_at=utcnow()
                    )
                )
        except IntegrityError:
            return False
        self._add("subscribe", incoming, text=topic)
        return True

    def unsubscribe(self, incoming: Incoming, topic: str) -> bool:
        """True when the user had the subscription."""
        with self._writing() as session:
            gone = session.execute(
                delete(SubscriptionRow).where(
                    col(SubscriptionRow.platform) == incoming.platform,
                    col(SubscriptionRow.user_id) == incoming.user,
                    col(SubscriptionRow.topic) == topic,
                )
            ).rowcount  # type: ignore[attr-defined]
        if gone:
            self._add("unsubscribe", incoming, text=topic)
        return bool(gone)

    def subscriptions(self, platform: str, user_id: str) -> list[str]:
        query = (
            select(col(SubscriptionRow.topic))
            .where(col(SubscriptionRow.platform) == platform, col(SubscriptionRow.user_id) == user_id)
            .order_by(col(SubscriptionRow.topic))
        )
        with Session(self.engine) as session:
            return list(session.execute(query).scalars().all())

    def digest_cadence(self, platform: str, user_id: str) -> str:
        with Session(self.engine) as session:
            row = session.get(DigestPrefRow, (platform, user_id))
            return row.cadence if row else DEFAULT_CADENCE

    def set_digest(self, platform: str, user_id: str, *, cadence: str | None, now: bool = False) -> None:
        """Store a cadence (daily, weekly, off) and/or ask push for a digest right away."""
        with self._writing() as session:
            row = session.get(DigestPrefRow, (platform, user_id)) or DigestPrefRow(
                platform=platform, user_id=user_id, cadence=DEFAULT_CADENCE, updated_at=utcnow()
            )
            if cadence is not None:
                row.cadence = cadence
            if now:
                row.requested_at = utcnow()
            row.updated_at = utcnow()
            session.add(row)

    def save_reference(
        self,
        platform: str,
        conversation_id: str,
        *,
        user_id: str,
        service_url: str,
        reference: dict[str, Any],
    ) -> None:
        """Keep the newest way to reach a conversation (it changes when the service URL moves)."""
        with self._writing() as session:
            row = session.get(ConversationRefRow, (platform, conversation_id)) or ConversationRefRow(
                platform=platform, conversation_id=conversation_id, user_id=user_id, service_url=service_url,
                updated_at=utcnow(),
            )  # fmt: skip
            row.user_id, row.service_url, row.reference = user_id, service_url, reference
            row.updated_at = utcnow()
            session.add(row)

    def references(self, platform: str, user_id: str) -> list[ConversationRefRow]:
        query = select(ConversationRefRow).where(
            col(ConversationRefRow.platform) == platform, col(ConversationRefRow.user_id) == user_id
        )
        with Session(self.engine) as session:
            return list(session.execute(query).scalars().all())

    def _add(self, kind: str, incoming: Incoming, *, text: str = "") -> int:
        return self._write(*self._add_job(kind, incoming, contents=lambda: (text, {})))

    def _add_job(
        self,
        kind: str,
        incoming: Incoming,
        *,
        contents: Callable[[], tuple[str, dict[str, Any]]],
        question_id: int | None = None,
        ref: str | None = None,
    ) -> Write[int]:
        """A behaviour event's insert; `contents` gives its (text, data) on the writer's thread."""
        at = utcnow()

        def add(connection: Connection) -> int:
            text, data = contents()
            row = {
                "kind": kind, "platform": incoming.platform, "user_id": incoming.user[:200],
                "channel": incoming.channel[:200], "thread": (incoming.thread or "")[:200], "text": text,
                "question_id": question_id, "data": data, "at": at, "ref": ref[:200] if ref else None,
            }  # fmt: skip
            key = connection.execute(_ADD_EVENT, row).inserted_primary_key
            assert key is not None and key[0] is not None
            return int(key[0])

        return add, False


def _cited(citation: Citation) -> dict[str, Any]:
    """A citation as a question event keeps it: where it points, and which passages it stood for."""
    return {
        "number": citation.number, "title": citation.title, "uri": citation.uri, "section": citation.section,
        "document_id": citation.document_id, "chunk_ids": list(citation.chunk_ids),
    }  # fmt: skip


def _update_job(statement: Any, values: dict[str, Any]) -> Write[bool]:
    """One of the prepared UPDATEs above as a batched write; True when it changed a row."""
    return (lambda connection: bool(connection.execute(statement, values).rowcount)), False


def _claim_statement(dialect: str) -> Any | None:
    """The claim as INSERT … ON CONFLICT DO NOTHING where the database has it (no error to undo
    in a batch); None elsewhere, where a savepoint catches the duplicate instead."""
    key = [_EVENTS.c.event_id]
    if dialect == "sqlite" and sqlite3.sqlite_version_info >= (3, 35):  # RETURNING came in 3.35
        return sqlite_insert(_EVENTS).on_conflict_do_nothing(index_elements=key).returning(*key)
    if dialect == "postgresql":
        return postgresql_insert(_EVENTS).on_conflict_do_nothing(index_elements=key).returning(*key)
    return None


# The event path's writes, which `BotStore.start` hands to the batch writer: method -> its job.
_BATCHED: dict[Callable[..., Any], Callable[..., Write[Any]]] = {
    BotStore.claim_event: BotStore._claim_job,
    BotStore.renew: BotStore._renew_job,
    BotStore.set_reply_ts: BotStore._set_reply_ts_job,
    BotStore.finish_event: BotStore._finish_job,
    BotStore.record_question: BotStore._record_question_job,
    BotStore.record_feedback: BotStore._record_feedback_job,
    BotStore.record_click: BotStore._record_click_job,
}
