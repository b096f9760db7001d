"""Training's scheduled jobs in `kb serve`: tell admins about ended runs, and the scheduled refresh.

    jobs = TrainingJobs(notifier, refresher, leads=lambda: lock.acquire(), notify_s=15, refresh_s=86400)
    await jobs.start()       # on every replica; only the leader's passes do anything
    await jobs.stop()

An AsyncIOScheduler with two interval jobs (memory job store: the state that matters is in the
database, so a restart loses nothing). Every pass first asks `leads()`, the same leader election
as the push scheduler (app/server/training.py hands it in: push owns the lock and bot/push stay
apart from training), and does nothing on a follower. `max_instances=1` and `coalesce` keep one
pass of each job at a time; the refresh's first pass runs at start, then every interval.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler  # type: ignore[import-untyped]
from apscheduler.triggers.interval import IntervalTrigger  # type: ignore[import-untyped]

from training.notify import AdminNotifier
from training.refresh import Refresher

log = logging.getLogger(__name__)
NOTIFY_JOB, REFRESH_JOB = "train:notify", "train:refresh"


class TrainingJobs:
    def __init__(
        self,
        notifier: AdminNotifier | None,
        refresher: Refresher | None,
        *,
        leads: Callable[[], bool],
        notify_s: float = 15.0,
        refresh_s: float = 86400.0,
    ) -> None:
        self.notifier, self.refresher, self.leads = notifier, refresher, leads
        self.notify_s, self.refresh_s = notify_s, refresh_s
        self.scheduler: AsyncIOScheduler | None = None

    async def notify_pass(self) -> list[int]:
        """Tell the admins about ended runs, on the leader; returns the runs told."""
        if self.notifier is None or not await asyncio.to_thread(self.leads):
            return []
        try:
            return await self.notifier.finished_runs()
        except Exception:  # a broken database must not stop the job: the next pass tries again
            log.exception("telling the admins about ended training runs failed")
            return []

    async def refresh_pass(self) -> str | None:
        """The scheduled refresh, on the leader; returns what was told, or None."""
        if self.refresher is None or not await asyncio.to_thread(self.leads):
            return None
        try:
            return await self.refresher.run_once(self.notifier)
        except Exception:
            log.exception("the scheduled training refresh failed")
            return None

    async def start(self) -> None:
        scheduler = AsyncIOScheduler(
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None}, timezone=UTC
        )
        now = datetime.now(UTC)
        jobs: list[tuple[str, Any, float]] = []
        if self.notifier is not None:
            jobs.append((NOTIFY_JOB, self.notify_pass, self.notify_s))
        if self.refresher is not None:
            jobs.append((REFRESH_JOB, self.refresh_pass, self.refresh_s))
        for job_id, call, every in jobs:
            scheduler.add_job(call, IntervalTrigger(seconds=every), id=job_id, next_run_time=now)
        scheduler.start()
        self.scheduler = scheduler

    async def stop(self) -> None:
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
            self.scheduler = None
        if self.notifier is not None:
            await self.notifier.aclose()
