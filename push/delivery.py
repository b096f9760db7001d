"""Exactly-once delivery of digests and notices through a `core.messaging.Sender`, with a delivery log.

Every message has an idempotency key. Its row in `push_deliveries` is written (state `sending`)
before the platform is called and updated after; the unique key makes a second claim of the same
(user, window) a no-op. A row left in `sending` by a crash is resolved on the next run by asking the
Sender whether a message with that key exists (`find`): found -> sent, not found -> send. A row is
taken for a retry by a compare-and-set on (state, attempts), so two processes never both resend it.

Quiet hours and the frequency cap defer a message (state `deferred`, `next_attempt_at`); transient
failures schedule a retry with exponential back-off; a recipient who is gone is recorded, not retried.
One person's slow or failing platform never holds up another's: messages go out concurrently.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

from core.db import session_scope
from core.messaging import (
    DeliveryFailed,
    MessageItem,
    OutgoingMessage,
    RateLimited,
    Receipt,
    RecipientGone,
    Sender,
)
from core.models import PushDeliveryRow, as_utc, utcnow
from core.settings import Settings
from push.cadence import in_quiet_hours, quiet_hours_end
from push.ledger import readable_documents
from push.recipients import PushUser, load_users

log = logging.getLogger(__name__)

# Published limits: Slack chat.postMessage about 1 per second per channel; Teams 7 per second per
# conversation (Bot Framework). (rate per second, burst)
PLATFORM_LIMITS: dict[str, tuple[float, float]] = {"slack": (1.0, 1.0), "teams": (7.0, 7.0)}
# Across all conversations: Teams allows 50 requests per second per app and tenant.
PLATFORM_GLOBAL: dict[str, tuple[float, float]] = {"teams": (50.0, 50.0)}
# A wait this short is spent in place; a longer one becomes a scheduled retry.
INLINE_WAIT_S = 5.0
INLINE_TRIES = 3
ORPHAN_AFTER = timedelta(minutes=10)
FINAL = ("sent", "failed", "gone", "skipped", "empty")


class TokenBucket:
    """An async token bucket: `rate` tokens per second, at most `burst` saved up."""

    def __init__(self, rate: float, burst: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self._clock = rate, burst, clock
        self._tokens, self._stamp, self._blocked_until = burst, clock(), 0.0
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = self._clock()
                self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
                self._stamp = now
                wait = max(self._blocked_until - now, (1.0 - self._tokens) / self.rate)
                if wait <= 0:
                    self._tokens -= 1.0
                    return
                await asyncio.sleep(wait)

    def block(self, seconds: float) -> None:
        """Take nothing for `seconds` (the platform said Retry-After)."""
        self._blocked_until = max(self._blocked_until, self._clock() + seconds)


class RateLimiter:
    """One token bucket per (platform, conversation) at each platform's published rate, plus one
    per platform where the platform also limits the app as a whole."""

    def __init__(
        self,
        limits: Mapping[str, tuple[float, float]] | None = None,
        *,
        global_limits: Mapping[str, tuple[float, float]] | None = None,
    ) -> None:
        self.limits = dict(PLATFORM_LIMITS if limits is None else limits)
        overall = PLATFORM_GLOBAL if global_limits is None and limits is None else global_limits or {}
        self._overall = {platform: TokenBucket(*limit) for platform, limit in overall.items()}
        self._buckets: dict[tuple[str, str], TokenBucket] = {}

    def _bucket(self, platform: str, channel: str) -> TokenBucket | None:
        if platform not in self.limits:
            return None
        key = (platform, channel)
        if key not in self._buckets:
            self._buckets[key] = TokenBucket(*self.limits[platform])
        return self._buckets[key]

    async def acquire(self, platform: str, channel: str) -> None:
        bucket = self._bucket(platform, channel)
        if bucket is not None:
            await bucket.acquire()
        if platform in self._overall:
            await self._overall[platform].acquire()

    def block(self, platform: str, channel: str, seconds: float) -> None:
        bucket = self._bucket(platform, channel)
        if bucket is not None:
            bucket.block(seconds)


@dataclass(frozen=True)
class Draft:
    """A message to record and send: the key names its (user, window); `explicit` skips quiet hours."""

    key: str
    kind: str
    user: PushUser
    window_end: datetime
    title: str
    items: tuple[MessageItem, ...]
    window_start: datetime | None = None
    footer: str = ""
    explicit: bool = False


def message_of(row: PushDeliveryRow) -> OutgoingMessage:
    data = row.message
    items = tuple(MessageItem(**item) for item in data.get("items", []))
    return OutgoingMessage(
        platform=row.platform, user_id=row.user_id, key=row.key, kind=row.kind,
        title=str(data.get("title", "")), items=items, footer=str(data.get("footer", "")),
    )  # fmt: skip


class Dispatcher:
    """Records and sends drafts, resumes interrupted or deferred ones; the delivery log's only writer."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        senders: Mapping[str, Sender],
        *,
        limiter: RateLimiter | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.engine, self.settings, self.senders = engine, settings, senders
        self.limiter = limiter or RateLimiter()
        self.clock = clock
        self._slots = asyncio.Semaphore(settings.push.concurrency)

    async def submit_all(self, drafts: Sequence[Draft]) -> list[str]:
        """Submit concurrently; a failure in one never stops the others (it is logged and recorded)."""
        return list(await asyncio.gather(*(self._guarded(self.submit, d) for d in drafts)))

    async def submit(self, draft: Draft) -> str:
        """Record and (unless held) send one draft; returns the row's state, or 'duplicate'."""
        now = self.clock()
        readable = readable_documents(
            self.engine, draft.user.recipient.groups, [i.document_id for i in draft.items]
        )
        items = tuple(item for item in draft.items if item.document_id in readable)
        if not items:
            state = "empty" if draft.kind == "digest" else "skipped"
            claimed = self._claim(draft, items, state, now, reason="nothing readable to send")
            return state if claimed else "duplicate"
        hold, reason = (None, "") if draft.explicit else self._hold(draft.user, now)
        if hold is not None:
            claimed = self._claim(draft, items, "deferred", now, reason=reason, next_attempt_at=hold)
            return "deferred" if claimed else "duplicate"
        if not self._claim(draft, items, "sending", now, attempts=1):
            return "duplicate"
        row = self._row(draft.key)
        return await self._deliver(row, check_first=False)

    async def resume(
        self, *, orphans_before: datetime | None = None, only: set[str] | None = None
    ) -> list[str]:
        """Send what is due again: retries, deferred messages, and `sending` rows a crash left behind."""
        now = self.clock()
        cutoff = orphans_before or now - ORPHAN_AFTER
        query = select(PushDeliveryRow).where(
            or_(
                col(PushDeliveryRow.state).in_(("retry", "deferred"))
                & (col(PushDeliveryRow.next_attempt_at) <= now),
                (col(PushDeliveryRow.state) == "sending") & (col(PushDeliveryRow.updated_at) < cutoff),
            )
        )
        with Session(self.engine) as session:
            rows = list(session.execute(query.order_by(col(PushDeliveryRow.id))).scalars())
        if only is not None:
            rows = [r for r in rows if f"{r.platform}:{r.user_id}" in only]
        return list(await asyncio.gather(*(self._guarded(self._resume_one, r) for r in rows)))

    async def _resume_one(self, row: PushDeliveryRow) -> str:
        now = self.clock()
        if row.state == "deferred":
            users = load_users(self.engine, self.settings, only=[f"{row.platform}:{row.user_id}"])
            if users[0].opted_out:  # they turned push off while it waited
                return self._set(row.id, "skipped", now, reason="the person turned push off")
            hold, reason = self._hold(users[0], now)
            if hold is not None:
                self._set(row.id, "deferred", now, reason=reason, next_attempt_at=hold)
                return "deferred"
        if not self._take(row, now):
            return "taken"  # another process got there first
        row = self._row(row.key)
        # Anything attempted before may have reached the platform without our record of it.
        return await self._deliver(row, check_first=row.attempts > 1)

    async def _deliver(self, row: PushDeliveryRow, *, check_first: bool) -> str:
        assert row.id is not None
        sender = self.senders.get(row.platform)
        if sender is None:
            return self._set(
                row.id, "failed", self.clock(), reason=f"no sender for platform {row.platform!r}"
            )
        message = message_of(row)
        (person,) = load_users(self.engine, self.settings, only=[f"{row.platform}:{row.user_id}"])
        groups = person.recipient.groups
        readable = readable_documents(self.engine, groups, [i.document_id for i in message.items])
        if len(readable) < len(message.items):  # access changed while it waited: send only what is readable
            message = _only(message, readable)
            if not message.items:
                return self._set(row.id, "skipped", self.clock(), reason="nothing readable any more")
        for attempt in range(INLINE_TRIES):
            if check_first:
                receipt = await sender.find(row.user_id, row.key)
                if receipt is not None:
                    return self._sent(row.id, receipt, found=True)
            try:
                await self.limiter.acquire(row.platform, row.user_id)
                return self._sent(row.id, await sender.send(message))
            except RecipientGone as exc:
                return self._set(row.id, "gone", self.clock(), reason=exc.message)
            except RateLimited as exc:
                self.limiter.block(row.platform, row.user_id, exc.retry_after)
                wait, retryable, reason, check_first = exc.retry_after, True, exc.message, False
            except DeliveryFailed as exc:
                wait, retryable, reason = self._backoff(row.attempts + attempt), exc.retryable, exc.message
                check_first = True  # a timeout may have delivered it
            except Exception as exc:  # a bug in an adapter: retried later, and counted, like an outage
                log.exception("push: the %s sender failed unexpectedly", row.platform)
                wait, retryable, reason = self._backoff(row.attempts + attempt), True, type(exc).__name__
                check_first = True
            if not retryable or row.attempts + attempt >= self.settings.push.max_attempts:
                return self._set(row.id, "failed", self.clock(), reason=reason)
            if wait > INLINE_WAIT_S or attempt == INLINE_TRIES - 1:
                break
            self._bump(row.id, reason)
            await asyncio.sleep(wait)
        retry_at = self.clock() + timedelta(seconds=max(wait, 1.0))
        return self._set(row.id, "retry", self.clock(), reason=reason, next_attempt_at=retry_at)

    def _backoff(self, attempts: int) -> float:
        return float(self.settings.push.retry_base_s * 2 ** max(0, attempts - 1))

    def _hold(self, user: PushUser, now: datetime) -> tuple[datetime | None, str]:
        """When the message must wait (quiet hours, frequency cap), until when and why."""
        if in_quiet_hours(now, user.zone, user.quiet_start, user.quiet_end):
            return quiet_hours_end(now, user.zone, user.quiet_end), "quiet hours"
        day_ago = now - timedelta(days=1)
        query = select(func.count(), func.min(col(PushDeliveryRow.sent_at))).where(
            col(PushDeliveryRow.platform) == user.recipient.platform,
            col(PushDeliveryRow.user_id) == user.recipient.user_id,
            col(PushDeliveryRow.state) == "sent",
            col(PushDeliveryRow.sent_at) > day_ago,
        )
        with Session(self.engine) as session:
            count, oldest = session.execute(query).one()
        if count < self.settings.push.max_per_day or oldest is None:
            return None, ""
        return as_utc(oldest) + timedelta(days=1), f"frequency cap ({self.settings.push.max_per_day} a day)"

    async def _guarded(self, step: Callable[[Any], Awaitable[str]], arg: Any) -> str:
        async with self._slots:
            try:
                return await step(arg)
            except Exception:
                log.exception("push delivery step failed; the others go on")
                return "error"

    # -- the delivery log --------------------------------------------------------------------

    def _claim(
        self,
        draft: Draft,
        items: tuple[MessageItem, ...],
        state: str,
        now: datetime,
        *,
        attempts: int = 0,
        reason: str = "",
        next_attempt_at: datetime | None = None,
    ) -> bool:
        recipient = draft.user.recipient
        message = {
            "title": draft.title,
            "footer": draft.footer,
            "items": [asdict(i) for i in items],
        }
        row = PushDeliveryRow(
            key=draft.key, kind=draft.kind, platform=recipient.platform, user_id=recipient.user_id,
            window_start=draft.window_start, window_end=draft.window_end, state=state, attempts=attempts,
            reason=reason, documents=[i.document_id for i in items], message=message, created_at=now,
            updated_at=now, next_attempt_at=next_attempt_at,
        )  # fmt: skip
        try:
            with session_scope(self.engine) as session:
                session.add(row)
        except IntegrityError:
            return False
        return True

    def _row(self, key: str) -> PushDeliveryRow:
        with Session(self.engine) as session:
            row: PushDeliveryRow = session.execute(
                select(PushDeliveryRow).where(col(PushDeliveryRow.key) == key)
            ).scalar_one()
            return row

    def _take(self, row: PushDeliveryRow, now: datetime) -> bool:
        """Compare-and-set (state, attempts) -> (sending, attempts + 1): exactly one taker wins."""
        statement = (
            update(PushDeliveryRow)
            .where(col(PushDeliveryRow.id) == row.id, col(PushDeliveryRow.state) == row.state)
            .where(col(PushDeliveryRow.attempts) == row.attempts)
            .values(state="sending", attempts=row.attempts + 1, updated_at=now)
        )
        with session_scope(self.engine) as session:
            return bool(session.execute(statement).rowcount)  # type: ignore[attr-defined]

    def _bump(self, row_id: int, reason: str) -> None:
        statement = (
            update(PushDeliveryRow)
            .where(col(PushDeliveryRow.id) == row_id)
            .values(attempts=PushDeliveryRow.attempts + 1, reason=reason[:500], updated_at=self.clock())
        )
        with session_scope(self.engine) as session:
            session.execute(statement)

    def _sent(self, row_id: int, receipt: Receipt, *, found: bool = False) -> str:
        return self._set(
            row_id, "sent", self.clock(), reason="found after a restart" if found else "",
            channel=receipt.channel[:200], message_id=receipt.message_id[:200], sent_at=self.clock(),
        )  # fmt: skip

    def _set(self, row_id: int | None, state: str, now: datetime, **values: Any) -> str:
        if "reason" in values:
            values["reason"] = str(values["reason"])[:500]
        if state in FINAL:
            values.setdefault("next_attempt_at", None)
        statement = (
            update(PushDeliveryRow)
            .where(col(PushDeliveryRow.id) == row_id)
            .values(state=state, updated_at=now, **values)
        )
        with session_scope(self.engine) as session:
            session.execute(statement)
        if state in ("failed", "gone"):
            log.warning("push %s: %s (%s)", row_id, state, values.get("reason", ""))
        return state


def _only(message: OutgoingMessage, readable: set[str]) -> OutgoingMessage:
    items = tuple(i for i in message.items if i.document_id in readable)
    return OutgoingMessage(
        platform=message.platform, user_id=message.user_id, key=message.key, kind=message.kind,
        title=message.title, items=items, footer=message.footer,
    )  # fmt: skip
