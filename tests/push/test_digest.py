"""Digests: slots in local time, one catch-up after downtime, requests, adaptive cadence, ACLs."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import Engine, select
from sqlmodel import Session, col

from core.models import PushDeliveryRow, PushUserStateRow, as_utc
from core.settings import Settings
from privacy.access import can_read
from push.delivery import Dispatcher, RateLimiter
from push.digest import DigestRunner
from push.ledger import record_response
from push.matching import Matcher
from tests.push.conftest import NOW, Behaviour, Library
from tests.push.push_fakes import (
    T0,
    Clock,
    FixedCandidates,
    RecordingSender,
    add_document,
    add_user,
    candidate,
)


@pytest.fixture
def push_settings(make_settings: Callable[..., Settings], database_url: str) -> Settings:
    return make_settings(database_url=database_url, push_max_per_day=10)


@pytest.fixture
def world(migrated: Engine) -> Engine:
    for doc in ("vpn", "laptops", "expenses"):
        add_document(migrated, doc)
    add_document(migrated, "payroll", acl=["hr"])
    return migrated


class Rig:
    def __init__(self, engine: Engine, settings: Settings, source: FixedCandidates, clock: Clock) -> None:
        self.engine, self.sender, self.clock, self.source = engine, RecordingSender(), clock, source
        dispatcher = Dispatcher(
            engine, settings, {"slack": self.sender}, limiter=RateLimiter({}), clock=clock
        )
        self.runner = DigestRunner(engine, settings, source, dispatcher, clock=clock)

    def digests(self) -> list[PushDeliveryRow]:
        with Session(self.engine) as session:
            return list(session.execute(select(PushDeliveryRow).order_by(col(PushDeliveryRow.id))).scalars())


def rig(world: Engine, settings: Settings, *docs: str) -> Rig:
    return Rig(world, settings, FixedCandidates([candidate(d) for d in docs or ("vpn",)]), Clock())


async def test_daily_digests_go_out_at_the_local_hour_once(world: Engine, push_settings: Settings) -> None:
    add_user(world, "UBER", timezone="Europe/Berlin", hour=9)  # 08:00 UTC
    add_user(world, "UTOK", timezone="Asia/Tokyo", hour=9)  # 00:00 UTC
    add_user(world, "UNYC", timezone="America/New_York", hour=9)  # 14:00 UTC
    r = rig(world, push_settings)
    report = await r.runner.run()
    keys = sorted(o.key for o in report.outcomes)
    assert keys == [
        "digest:slack:UBER:2026-11-25T08:00Z", "digest:slack:UNYC:2026-11-24T14:00Z",
        "digest:slack:UTOK:2026-11-25T00:00Z",
    ]  # fmt: skip
    assert (await r.runner.run()).outcomes == []  # the same slots again: nothing
    r.clock.now = T0.replace(hour=14, minute=1)
    assert [o.key for o in (await r.runner.run()).outcomes] == ["digest:slack:UNYC:2026-11-25T14:00Z"]
    assert len(r.sender.sent) == 3 and len({m.key for m in r.sender.sent}) == 3
    assert r.digests()[-1].state == "empty"  # its one document was pushed the day before


async def test_after_downtime_one_catch_up_digest_covers_the_gap(
    world: Engine, push_settings: Settings
) -> None:
    add_user(world, "U1", hour=8)
    r = rig(world, push_settings)
    await r.runner.run()
    first = r.digests()[0]
    r.clock.advance(days=4)  # the scheduler was down for three slots
    report = await r.runner.run()
    assert [o.key for o in report.outcomes] == ["digest:slack:U1:2026-11-29T08:00Z"]
    caught_up = r.digests()[-1]
    assert as_utc(caught_up.window_start or T0) == as_utc(first.window_end)  # nothing lost in between
    assert r.source.calls[-1]["since"] == {"slack:U1": as_utc(first.window_end)}


async def test_people_who_opted_out_get_nothing_unless_they_ask(
    world: Engine, push_settings: Settings
) -> None:
    add_user(world, "UOFF", cadence="off")
    add_user(world, "UASK", cadence="off", requested_at=T0 - timedelta(minutes=5))
    add_user(world, "USTALE", cadence="off", requested_at=T0 - timedelta(days=3))
    r = rig(world, push_settings)
    report = await r.runner.run()
    assert [(o.user, o.trigger, o.state) for o in report.outcomes] == [("slack:UASK", "requested", "sent")]
    assert (await r.runner.run()).outcomes == []  # one answer per request


async def test_unknown_time_zones_and_cadences_are_reported_and_worked_around(
    world: Engine, push_settings: Settings
) -> None:
    add_user(world, "U1", cadence="hourly", timezone="Mars/Olympus_Mons")
    r = rig(world, push_settings)
    report = await r.runner.run()
    assert any("unknown cadence 'hourly'" in p for p in report.problems["slack:U1"])
    assert any("unknown time zone 'Mars/Olympus_Mons'" in p for p in report.problems["slack:U1"])
    # Falls back to weekly (Mondays, 09:00 UTC) instead of failing.
    assert [o.key for o in report.outcomes] == ["digest:slack:U1:2026-11-23T09:00Z"]


async def test_ignored_digests_slow_down_and_a_click_restores_the_cadence(
    world: Engine, make_settings: Callable[..., Settings], database_url: str
) -> None:
    settings = make_settings(
        database_url=database_url,
        push_ignore_limit=3,
        push_max_per_day=10,
        push_public_url="http://kb.example",
    )
    add_user(world, "U1", hour=8)
    r = Rig(world, settings, FixedCandidates([candidate(f"d{n}") for n in range(20)]), Clock())
    for n in range(20):
        add_document(world, f"d{n}")
    sent_days = []
    for day in range(6):
        r.clock.now = T0 + timedelta(days=day)
        if (await r.runner.run()).outcomes:
            sent_days.append(day)
    assert sent_days == [0, 1, 2]  # three ignored digests: daily backs off to weekly
    with Session(world) as session:
        assert (session.get(PushUserStateRow, ("slack", "U1")) or PushUserStateRow()).backoff == 1
    last = r.digests()[-1]
    assert record_response(world, last.key, last.documents[0])  # the person finally clicks
    r.clock.now = T0 + timedelta(days=6)
    assert [o.state for o in (await r.runner.run()).outcomes] == ["sent"]  # back on time


async def test_without_click_tracking_silence_never_slows_anyone_down(
    world: Engine, push_settings: Settings
) -> None:
    add_user(world, "U1", hour=8)
    for n in range(10):
        add_document(world, f"d{n}")
    r = Rig(world, push_settings, FixedCandidates([candidate(f"d{n}") for n in range(10)]), Clock())
    sent = 0
    for day in range(5):
        r.clock.now = T0 + timedelta(days=day)
        sent += len((await r.runner.run()).outcomes)
    assert sent == 5


async def test_digests_never_contain_a_document_outside_the_readers_groups(
    world: Engine, make_settings: Callable[..., Settings], database_url: str
) -> None:
    rng = random.Random(6)
    groups = {f"U{n}": rng.choice([[], ["hr"], ["eng"], ["hr", "eng"]]) for n in range(24)}
    settings = make_settings(
        database_url=database_url, push_max_per_day=10,
        bot_user_groups={f"slack:{u}": g for u, g in groups.items()},
    )  # fmt: skip
    add_document(world, "roadmap", acl=["eng"])
    acl = {"vpn": [], "laptops": [], "expenses": [], "payroll": ["hr"], "roadmap": ["eng"]}
    for user in groups:
        add_user(world, user)
    # The source ignores ACLs on purpose: delivery must catch every leak.
    r = Rig(world, settings, FixedCandidates([candidate(d) for d in acl]), Clock())
    await r.runner.run()
    pushed = [(m.user_id, i.document_id) for m in r.sender.sent for i in m.items]
    assert len(r.sender.sent) == 24 and len(pushed) > 24 * 3
    assert [(u, d) for u, d in pushed if not can_read(groups[u], acl[d])] == []
    assert any(d == "payroll" for _, d in pushed) and any(d == "roadmap" for _, d in pushed)


async def test_a_dry_run_sends_and_records_nothing(world: Engine, push_settings: Settings) -> None:
    add_user(world, "U1", hour=8)
    r = rig(world, push_settings, "vpn", "laptops")
    report = await r.runner.run(dry_run=True)
    assert [(o.state, [i["document_id"] for i in o.items]) for o in report.outcomes] == [
        ("dry-run", ["vpn", "laptops"])
    ]
    assert r.sender.sent == [] and r.digests() == []


async def test_already_pushed_documents_are_passed_to_the_source(
    world: Engine, push_settings: Settings
) -> None:
    add_user(world, "U1", hour=8)
    r = rig(world, push_settings, "vpn", "laptops")
    await r.runner.run()
    r.clock.advance(days=1)
    await r.runner.run()
    assert r.source.calls[-1]["already_pushed"] == {"slack:U1": {"vpn", "laptops"}}
    assert r.digests()[-1].state == "empty"  # nothing new: no message, but the window is used
    assert len(r.sender.sent) == 1


async def test_end_to_end_through_the_matcher(
    migrated: Engine, settings: Settings, library: Library, behaviour: Behaviour, matcher: Matcher
) -> None:
    """Behaviour -> profile -> matcher -> digest -> sender: the person who asked about the VPN gets the
    new VPN page, explained, and no document they may not read."""
    behaviour.ask("slack:UALICE", "How do I connect to the VPN from home?", at=NOW - timedelta(days=2))
    fresh = NOW - timedelta(hours=2)
    library.add("vpn.md", "VPN", "Connect to the company VPN from home with the WireGuard client.", at=fresh)
    library.add("vpn-admin.md", "VPN administration", "VPN keys, WireGuard admin.", acl=["it"], at=fresh)
    library.add("lunch.md", "Canteen menu", "Soup on Mondays, pasta on Tuesdays.", at=fresh)
    add_user(migrated, "UALICE", hour=8, seen=NOW - timedelta(days=2))
    clock = Clock(NOW)
    sender = RecordingSender()
    dispatcher = Dispatcher(migrated, settings, {"slack": sender}, limiter=RateLimiter({}), clock=clock)
    report = await DigestRunner(migrated, settings, matcher, dispatcher, clock=clock).run(
        force=True, only=["slack:UALICE"]
    )
    assert [o.state for o in report.outcomes] == ["sent"]
    (message,) = sender.sent
    assert [i.document_id for i in message.items] == ["vpn.md"]
    assert "because you asked about" in message.items[0].note
    assert message.key == "digest:slack:UALICE:forced:2026-11-28T12:00Z"


async def test_an_answered_digest_now_does_not_swallow_the_next_scheduled_one(
    world: Engine, push_settings: Settings
) -> None:
    add_user(world, "U1", hour=8, requested_at=T0 - timedelta(minutes=5))
    r = Rig(world, push_settings, FixedCandidates([candidate("vpn")]), Clock())
    assert [o.trigger for o in (await r.runner.run()).outcomes] == ["requested"]  # today's slot is inside it
    r.source.candidates = [candidate("laptops")]
    r.clock.now = T0.replace(hour=8, minute=1) + timedelta(days=1)  # the request is still under a day old
    assert [(o.trigger, o.state) for o in (await r.runner.run()).outcomes] == [("scheduled", "sent")]
