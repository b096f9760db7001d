"""Fakes for the push delivery tests: a recording Sender, a fixed candidate source, a settable clock.

The Sender fake stands in for a chat platform (an outside system); everything of ours is real.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from core.db import session_scope
from core.messaging import OutgoingMessage, Receipt
from core.models import BehaviourEventRow, DigestPrefRow, DocumentChangeRow, DocumentRow, PushUserStateRow
from push.types import Candidate, Recipient

T0 = datetime(2026, 11, 25, 8, 30, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


class RecordingSender:
    """Delivers into a list; `fail` queues errors, `deliver_then_fail` simulates a lost reply."""

    def __init__(self, platform: str = "slack") -> None:
        self.platform = platform
        self.sent: list[OutgoingMessage] = []
        self.finds: list[str] = []
        self._failures: dict[str, list[BaseException]] = {}
        self._lost_replies: dict[str, list[BaseException]] = {}

    def fail(self, user_id: str, *errors: BaseException) -> None:
        self._failures.setdefault(user_id, []).extend(errors)

    def deliver_then_fail(self, user_id: str, error: BaseException) -> None:
        """The next message to `user_id` arrives, but the caller sees `error` (e.g. a timeout)."""
        self._lost_replies.setdefault(user_id, []).append(error)

    def to(self, user_id: str) -> list[OutgoingMessage]:
        return [m for m in self.sent if m.user_id == user_id]

    async def send(self, message: OutgoingMessage) -> Receipt:
        pending = self._failures.get(message.user_id)
        if pending:
            raise pending.pop(0)
        self.sent.append(message)
        lost = self._lost_replies.get(message.user_id)
        if lost:
            raise lost.pop(0)
        return Receipt(self.platform, f"D-{message.user_id}", str(len(self.sent)))

    async def find(self, user_id: str, key: str) -> Receipt | None:
        self.finds.append(key)
        for number, message in enumerate(self.sent, start=1):
            if message.key == key:
                return Receipt(self.platform, f"D-{user_id}", str(number), found=True)
        return None

    async def aclose(self) -> None:
        return None


class FixedCandidates:
    """A CandidateSource that proposes the same documents to everyone (or per person) and records calls."""

    def __init__(
        self, candidates: Sequence[Candidate] = (), per_user: Mapping[str, Sequence[Candidate]] | None = None
    ):
        self.candidates = list(candidates)
        self.per_user = dict(per_user or {})
        self.calls: list[dict[str, Any]] = []

    def match(
        self,
        recipients: Sequence[Recipient],
        *,
        since: datetime | Mapping[str, datetime],
        now: datetime,
        k: int = 5,
        already_pushed: Mapping[str, set[str]] | None = None,
    ) -> dict[str, list[Candidate]]:
        self.calls.append(
            {
                "recipients": list(recipients),
                "since": since,
                "now": now,
                "k": k,
                "already_pushed": dict(already_pushed or {}),
            }
        )
        pushed = already_pushed or {}
        return {
            r.key: [
                c
                for c in self.per_user.get(r.key, self.candidates)
                if c.document_id not in pushed.get(r.key, set())
            ][:k]
            for r in recipients
        }


def candidate(
    document_id: str, *, title: str | None = None, reason: str = "because you asked about VPN"
) -> Candidate:
    return Candidate(
        document_id=document_id,
        title=title or document_id.title(),
        uri=f"https://wiki.example/{document_id}",
        change="added",
        changed_at=T0,
        score=0.9,
        relevance=0.9,
        freshness=1.0,
        novelty=1.0,
        reason=reason,
    )


def add_document(
    engine: Engine,
    document_id: str,
    *,
    acl: Sequence[str] = (),
    tags: Sequence[str] = (),
    title: str | None = None,
    at: datetime = T0,
    content_hash: str = "h1",
) -> None:
    with session_scope(engine) as session:
        row = session.get(DocumentRow, document_id) or DocumentRow(
            id=document_id,
            source="wiki",
            uri=f"https://wiki.example/{document_id}",
            title=title or document_id,
            content_hash=content_hash,
            acl_groups=list(acl),
            tags=list(tags),
            updated_at=at,
            ingested_at=at,
        )
        row.acl_groups, row.tags, row.content_hash, row.title = (
            list(acl),
            list(tags),
            content_hash,
            title or row.title,
        )
        session.add(row)


def log_change(
    engine: Engine,
    document_id: str,
    kind: str,
    *,
    at: datetime,
    acl: Sequence[str] = (),
    tags: Sequence[str] = (),
    title: str | None = None,
    content_hash: str = "h1",
    text_hash: str = "",
) -> None:
    with session_scope(engine) as session:
        session.add(
            DocumentChangeRow(
                text_hash=text_hash,
                document_id=document_id,
                kind=kind,
                title=title or document_id,
                uri=f"https://wiki.example/{document_id}",
                content_hash=content_hash,
                acl_groups=list(acl),
                tags=list(tags),
                changed_at=at,
            )
        )


def add_user(
    engine: Engine,
    user_id: str,
    *,
    cadence: str = "daily",
    platform: str = "slack",
    timezone: str = "UTC",
    hour: int | None = None,
    seen: datetime = T0 - timedelta(days=10),
    requested_at: datetime | None = None,
    quiet: tuple[int, int] | None = (0, 0),
) -> str:
    """A person who has used the bot since `seen`; quiet hours off unless asked for."""
    with session_scope(engine) as session:
        session.add(
            DigestPrefRow(
                platform=platform,
                user_id=user_id,
                cadence=cadence,
                updated_at=seen,
                requested_at=requested_at,
            )
        )
        session.add(
            PushUserStateRow(
                platform=platform,
                user_id=user_id,
                timezone=timezone,
                digest_hour=hour,
                quiet_start=quiet[0] if quiet else None,
                quiet_end=quiet[1] if quiet else None,
                updated_at=seen,
            )
        )
    return f"{platform}:{user_id}"


def add_question(
    engine: Engine, user_id: str, text: str, *, uris: Sequence[str], at: datetime, platform: str = "slack"
) -> None:
    citations = [{"number": n, "title": u, "uri": u, "section": ""} for n, u in enumerate(uris, start=1)]
    with session_scope(engine) as session:
        session.add(
            BehaviourEventRow(
                kind="question",
                platform=platform,
                user_id=user_id,
                text=text,
                data={"citations": citations},
                at=at,
            )
        )
