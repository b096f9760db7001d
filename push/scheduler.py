"""The push scheduler: APScheduler (AsyncIOScheduler) with its jobs in the database, run by one leader.

Jobs (table `push_scheduler_jobs`, APScheduler's SQLAlchemyJobStore):

- `digest:<platform>:<user>`: a CronTrigger per person at their digest hour in their IANA time zone
  (daily, or weekly on `KB_PUSH_DIGEST_WEEKDAY`); `coalesce=True` and no misfire grace limit, so
  after downtime each person's missed slots run once, as one catch-up digest.
- `push:sweep`: every `KB_PUSH_SWEEP_S` seconds: retries and deferred messages, `digest now`
  requests, immediate notices, and keeping the per-person jobs in step with their preferences.

Several replicas may run `kb serve`; one of them leads (holds the lock) and runs the scheduler,
the others try to take over every `poll_s` seconds. PostgreSQL: a session-level advisory lock on a
connection held open (it dies with the process, so a crashed leader is replaced at once).
SQLite: an exclusive `fcntl` lock on a file next to the database (also released by the kernel).

    service = PushService(engine, settings, source=matcher, senders={"slack": slack_sender})
    scheduler = PushScheduler(service)
    await scheduler.start()      # leader or follower; safe on every replica
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore  # type: ignore[import-untyped]
from apscheduler.schedulers.asyncio import AsyncIOScheduler  # type: ignore[import-untyped]
from apscheduler.triggers.cron import CronTrigger  # type: ignore[import-untyped]
from apscheduler.triggers.interval import IntervalTrigger  # type: ignore[import-untyped]
from sqlalchemy import Connection, Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from core.db import make_engine
from core.messaging import Sender
from core.models import utcnow
from core.settings import Settings
from push.delivery import Dispatcher, RateLimiter
from push.digest import CandidateSource, DigestReport, DigestRunner
from push.notices import NoticeReport, NoticeRunner
from push.recipients import PushUser, load_users

log = logging.getLogger(__name__)

JOB_TABLE = "push_scheduler_jobs"
SWEEP_JOB = "push:sweep"
SYNC_EVERY_S = 300.0  # per-person jobs follow preference changes within this long
_ACTIVE: PushScheduler | None = None  # the leading scheduler, for the job functions APScheduler calls


class PushService:
    """Everything a push pass needs, wired once: delivery, digests and notices over one database."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        *,
        source: CandidateSource,
        senders: Mapping[str, Sender],
        limiter: RateLimiter | None = None,
        clock: Any = utcnow,
    ) -> None:
        self.engine, self.settings, self.senders = engine, settings, senders
        self.dispatcher = Dispatcher(engine, settings, senders, limiter=limiter, clock=clock)
        self.digests = DigestRunner(engine, settings, source, self.dispatcher, clock=clock)
        self.notices = NoticeRunner(engine, settings, self.dispatcher, clock=clock)

    async def sweep(self) -> dict[str, Any]:
        """The periodic pass: resume what is due, answer `digest now`, send immediate notices.

        Each step is on its own: a failing one (say, the matcher) is logged and the others still run.
        """
        steps: dict[str, Callable[[], Awaitable[Any]]] = {
            "resumed": self.dispatcher.resume,
            "digests": lambda: self.digests.run(scheduled=False, requested=True),
            "notices": self.notices.run,
        }
        done: dict[str, Any] = {}
        for name, step in steps.items():
            try:
                done[name] = await step()
            except Exception:
                log.exception("push sweep: %s failed; the other steps go on", name)
        return done

    async def run_user(self, user_key: str) -> DigestReport:
        """A person's digest slot came (their CronTrigger fired)."""
        return await self.digests.run(only=[user_key], scheduled=True, requested=True)

    async def run_now(
        self, *, only: list[str] | None = None, dry_run: bool = False
    ) -> tuple[list[str], DigestReport, NoticeReport]:
        """`kb push run-now`: everything due now (named people: a digest now, due or not)."""
        resumed = [] if dry_run else await self.dispatcher.resume(only=set(only) if only else None)
        digests = await self.digests.run(only=only, force=bool(only), dry_run=dry_run)
        notices = await self.notices.run(dry_run=dry_run) if not only else NoticeReport()
        return resumed, digests, notices

    async def aclose(self) -> None:
        for sender in self.senders.values():
            with contextlib.suppress(Exception):
                await sender.aclose()


