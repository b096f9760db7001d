"""The bot's rows: behaviour events for push, subscriptions, digest cadence, claimed events, references.

Synchronous SQLAlchemy like the rest of the product; async callers run these in a worker thread.

    store = BotStore(engine)
    if store.claim_event("slack:Ev0123"):   # False when another delivery already claimed it
        ...
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, delete, select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

from bot.types import Incoming
from core.db import session_scope
from core.models import (
    BehaviourEventRow,
    ConversationRefRow,
    DigestPrefRow,
    ProcessedEventRow,
    SubscriptionRow,
    utcnow,
)
from knowledge.types import Answer
from privacy.redaction import Redactor

DEFAULT_CADENCE = "weekly"


class BotStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # Question texts feed push profiles and may one day feed training: no PII in them.
        self._redactor = Redactor()

    def claim_event(self, event_id: str) -> bool:
        """True for the first delivery of `event_id` anywhere (any replica, any restart), else False."""
        try:
            with session_scope(self.engine) as session:
                session.add(ProcessedEventRow(event_id=event_id[:200], received_at=utcnow()))
        except IntegrityError:
            return False
        return True

    def record_question(self, incoming: Incoming, answer: Answer) -> int:
        data: dict[str, Any] = {
            "abstained": answer.abstained,
            "refused": answer.refused,
            "confidence": answer.confidence,
            "citations": [
                {"number": c.number, "title": c.title, "uri": c.uri, "section": c.section}
                for c in answer.citations
            ],
        }
        text = "" if answer.refused else self._redactor.redact(incoming.text).text
        return self._add("question", incoming, text=text, data=data)

    def record_feedback(self, incoming: Incoming, question_id: int | None, *, value: int) -> int:
        """`value` is +1 or -1 for a button, 0 for a written `feedback ...` comment."""
        text = self._redactor.redact(incoming.text).text
        return self._add("feedback", incoming, text=text, question_id=question_id, data={"value": value})

    def record_click(self, incoming: Incoming, question_id: int, *, number: int, uri: str) -> int:
        data = {"number": number, "uri": uri}
        return self._add("source_click", incoming, question_id=question_id, data=data)

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
            with session_scope(self.engine) as session:
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
        with session_scope(self.engine) as session:
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
        with session_scope(self.engine) as session:
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
        with session_scope(self.engine) as session:
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

    def _add(
        self,
        kind: str,
        incoming: Incoming,
        *,
        text: str = "",
        question_id: int | None = None,
        data: dict[str, Any] | None = None,
    ) -> int:
        row = BehaviourEventRow(
            kind=kind, platform=incoming.platform, user_id=incoming.user[:200],
            channel=incoming.channel[:200], thread=(incoming.thread or "")[:200], text=text,
            question_id=question_id, data=data or {}, at=utcnow(),
        )  # fmt: skip
        with session_scope(self.engine) as session:
            session.add(row)
            session.flush()
            assert row.id is not None
            return row.id
