"""Digests: for each person whose slot is due (or who asked), the best new documents since their last one.

A digest's idempotency key names its person and window: `digest:slack:U1:2026-11-28T08:00Z` for the
slot at 09:00 Berlin time, `digest:slack:U1:now:<requested_at>` for `digest now`. Planning skips any
key already in the delivery log, so running the same pass twice (a restart, two triggers for one
slot, a catch-up after downtime) yields one digest. After downtime only the newest missed slot is
planned, and its window starts where the last digest ended: one catch-up digest, nothing lost.

Candidates come from a `CandidateSource` (push.matching.Matcher in production); they are filtered
by the recipient's access groups again at delivery, whatever the source returned.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Engine, select
from sqlmodel import Session, col

from core.messaging import MessageItem
from core.models import PushDeliveryRow, as_utc, utcnow
from core.settings import Settings
from push.cadence import due_after_backoff, latest_slot, period, slot_label
from push.delivery import Dispatcher, Draft
from push.ledger import already_pushed, ignored_streak, last_digest, last_sent_digest_end
from push.links import link_secret, signed_query
from push.recipients import PushUser, load_users, store_backoff
from push.types import Candidate, Recipient

MAX_BACKOFF = 3
REQUEST_TTL = timedelta(days=1)  # a `digest now` older than this is stale, not owed
FOOTER = "Reply `digest weekly` for fewer of these, or `digest off` to stop them."


class CandidateSource(Protocol):
    """What the digest asks for documents: push.matching.Matcher has this shape."""

    def match(
        self,
        recipients: Sequence[Recipient],
        *,
        since: datetime | Mapping[str, datetime],
        now: datetime,
        k: int = 5,
        already_pushed: Mapping[str, set[str]] | None = None,
    ) -> dict[str, list[Candidate]]: ...


@dataclass(frozen=True)
class Plan:
    """One digest to build: whose, which window, and why now (scheduled, requested or forced)."""

    user: PushUser
    key: str
    since: datetime
    until: datetime
    trigger: str

    @property
    def explicit(self) -> bool:
        return self.trigger in ("requested", "forced")


@dataclass
class Outcome:
    user: str
    key: str
    trigger: str
    state: str
    items: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class DigestReport:
    outcomes: list[Outcome] = field(default_factory=list)
    problems: dict[str, list[str]] = field(default_factory=dict)

    def count(self, state: str) -> int:
        return sum(1 for o in self.outcomes if o.state == state)


class DigestRunner:
    """Plans due digests, asks the candidate source for their documents, and hands them to delivery."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        source: CandidateSource,
        dispatcher: Dispatcher | None,
        *,
        clock: Any = utcnow,
    ) -> None:
        self.engine, self.settings, self.source, self.dispatcher = engine, settings, source, dispatcher
        self.clock = clock
        self._secret: bytes | None = None  # the push-link key, read on the first link (push/links.py)
        self._secret_read = False

    async def run(
        self,
        *,
        only: Iterable[str] | None = None,
        scheduled: bool = True,
        requested: bool = True,
        force: bool = False,
        dry_run: bool = False,
    ) -> DigestReport:
        """One pass: plan, match, send (unless `dry_run`). `force` gives each named person one now."""
        now = self.clock()
        users = load_users(self.engine, self.settings, only=only)
        report = DigestReport(problems={u.key: list(u.problems) for u in users if u.problems})
        plans = self.plan(users, now, scheduled=scheduled, requested=requested, force=force)
        drafts = await asyncio.to_thread(self.drafts, plans)
        if dry_run or self.dispatcher is None:
            states = ["dry-run"] * len(drafts)
        else:
            states = await self.dispatcher.submit_all(drafts)
        for plan, draft, state in zip(plans, drafts, states, strict=True):
            items = [
                {"document_id": i.document_id, "title": i.title, "url": i.url, "why": i.note}
                for i in draft.items
            ]
            report.outcomes.append(Outcome(plan.user.key, plan.key, plan.trigger, state, items))
        return report

    def plan(
        self, users: Sequence[PushUser], now: datetime, *, scheduled: bool, requested: bool, force: bool
    ) -> list[Plan]:
        """The digests due now, at most one per person; keys already in the log are never planned.

        Cheap keys first (no per-person query), one batched lookup of which exist, and only then the
        per-person reads (back-off, last window) for the few that are really due.
        """
        wanted: list[list[tuple[str, datetime, str]]] = []  # per person: (key, until, trigger) by priority
        for user in users:
            options: list[tuple[str, datetime, str]] = []
            if force:
                options.append((f"digest:{user.key}:forced:{slot_label(now)}", now, "forced"))
            elif requested and user.requested_at and now - user.requested_at <= REQUEST_TTL:
                options.append((f"digest:{user.key}:now:{user.requested_at.isoformat()}", now, "requested"))
            if scheduled and not force:
                slot = latest_slot(
                    now, cadence=user.cadence, zone=user.zone, hour=user.hour, weekday=user.weekday
                )
                # No slot when opted out; none from before the person appeared (their first is the next).
                if slot is not None and (user.first_seen is None or user.first_seen <= slot):
                    options.append((f"digest:{user.key}:{slot_label(slot)}", slot, "scheduled"))
            wanted.append(options)
        existing = self._existing([key for options in wanted for key, _, _ in options])
        plans: list[Plan] = []
        for user, options in zip(users, wanted, strict=True):
            for key, until, trigger in options:
                if key in existing or (trigger == "scheduled" and not self._due(user, until, now)):
                    continue
                plan = self._plan(user, key, until, trigger)
                if plan is not None:
                    plans.append(plan)
                    break
        return plans

    def _due(self, user: PushUser, slot: datetime, now: datetime) -> bool:
        """Adaptive cadence: every `push_ignore_limit` unclicked digests in a row double the interval.

        Only when clicks can be seen at all (links go through KB_PUSH_PUBLIC_URL); otherwise silence
        says nothing and everyone keeps their chosen cadence.
        """
        platform, user_id = user.recipient.platform, user.recipient.user_id
        backoff = 0
        if self.settings.push.public_url:
            streak = ignored_streak(self.engine, platform, user_id, before=now - timedelta(hours=12))
            backoff = min(MAX_BACKOFF, streak // self.settings.push.ignore_limit)
        if backoff != user.backoff:
            store_backoff(self.engine, platform, user_id, backoff)
        last_end = last_sent_digest_end(self.engine, platform, user_id)
        return due_after_backoff(slot, last_end, cadence=user.cadence, backoff=backoff)

    def _plan(self, user: PushUser, key: str, until: datetime, trigger: str) -> Plan | None:
        previous = last_digest(self.engine, user.recipient.platform, user.recipient.user_id)
        since = as_utc(previous.window_end) if previous is not None else until - period(user.cadence, 0)
        if since >= until:
            return None  # a later window is already done (e.g. `digest now` after this slot)
        return Plan(user, key, since, until, trigger)

    def _existing(self, keys: list[str]) -> set[str]:
        if not keys:
            return set()
        with Session(self.engine) as session:
            found = session.execute(
                select(col(PushDeliveryRow.key)).where(col(PushDeliveryRow.key).in_(keys))
            )
            return set(found.scalars())

    def drafts(self, plans: Sequence[Plan]) -> list[Draft]:
        """Ask the candidate source once for all plans that share a window end (batched scoring)."""
        by_until: dict[datetime, list[Plan]] = {}
        for plan in plans:
            by_until.setdefault(plan.until, []).append(plan)
        candidates: dict[str, list[Candidate]] = {}
        for until, group in by_until.items():
            pushed = {p.user.key: already_pushed(self.engine, *_split(p.user)) for p in group}
            candidates.update(
                self.source.match(
                    [p.user.recipient for p in group],
                    since={p.user.key: p.since for p in group},
                    now=until,
                    k=self.settings.push.digest_items,
                    already_pushed=pushed,
                )
            )
        return [self._draft(plan, candidates.get(plan.user.key, [])) for plan in plans]

    def _draft(self, plan: Plan, found: list[Candidate]) -> Draft:
        items = tuple(
            MessageItem(
                c.document_id,
                c.title,
                self._link(plan.key, c),
                _note(c),
                dismiss_url=self._link(plan.key, c, action="dismiss"),
            )
            for c in found[: self.settings.push.digest_items]
        )
        count = len(items)
        title = f"Your knowledge digest: {count} new or updated document{'s' if count != 1 else ''} for you"
        return Draft(
            key=plan.key, kind="digest", user=plan.user, window_start=plan.since, window_end=plan.until,
            title=title, items=items, footer=FOOTER, explicit=plan.explicit,
        )  # fmt: skip

    def _link(self, key: str, candidate: Candidate, *, action: str = "open") -> str:
        """The tracking link through this service (`/push/open`, `/push/dismiss`) when it has a
        public URL, signed for this person and expiring (push/links.py); otherwise the document's
        own link, and no dismiss link."""
        base = self.settings.push.public_url
        secret = self._link_secret()
        if not base or secret is None:
            return candidate.uri if action == "open" else ""
        expires = int(self.clock().timestamp() + self.settings.push.link_ttl_days * 86400)
        query = signed_query(secret, action, key, candidate.document_id, expires=expires)
        return f"{base.rstrip('/')}/push/{action}?{query}"

    def _link_secret(self) -> bytes | None:
        if not self._secret_read:
            self._secret, self._secret_read = link_secret(self.settings), True
        return self._secret


def _note(candidate: Candidate) -> str:
    change = {"added": "new", "updated": "updated", "deleted": "removed"}.get(
        candidate.change, candidate.change
    )
    return f"{change}; {candidate.reason}" if candidate.reason else change


def _split(user: PushUser) -> tuple[str, str]:
    return user.recipient.platform, user.recipient.user_id
