"""Immediate notices: invalidated answers, urgent documents, opt-out, quiet hours, the cap, ACLs."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import Engine

from core.db import session_scope
from core.models import SubscriptionRow
from core.settings import Settings
from push.delivery import Dispatcher, RateLimiter
from push.notices import NoticeRunner
from tests.push.push_fakes import T0, Clock, RecordingSender, add_document, add_question, add_user, log_change

VPN = "https://wiki.example/vpn"


@pytest.fixture
def push_settings(make_settings: Callable[..., Settings], database_url: str) -> Settings:
    return make_settings(
        database_url=database_url, push_notice_days=14, push_max_per_day=2,
        bot_user_groups={"slack:UHR": ["hr"], "slack:UHR2": ["hr"]},
    )  # fmt: skip


class Rig:
    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.sender, self.clock = RecordingSender(), Clock()
        dispatcher = Dispatcher(
            engine, settings, {"slack": self.sender}, limiter=RateLimiter({}), clock=self.clock
        )
        self.notices = NoticeRunner(engine, settings, dispatcher, clock=self.clock)


@pytest.fixture
async def rig(migrated: Engine, push_settings: Settings) -> Rig:
    add_document(migrated, "vpn")
    log_change(migrated, "vpn", "added", at=T0 - timedelta(days=30))
    r = Rig(migrated, push_settings)
    assert (await r.notices.run()).changes == 0  # the first run only sets the cursor: no history as news
    return r


async def test_a_material_change_notifies_those_whose_answers_cited_it(migrated: Engine, rig: Rig) -> None:
    for user in ("U1", "U2", "UOLD", "UOFF"):
        add_user(migrated, user, cadence="off" if user == "UOFF" else "daily")
    add_question(migrated, "U1", "How do I set up the VPN?", uris=[f"{VPN}#setup"], at=T0 - timedelta(days=3))
    add_question(migrated, "U2", "What is the VPN address?", uris=[VPN], at=T0 - timedelta(days=1))
    add_question(migrated, "UOLD", "vpn?", uris=[VPN], at=T0 - timedelta(days=40))  # outside N days
    add_question(migrated, "UOFF", "vpn?", uris=[VPN], at=T0 - timedelta(days=1))  # opted out
    add_document(migrated, "vpn", content_hash="h2")
    log_change(migrated, "vpn", "updated", at=T0, content_hash="h2")
    report = await rig.notices.run()
    assert sorted((o["user"], o["state"]) for o in report.outcomes) == [
        ("slack:U1", "sent"),
        ("slack:U2", "sent"),
    ]
    note = next(m for m in rig.sender.sent if m.user_id == "U1").items[0].note
    assert "its text changed on 2026-11-25" in note and "How do I set up the VPN?" in note
    assert (await rig.notices.run()).outcomes == []  # the cursor moved on: nothing twice
    assert len(rig.sender.sent) == 2


async def test_deletion_is_material_and_metadata_edits_are_not(migrated: Engine, rig: Rig) -> None:
    add_user(migrated, "U1")
    add_question(migrated, "U1", "vpn?", uris=[VPN], at=T0 - timedelta(days=1))
    log_change(migrated, "vpn", "updated", at=T0, tags=["network"], content_hash="h-tags")  # a re-tag
    assert (await rig.notices.run()).outcomes == []
    log_change(
        migrated, "vpn", "deleted", at=T0 + timedelta(hours=1), tags=["network"], content_hash="h-tags"
    )
    report = await rig.notices.run()
    assert [o["state"] for o in report.outcomes] == ["sent"]
    message = rig.sender.sent[0]
    assert message.title.endswith("was removed") and message.items[0].url == ""


async def test_with_text_hashes_a_text_edit_with_new_tags_is_material_and_a_re_tag_is_not(
    migrated: Engine, rig: Rig
) -> None:
    add_user(migrated, "U1")
    add_question(migrated, "U1", "vpn?", uris=[VPN], at=T0 - timedelta(days=1))
    log_change(migrated, "vpn", "updated", at=T0, content_hash="h2", text_hash="t1")
    first = await rig.notices.run()  # against a change from before text hashes: the old rule (material)
    assert [o["state"] for o in first.outcomes] == ["sent"]
    later = T0 + timedelta(hours=1)
    log_change(migrated, "vpn", "updated", at=later, tags=["network"], content_hash="h3", text_hash="t1")
    assert (await rig.notices.run()).outcomes == []  # a re-tag: same text
    log_change(migrated, "vpn", "updated", at=later, tags=["vpn"], content_hash="h4", text_hash="t2")
    report = await rig.notices.run()
    assert [o["state"] for o in report.outcomes] == ["sent"]  # text and tags changed together
    assert "its text changed" in rig.sender.sent[-1].items[0].note
    assert len(rig.sender.sent) == 2


async def test_urgent_documents_go_at_once_to_readers_subscribed_to_their_topic(
    migrated: Engine, rig: Rig
) -> None:
    for user in ("UHR", "UHR2", "UNOHR", "UOTHER"):
        add_user(migrated, user, cadence="off" if user == "UHR2" else "weekly")
    with session_scope(migrated) as session:
        for user, topic in (("UHR", "payroll"), ("UHR2", "payroll"), ("UNOHR", "payroll"), ("UOTHER", "vpn")):
            session.add(SubscriptionRow(platform="slack", user_id=user, topic=topic, created_at=T0))
    add_document(migrated, "payroll-deadline", acl=["hr"], tags=["compliance", "payroll"])
    log_change(migrated, "payroll-deadline", "added", at=T0, acl=["hr"], tags=["compliance", "payroll"])
    report = await rig.notices.run()
    # UNOHR follows the topic but may not read the document; UHR2 opted out; UOTHER follows something else.
    assert [(o["user"], o["state"]) for o in report.outcomes] == [
        ("slack:UHR", "sent"), ("slack:UNOHR", "skipped"),
    ]  # fmt: skip
    assert [m.user_id for m in rig.sender.sent] == ["UHR"]
    assert "marked compliance" in rig.sender.sent[0].items[0].note


async def test_notices_respect_quiet_hours_and_the_cap(migrated: Engine, rig: Rig) -> None:
    add_user(migrated, "U1", quiet=(22, 7))
    for n in range(3):
        add_document(migrated, f"doc{n}")
        add_question(
            migrated, "U1", f"q{n}", uris=[f"https://wiki.example/doc{n}"], at=T0 - timedelta(days=1)
        )
        log_change(migrated, f"doc{n}", "added", at=T0 - timedelta(days=2))
    rig.clock.now = T0.replace(hour=23)
    for n in range(3):
        log_change(migrated, f"doc{n}", "updated", at=rig.clock.now, content_hash=f"new{n}")
    report = await rig.notices.run()
    assert [o["state"] for o in report.outcomes] == ["deferred"] * 3  # night: held, not dropped
    rig.clock.now = T0.replace(hour=7, minute=1) + timedelta(days=1)
    states = await rig.notices.dispatcher.resume()  # type: ignore[union-attr]
    assert sorted(states) == ["deferred", "sent", "sent"]  # the cap is 2 a day
    assert len(rig.sender.sent) == 2
