"""A person's preferences and how to reach them: subscriptions, digest cadence, Teams conversation refs.

Rare writes: they keep the ORM and run on the bot's worker threads, not the batch writer.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

from bot.store.behaviour import BehaviourRows
from bot.types import Incoming
from core.models import ConversationRefRow, DigestPrefRow, SubscriptionRow, utcnow

DEFAULT_CADENCE = "weekly"


class PreferenceRows(BehaviourRows):
    """Subscribing and unsubscribing are behaviour events too (push's profiles read them)."""

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
