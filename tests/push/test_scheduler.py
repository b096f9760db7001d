"""The scheduler: one leader among replicas, jobs persisted per person, catch-up once, sweeps."""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine

from core import db
from core.db import session_scope
from core.models import DigestPrefRow
from core.settings import Settings
from push.delivery import RateLimiter
from push.scheduler import JOB_TABLE, SWEEP_JOB, FileLeaderLock, PushScheduler, PushService
from tests.push.push_fakes import FixedCandidates, RecordingSender, add_document, add_user, candidate


@pytest.fixture
def push_settings(make_settings: Callable[..., Settings], database_url: str) -> Settings:
    return make_settings(database_url=database_url, push_sweep_s=0.2, push_max_per_day=10)


class Replica:
    """One `kb serve` process's push part: its own engine, sender and scheduler."""

    def __init__(self, settings: Settings) -> None:
        self.engine = db.make_engine(settings)
        self.sender = RecordingSender()
        self.service = PushService(
            self.engine, settings, source=FixedCandidates([candidate("vpn")]), senders={"slack": self.sender},
            limiter=RateLimiter({}),
        )  # fmt: skip
        self.scheduler = PushScheduler(self.service, poll_s=0.1)

    async def close(self) -> None:
        await self.scheduler.stop()
        self.engine.dispose()


@pytest.fixture
async def replicas(migrated: Engine, push_settings: Settings) -> AsyncIterator[Callable[[], Replica]]:
    add_document(migrated, "vpn")
    made: list[Replica] = []

    def make() -> Replica:
        made.append(Replica(push_settings))
        return made[-1]

    yield make
    for replica in made:
        await replica.close()


async def wait_for(condition: Callable[[], bool], *, within: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


async def test_two_replicas_elect_one_leader_and_the_other_takes_over(
    replicas: Callable[[], Replica],
) -> None:
    first, second = replicas(), replicas()
    await first.scheduler.start()
    await second.scheduler.start()
    assert [first.scheduler.is_leader, second.scheduler.is_leader] == [True, False]
    await asyncio.sleep(0.3)  # the follower keeps polling and keeps failing
    assert not second.scheduler.is_leader
    await first.scheduler.stop()  # the leader goes away (a crash releases the lock the same way)
    await wait_for(lambda: second.scheduler.is_leader)
    assert not first.scheduler.is_leader


def test_the_file_lock_has_one_holder(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "kb.db.push-leader.lock"
    one, two = FileLeaderLock(path), FileLeaderLock(path)
    assert (one.acquire(), two.acquire()) == (True, False)
    one.release()
    assert two.acquire() and two.holds()
    two.release()


async def test_jobs_are_persisted_per_person_in_their_time_zone(
    migrated: Engine, replicas: Callable[[], Replica]
) -> None:
    add_user(migrated, "UBER", timezone="Europe/Berlin", hour=9)
    add_user(migrated, "UWEEK", cadence="weekly", timezone="America/New_York", hour=8)
    add_user(migrated, "UOFF", cadence="off")
    leader = replicas()
    await leader.scheduler.start()
    with migrated.connect() as connection:
        rows = dict(connection.execute(sa.text(f"select id, next_run_time from {JOB_TABLE}")).all())
    assert set(rows) == {SWEEP_JOB, "digest:slack:UBER", "digest:slack:UWEEK"}
    berlin = datetime.fromtimestamp(rows["digest:slack:UBER"], UTC)
    assert (berlin.hour, berlin.minute) in ((8, 0), (7, 0))  # 09:00 in Berlin, winter or summer time
    weekly = datetime.fromtimestamp(rows["digest:slack:UWEEK"], UTC)
    assert weekly.weekday() == 0 and weekly.hour in (12, 13)  # Monday 08:00 in New York
    await leader.close()
    # Preferences change: the job follows; opting out removes it.
    with session_scope(migrated) as session:
        pref = session.get(DigestPrefRow, ("slack", "UBER"))
        assert pref is not None
        pref.cadence = "off"
    again = replicas()
    await again.scheduler.start()
    assert {job.id for job in again.scheduler.scheduler.get_jobs()} == {SWEEP_JOB, "digest:slack:UWEEK"}  # type: ignore[union-attr]


async def test_missed_slots_run_once_after_downtime(
    migrated: Engine, replicas: Callable[[], Replica]
) -> None:
    add_user(migrated, "U1", hour=3)
    leader = replicas()
    await leader.scheduler.start()  # the start catches up the newest missed slot
    assert len(leader.sender.sent) == 1
    await leader.close()
    # Downtime: the person's job should have fired three days ago (APScheduler misfire).
    past = (datetime.now(UTC) - timedelta(days=3)).timestamp()
    with migrated.begin() as connection:
        state = connection.execute(
            sa.text(f"select job_state from {JOB_TABLE} where id = 'digest:slack:U1'")
        ).scalar()
        job = pickle.loads(state)
        job["next_run_time"] = datetime.fromtimestamp(past, UTC)
        connection.execute(
            sa.text(
                f"update {JOB_TABLE} set next_run_time = :t, job_state = :s where id = 'digest:slack:U1'"
            ),
            {"t": past, "s": pickle.dumps(job)},
        )
    restarted = replicas()
    await restarted.scheduler.start()
    await asyncio.sleep(0.5)  # the misfired job runs (coalesced) and finds its slot done
    assert restarted.sender.sent == []
    assert restarted.scheduler.scheduler is not None
    job_next = restarted.scheduler.scheduler.get_job("digest:slack:U1").next_run_time
    assert job_next > datetime.now(UTC)  # coalesced into one run, rescheduled for the next slot


async def test_the_sweep_answers_digest_now(migrated: Engine, replicas: Callable[[], Replica]) -> None:
    add_user(migrated, "U1", cadence="off")
    leader = replicas()
    await leader.scheduler.start()
    assert leader.sender.sent == []
    with session_scope(migrated) as session:
        pref = session.get(DigestPrefRow, ("slack", "U1"))
        assert pref is not None
        pref.requested_at = datetime.now(UTC)
    await wait_for(lambda: len(leader.sender.sent) == 1)
    await asyncio.sleep(0.5)
    assert len(leader.sender.sent) == 1


class BrokenSource:
    def match(self, *args: object, **kwargs: object) -> dict[str, list[object]]:
        raise RuntimeError("the matcher is broken")


async def test_a_failing_step_of_the_sweep_does_not_stop_the_others(
    migrated: Engine, push_settings: Settings
) -> None:
    add_user(migrated, "U1", requested_at=datetime.now(UTC))  # the digest step will need the matcher
    service = PushService(migrated, push_settings, source=BrokenSource(), senders={})  # type: ignore[arg-type]
    done = await service.sweep()
    assert set(done) == {"resumed", "notices"}  # digests failed (logged); the rest ran
