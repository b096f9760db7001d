"""Behaviour events: questions (with their redacted answers), feedback, source clicks, (un)subscribes.

Push reads them to build profiles, and training to build its data. Question and answer texts are
redacted before they are written (on the writer's thread, not the event loop). A question answered
before it was recorded carries a `ref` (its event's key), which a button click resolves to the
question's id once it is written (`question_by_ref`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, Table, bindparam, insert, select
from sqlmodel import Session, SQLModel, col

from bot.store.base import Batched, StoreBase, Write
from bot.types import Incoming
from core.models import BehaviourEventRow, utcnow
from knowledge.types import Answer, Citation

_BEHAVIOUR: Table = SQLModel.metadata.tables[BehaviourEventRow.__tablename__]
# Built once: SQLAlchemy then finds each one's compiled form in its cache by identity, cheaply.
_ADD_EVENT = insert(_BEHAVIOUR)
# Ids are 64-bit in both databases; a larger one (a forged button value) would overflow the driver.
MAX_ID = 2**63 - 1


def stored_id(value: int | None) -> int | None:
    """`value` when it can be an event id, else None (an id no event has)."""
    return value if value is not None and 0 < value <= MAX_ID else None


_BY_REF = (
    select(_BEHAVIOUR.c.id)
    .where(_BEHAVIOUR.c.ref == bindparam("ref"), _BEHAVIOUR.c.kind == "question")
    .order_by(_BEHAVIOUR.c.id)
    .limit(1)
)


class BehaviourRows(StoreBase):
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
        if stored_id(question_id) is None:
            return None
        with Session(self.engine) as session:
            row = session.get(BehaviourEventRow, question_id)
            return row if row is not None and row.kind == "question" else None

    def question_by_ref(self, ref: str) -> int | None:
        """The id of the question event recorded under `ref` (see `finish_event`), if written yet."""
        with self.engine.connect() as connection:
            return connection.execute(_BY_REF, {"ref": ref[:200]}).scalar()

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
        at, question_id = utcnow(), stored_id(question_id)

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


BATCHED: Batched = {
    BehaviourRows.record_question: BehaviourRows._record_question_job,
    BehaviourRows.record_feedback: BehaviourRows._record_feedback_job,
    BehaviourRows.record_click: BehaviourRows._record_click_job,
}