# -- leader election ---------------------------------------------------------------------------


class LeaderLock(Protocol):
    def acquire(self) -> bool: ...

    def holds(self) -> bool: ...

    def release(self) -> None: ...


class FileLeaderLock:
    """An exclusive, non-blocking `flock` on a file: one holder per machine (SQLite is one machine)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> bool:
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def holds(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class PostgresLeaderLock:
    """`pg_try_advisory_lock` on a connection kept open.

    The key comes from the database and schema names as the server reports them, so replicas whose
    URLs are spelled differently (host alias, password) still contend for the same lock.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.key: int | None = None
        self._connection: Connection | None = None

    def acquire(self) -> bool:
        if self._connection is not None:
            return self.holds()
        connection = self.engine.connect()
        try:
            where = connection.execute(text("select current_database(), current_schema()")).one()
            digest = hashlib.sha256(f"kb-push-leader:{where[0]}:{where[1]}".encode()).digest()
            self.key = int.from_bytes(digest[:8], "big", signed=True)
            won = bool(connection.execute(text("select pg_try_advisory_lock(:k)"), {"k": self.key}).scalar())
            connection.commit()
        except SQLAlchemyError:
            connection.close()
            raise
        if not won:
            connection.close()
            return False
        self._connection = connection
        return True

    def holds(self) -> bool:
        """False once the lock's connection is gone (then the lock is gone too)."""
        if self._connection is None:
            return False
        try:
            self._connection.execute(text("select 1"))
            self._connection.commit()
        except SQLAlchemyError:
            self._drop()
            return False
        return True

    def release(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(SQLAlchemyError):
                self._connection.execute(text("select pg_advisory_unlock(:k)"), {"k": self.key})
                self._connection.commit()
            self._drop()

    def _drop(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(SQLAlchemyError):
                self._connection.close()
            self._connection = None


def leader_lock(engine: Engine, settings: Settings) -> LeaderLock:
    if not settings.is_sqlite:
        return PostgresLeaderLock(engine)
    database = make_url(settings.database_url).database
    if database and database != ":memory:":
        return FileLeaderLock(Path(database).with_name(Path(database).name + ".push-leader.lock"))
    return FileLeaderLock(settings.data_dir / "push-leader.lock")


# -- the scheduler -------------------------------------------------------------------------------


async def _sweep_job() -> None:
    if _ACTIVE is not None:
        await _ACTIVE.service.sweep()
        _ACTIVE.sync_jobs_every(SYNC_EVERY_S)


async def _digest_job(user_key: str, spec: str = "") -> None:
    if _ACTIVE is not None:
        await _ACTIVE.service.run_user(user_key)


def job_spec(user: PushUser) -> str | None:
    """What a person's digest job looks like; None when they get no scheduled digest."""
    if user.cadence not in ("daily", "weekly"):
        return None
    day = f"|{user.weekday}" if user.cadence == "weekly" else ""
    return f"{user.cadence}|{user.hour}{day}|{user.zone.key}"


def _trigger(user: PushUser) -> CronTrigger:
    if user.cadence == "weekly":
        return CronTrigger(day_of_week=user.weekday, hour=user.hour, minute=0, timezone=user.zone)
    return CronTrigger(hour=user.hour, minute=0, timezone=user.zone)


class PushScheduler:
    """Leader election around an AsyncIOScheduler; `start` on every replica, `stop` on shutdown."""

    def __init__(self, service: PushService, *, lock: LeaderLock | None = None, poll_s: float = 15.0) -> None:
        self.service, self.poll_s = service, poll_s
        self.lock = lock or leader_lock(service.engine, service.settings)
        self.scheduler: AsyncIOScheduler | None = None
        self._watch: asyncio.Task[None] | None = None
        self._lock_call: asyncio.Future[bool] | None = None
        self._synced_at: float | None = None
        self.leader_since: datetime | None = None

    @property
    def is_leader(self) -> bool:
        return self.scheduler is not None

    async def _locked(self, call: Callable[[], bool]) -> bool:
        """Run a lock call in a thread; `stop` waits for one in flight, so none outlives the scheduler."""
        self._lock_call = asyncio.ensure_future(asyncio.to_thread(call))
        return await asyncio.shield(self._lock_call)

    async def start(self) -> None:
        if await self._locked(self.lock.acquire):
            await self._lead()
        self._watch = asyncio.create_task(self._watch_loop(), name="push-leader-watch")

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None
        if self._lock_call is not None:
            with contextlib.suppress(Exception):
                await self._lock_call  # an acquire still running in its thread may yet win the lock
        await self._step_down()

    async def _watch_loop(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                if self.is_leader and not await self._locked(self.lock.holds):
                    log.warning("push: lost the scheduler lock; stepping down")
                    await self._step_down()
                elif not self.is_leader and await self._locked(self.lock.acquire):
                    await self._lead()
            except (SQLAlchemyError, OSError) as exc:
                log.warning("push: leader check failed: %s", exc)

    async def _lead(self) -> None:
        global _ACTIVE
        started = utcnow()
        self.leader_since = started
        _ACTIVE = self
        log.info("push: this replica leads the scheduler")
        # Anything a previous leader left in `sending` is resolved before new work starts.
        await self.service.dispatcher.resume(orphans_before=started)
        # Its own engine: APScheduler disposes the job store's engine at shutdown.
        store = SQLAlchemyJobStore(engine=make_engine(self.service.settings), tablename=JOB_TABLE)
        scheduler = AsyncIOScheduler(
            jobstores={"default": store},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone=UTC,
        )
        scheduler.add_job(
            _sweep_job, IntervalTrigger(seconds=self.service.settings.push.sweep_s), id=SWEEP_JOB,
            replace_existing=True, next_run_time=datetime.now(UTC),
        )  # fmt: skip
        scheduler.start()
        self.scheduler = scheduler
        self.sync_jobs_every(0)
        # Slots missed while no leader ran (downtime): one catch-up digest per person.
        await self.service.digests.run(scheduled=True, requested=True)

    async def _step_down(self) -> None:
        global _ACTIVE
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
            self.scheduler = None
        if _ACTIVE is self:
            _ACTIVE = None
        await asyncio.to_thread(self.lock.release)

    def sync_jobs_every(self, seconds: float) -> int:
        """`sync_jobs`, at most once per `seconds` (it reads every person and every job)."""
        now = asyncio.get_running_loop().time()
        if self._synced_at is not None and now - self._synced_at < seconds:
            return 0
        self._synced_at = now
        return self.sync_jobs()

    def sync_jobs(self) -> int:
        """Make the per-person digest jobs match the preferences; returns how many changed."""
        if self.scheduler is None:
            return 0
        current = {job.id: job.kwargs.get("spec") for job in self.scheduler.get_jobs() if job.id != SWEEP_JOB}
        changed = 0
        wanted: set[str] = set()
        for user in load_users(self.service.engine, self.service.settings):
            spec, job_id = job_spec(user), f"digest:{user.key}"
            if spec is None:
                continue
            wanted.add(job_id)
            if current.get(job_id) != spec:
                self.scheduler.add_job(
                    _digest_job, _trigger(user), id=job_id, kwargs={"user_key": user.key, "spec": spec},
                    replace_existing=True,
                )  # fmt: skip
                changed += 1
        for job_id in set(current) - wanted:
            self.scheduler.remove_job(job_id)
            changed += 1
        return changed
