"""Event claims: the rows behind the exactly-once protocol (bot/claims.py has the contract).

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

import logging
import sqlite3
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, Engine, Table, bindparam, delete, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, SQLModel, col

from bot.store.base import Batched, Write, update_job
from bot.store.behaviour import BehaviourRows
from bot.types import Incoming, UnrecordedQuestion
from core.models import ProcessedEventRow, as_utc, utcnow

log = logging.getLogger(__name__)

DEFAULT_LEASE_S = 120.0
CLAIMED, ANSWERED, IGNORED, FAILED = "claimed", "answered", "ignored", "failed"

_EVENTS: Table = SQLModel.metadata.tables[ProcessedEventRow.__tablename__]
# Built once: SQLAlchemy then finds each one's compiled form in its cache by identity, cheaply.
_CLAIM = insert(_EVENTS)
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


class ClaimRows(BehaviourRows):
    """Claims close with their question's record (a behaviour event) in one transaction."""

    def __init__(self, engine: Engine, *, owner: str | None = None) -> None:
        super().__init__(engine, owner=owner)
        self._claim_statement = _claim_statement(engine.dialect.name)

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
        return update_job(_RENEW, {"key": event_id, "me": self.owner, "new_lease": lease})

    def set_reply_ts(self, event_id: str, ts: str) -> None:
        """The message the answer goes into, so a re-run edits it instead of posting another."""
        self._write(*self._set_reply_ts_job(event_id, ts))

    def _set_reply_ts_job(self, event_id: str, ts: str) -> Write[bool]:
        return update_job(_SET_REPLY_TS, {"key": event_id, "new_reply_ts": ts[:40]})

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
        """Forget events received before `older_than` ago (platforms stop redelivering within an hour).

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


def _claim_statement(dialect: str) -> Any | None:
    """The claim as INSERT … ON CONFLICT DO NOTHING where the database has it (no error to undo
    in a batch); None elsewhere, where a savepoint catches the duplicate instead."""
    key = [_EVENTS.c.event_id]
    if dialect == "sqlite" and sqlite3.sqlite_version_info >= (3, 35):  # RETURNING came in 3.35
        return sqlite_insert(_EVENTS).on_conflict_do_nothing(index_elements=key).returning(*key)
    if dialect == "postgresql":
        return postgresql_insert(_EVENTS).on_conflict_do_nothing(index_elements=key).returning(*key)
    return None


BATCHED: Batched = {
    ClaimRows.claim_event: ClaimRows._claim_job,
    ClaimRows.renew: ClaimRows._renew_job,
    ClaimRows.set_reply_ts: ClaimRows._set_reply_ts_job,
    ClaimRows.finish_event: ClaimRows._finish_job,
}
