"""Immediate notices: an answer a person got is out of date, or an urgent document is out on their topic.

Reads the `document_changes` log from a cursor (`push_cursors.notices`); on the first run the
cursor starts at the log's end, so history is never replayed as news.

*Material* change (what earns an invalidation notice): the document was deleted; or its title
changed; or its headings or text changed (the log's `text_hash`, migration 0010). An edit that
only touches tags, the ACL or links is not material: metadata edits are common (a re-tag of a
folder would otherwise notify everyone). For changes logged before migration 0010 (no text hash)
the rule falls back to: the content hash changed while tags and ACL stayed the same. A person who
lost access gets nothing about the document.

Who gets an invalidation: everyone who received an answer citing the document in the last
`KB_PUSH_NOTICE_DAYS` days before the change. Urgent documents (a tag in `KB_PUSH_URGENT_TAGS`)
go to people subscribed to a topic that is one of the document's other tags or a word of its
title. Both kinds skip people whose cadence is `off` and go through delivery, which applies quiet
hours, the frequency cap and the access check.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, select
from sqlmodel import Session, col

from core.messaging import MessageItem
from core.models import BehaviourEventRow, DocumentChangeRow, SubscriptionRow, as_utc, utcnow
from core.settings import Settings
from push.delivery import Dispatcher, Draft
from push.ledger import read_cursor, write_cursor
from push.recipients import PushUser, load_users

CURSOR = "notices"


@dataclass(frozen=True)
class _Answer:
    user: str
    at: datetime
    question: str


@dataclass
class NoticeReport:
    changes: int = 0
    outcomes: list[dict[str, Any]] = field(default_factory=list)


class NoticeRunner:
    """Turns new entries of the change log into notices for the people they concern."""

    def __init__(
        self, engine: Engine, settings: Settings, dispatcher: Dispatcher | None, *, clock: Any = utcnow
    ) -> None:
        self.engine, self.settings, self.dispatcher, self.clock = engine, settings, dispatcher, clock

    async def run(self, *, dry_run: bool = False, limit: int = 1000) -> NoticeReport:
        cursor = read_cursor(self.engine, CURSOR)
        if cursor is None:
            with Session(self.engine) as session:
                newest = session.execute(select(func.max(col(DocumentChangeRow.id)))).scalar_one_or_none()
            if not dry_run:
                write_cursor(self.engine, CURSOR, newest or 0)
            return NoticeReport()
        with Session(self.engine) as session:
            changes = list(
                session.execute(
                    select(DocumentChangeRow)
                    .where(col(DocumentChangeRow.id) > cursor)
                    .order_by(col(DocumentChangeRow.id))
                    .limit(limit)
                ).scalars()
            )
        if not changes:
            return NoticeReport()
        drafts = self.drafts(changes)
        if dry_run or self.dispatcher is None:
            states = ["dry-run"] * len(drafts)
        else:
            states = await self.dispatcher.submit_all(drafts)
            # Rows are claimed by key before the cursor moves: a crash here re-plans the same keys.
            write_cursor(self.engine, CURSOR, max(c.id or 0 for c in changes))
        report = NoticeReport(changes=len(changes))
        for draft, state in zip(drafts, states, strict=True):
            report.outcomes.append(
                {"user": draft.user.key, "key": draft.key, "state": state, "title": draft.title}
            )
        return report

    def drafts(self, changes: list[DocumentChangeRow]) -> list[Draft]:
        users = {u.key: u for u in load_users(self.engine, self.settings) if not u.opted_out}
        newest: dict[str, DocumentChangeRow] = {}
        for change in changes:
            newest[change.document_id] = change  # several edits in one batch: one notice, the last
        answers = self._answers(min(as_utc(c.changed_at) for c in changes))
        drafts: dict[str, Draft] = {}
        for change in newest.values():
            if change.kind in ("updated", "deleted"):
                for draft in self._invalidations(change, users, answers):
                    drafts.setdefault(draft.key, draft)
            if change.kind != "deleted" and self._is_urgent(change):
                for draft in self._urgent(change, users):
                    drafts.setdefault(draft.key, draft)
        return list(drafts.values())

    def _answers(self, earliest_change: datetime) -> dict[str, list[_Answer]]:
        """Answers of the last N days, by the cited document's URI (anchors stripped)."""
        since = earliest_change - timedelta(days=self.settings.push.notice_days)
        query = select(BehaviourEventRow).where(
            col(BehaviourEventRow.kind) == "question", col(BehaviourEventRow.at) >= since
        )
        by_uri: dict[str, list[_Answer]] = defaultdict(list)
        with Session(self.engine) as session:
            for event in session.execute(query).scalars():
                for citation in event.data.get("citations", []):
                    uri = str(citation.get("uri", "")).split("#", 1)[0]
                    answer = _Answer(f"{event.platform}:{event.user_id}", as_utc(event.at), event.text)
                    by_uri[uri].append(answer)
        return by_uri

    def _invalidations(
        self, change: DocumentChangeRow, users: dict[str, PushUser], answers: dict[str, list[_Answer]]
    ) -> list[Draft]:
        what = self._what_changed(change)
        if what is None:
            return []
        changed_at = as_utc(change.changed_at)
        window = timedelta(days=self.settings.push.notice_days)
        latest: dict[str, _Answer] = {}
        for answer in answers.get(change.uri.split("#", 1)[0], []):
            fresh = changed_at - window <= answer.at <= changed_at and answer.user in users
            if fresh and (answer.user not in latest or latest[answer.user].at < answer.at):
                latest[answer.user] = answer
        removed = change.kind == "deleted"
        title = "A document an answer of yours cited was " + ("removed" if removed else "updated")
        drafts = []
        for user_key, answer in sorted(latest.items()):
            asked = f"“{answer.question[:80]}”" if answer.question else "a question"
            note = f"{what}; it was cited when you asked {asked} on {answer.at:%Y-%m-%d}"
            item = MessageItem(change.document_id, change.title, "" if removed else change.uri, note)
            drafts.append(
                Draft(
                    key=f"notice:{user_key}:{change.document_id}:{change.id}",
                    kind="notice",
                    user=users[user_key],
                    window_end=changed_at,
                    title=title,
                    items=(item,),
                    footer="The answer you got may be out of date; ask again for a fresh one.",
                )
            )
        return drafts

    def _what_changed(self, change: DocumentChangeRow) -> str | None:
        """A short description of a material change, or None when the change is not material."""
        when = f"{as_utc(change.changed_at):%Y-%m-%d}"
        if change.kind == "deleted":
            return f"removed on {when}"
        with Session(self.engine) as session:
            previous = session.execute(
                select(DocumentChangeRow)
                .where(col(DocumentChangeRow.document_id) == change.document_id)
                .where(col(DocumentChangeRow.id) < change.id)
                .order_by(col(DocumentChangeRow.id).desc())
                .limit(1)
            ).scalar_one_or_none()
        if previous is None:
            return f"updated on {when}"
        if previous.content_hash == change.content_hash:
            return None
        if previous.title != change.title:
            return f"renamed from “{previous.title}” and updated on {when}"
        if previous.text_hash and change.text_hash:  # both logged since migration 0010
            return None if previous.text_hash == change.text_hash else f"its text changed on {when}"
        metadata_only = (sorted(previous.tags), sorted(previous.acl_groups)) != (
            sorted(change.tags),
            sorted(change.acl_groups),
        )
        return None if metadata_only else f"its text changed on {when}"

    def _is_urgent(self, change: DocumentChangeRow) -> bool:
        urgent = {t.casefold() for t in self.settings.push.urgent_tags}
        return any(tag.casefold() in urgent for tag in change.tags)

    def _urgent(self, change: DocumentChangeRow, users: dict[str, PushUser]) -> list[Draft]:
        urgent = {t.casefold() for t in self.settings.push.urgent_tags}
        topics = {t.casefold() for t in change.tags} - urgent
        words = set(change.title.casefold().replace("-", " ").split())
        with Session(self.engine) as session:
            subscriptions = list(session.execute(select(SubscriptionRow)).scalars())
        matched: dict[str, str] = {}
        for sub in subscriptions:
            topic = sub.topic.casefold()
            if topic in topics or topic in words or (" " in topic and topic in change.title.casefold()):
                matched.setdefault(f"{sub.platform}:{sub.user_id}", sub.topic)
        verb = "new" if change.kind == "added" else "updated"
        marked = ", ".join(sorted(t for t in change.tags if t.casefold() in urgent))
        drafts = []
        for user_key, topic in sorted(matched.items()):
            if user_key not in users:
                continue
            note = f"{verb}, marked {marked}; you follow “{topic}”"
            drafts.append(
                Draft(
                    key=f"urgent:{user_key}:{change.document_id}:{change.content_hash[:16]}",
                    kind="notice",
                    user=users[user_key],
                    window_end=as_utc(change.changed_at),
                    title=f"Urgent: {change.title}",
                    items=(MessageItem(change.document_id, change.title, change.uri, note),),
                )
            )
        return drafts
