"""Reads and small writes around the delivery log: access checks, last digests, clicks, cursors.

Clicks and dismissals are written twice on purpose: on the delivery row (the log people read, and
what adaptive cadence counts) and as behaviour events (what `push.profiles` learns from).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, func, select, update
from sqlmodel import Session, col

from core.db import session_scope
from core.models import (
    BehaviourEventRow,
    DocumentChangeRow,
    DocumentRow,
    PushCursorRow,
    PushDeliveryRow,
    as_utc,
    utcnow,
)
from privacy.access import can_read

# Digest windows are consumed by these states: the slot is done, whatever came of it.
WINDOW_DONE = ("sending", "sent", "retry", "deferred", "empty", "failed", "gone", "skipped")


def readable_documents(engine: Engine, groups: Iterable[str], document_ids: Iterable[str]) -> set[str]:
    """The ids among `document_ids` that a person with `groups` may read (deleted ones: their last ACL)."""
    wanted = set(document_ids)
    if not wanted:
        return set()
    groups = tuple(groups)
    with Session(engine) as session:
        acls = dict(
            session.execute(
                select(col(DocumentRow.id), col(DocumentRow.acl_groups)).where(
                    col(DocumentRow.id).in_(wanted)
                )
            ).all()
        )
        missing = wanted - set(acls)
        if missing:
            newest = (
                select(func.max(col(DocumentChangeRow.id)))
                .where(col(DocumentChangeRow.document_id).in_(missing))
                .group_by(col(DocumentChangeRow.document_id))
            )
            rows = session.execute(
                select(col(DocumentChangeRow.document_id), col(DocumentChangeRow.acl_groups)).where(
                    col(DocumentChangeRow.id).in_(newest)
                )
            ).all()
            acls.update(dict(rows))
    # A document we know nothing about is never pushed: unknown is not public.
    return {doc for doc, acl in acls.items() if can_read(groups, acl or ())}


def last_digest(engine: Engine, platform: str, user_id: str) -> PushDeliveryRow | None:
    """The newest digest whose window is consumed (its end is where the next window starts)."""
    query = (
        select(PushDeliveryRow)
        .where(col(PushDeliveryRow.platform) == platform, col(PushDeliveryRow.user_id) == user_id)
        .where(col(PushDeliveryRow.kind) == "digest", col(PushDeliveryRow.state).in_(WINDOW_DONE))
        .order_by(col(PushDeliveryRow.window_end).desc())
        .limit(1)
    )
    with Session(engine) as session:
        return session.execute(query).scalars().first()


def last_sent_digest_end(engine: Engine, platform: str, user_id: str) -> datetime | None:
    query = select(func.max(col(PushDeliveryRow.window_end))).where(
        col(PushDeliveryRow.platform) == platform,
        col(PushDeliveryRow.user_id) == user_id,
        col(PushDeliveryRow.kind) == "digest",
        col(PushDeliveryRow.state) == "sent",
    )
    with Session(engine) as session:
        value = session.execute(query).scalar_one_or_none()
    return as_utc(value) if value is not None else None


def ignored_streak(engine: Engine, platform: str, user_id: str, *, before: datetime, limit: int = 20) -> int:
    """How many of the person's newest sent digests (sent before `before`) went unclicked in a row.

    A click on anything pushed (digest or notice) ends the streak.
    """
    query = (
        select(col(PushDeliveryRow.kind), col(PushDeliveryRow.clicked_at))
        .where(col(PushDeliveryRow.platform) == platform, col(PushDeliveryRow.user_id) == user_id)
        .where(col(PushDeliveryRow.state) == "sent", col(PushDeliveryRow.sent_at) < before)
        .order_by(col(PushDeliveryRow.sent_at).desc())
        .limit(limit)
    )
    with Session(engine) as session:
        streak = 0
        for kind, clicked in session.execute(query).all():
            if clicked is not None:
                break
            streak += kind == "digest"
    return streak


def already_pushed(engine: Engine, platform: str, user_id: str) -> set[str]:
    """Documents the person was already sent (digests and notices), for the matcher's novelty."""
    query = select(col(PushDeliveryRow.documents)).where(
        col(PushDeliveryRow.platform) == platform,
        col(PushDeliveryRow.user_id) == user_id,
        col(PushDeliveryRow.state) == "sent",
    )
    with Session(engine) as session:
        return {doc for (docs,) in session.execute(query).all() for doc in docs}


def record_response(engine: Engine, key: str, document_id: str, *, action: str = "clicked") -> bool:
    """A person opened (`clicked`) or dismissed a pushed document; False when the key is unknown.

    Opening becomes a `source_click` behaviour event and dismissing a negative `feedback` event, so
    profiles learn from pushes the same way they learn from answers.
    """
    if action not in ("clicked", "dismissed"):
        raise ValueError(f"action must be clicked or dismissed, not {action!r}")
    now = utcnow()
    with session_scope(engine) as session:
        row = session.execute(
            select(PushDeliveryRow).where(col(PushDeliveryRow.key) == key)
        ).scalar_one_or_none()
        if row is None or document_id not in row.documents:
            return False
        column = PushDeliveryRow.clicked_at if action == "clicked" else PushDeliveryRow.dismissed_at
        session.execute(
            update(PushDeliveryRow).where(col(PushDeliveryRow.id) == row.id).values({column: now})
        )
        document = session.get(DocumentRow, document_id)
        uri = document.uri if document is not None else ""  # the document's own link, not the tracking one
        data: dict[str, Any] = {"via": "push", "key": key, "document_id": document_id, "uri": uri}
        if action == "dismissed":
            data["value"] = -1
        session.add(
            BehaviourEventRow(
                kind="source_click" if action == "clicked" else "feedback",
                platform=row.platform,
                user_id=row.user_id,
                channel="push",
                data=data,
                at=now,
            )
        )
    return True


def read_cursor(engine: Engine, name: str) -> int | None:
    with Session(engine) as session:
        row = session.get(PushCursorRow, name)
        return row.value if row else None


def write_cursor(engine: Engine, name: str, value: int) -> None:
    with session_scope(engine) as session:
        row = session.get(PushCursorRow, name) or PushCursorRow(name=name, updated_at=utcnow())
        row.value, row.updated_at = value, utcnow()
        session.add(row)
