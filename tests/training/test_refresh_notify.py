"""Admins told in chat when a run ends, and the scheduled refresh, with recording senders and no model."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine

from app.server.training import TrainingJobsService, training_desk
from core import db
from core.messaging import DeliveryFailed, OutgoingMessage, Receipt
from core.models import BehaviourEventRow, DocumentChangeRow, utcnow
from core.settings import Settings
from tests.push.push_fakes import RecordingSender
from training.jobs import TrainingJobs
from training.notify import AdminNotifier, ended_text
from training.refresh import ACTOR, Refresher, accumulated
from training.runs import FAILED, QUEUED, SUCCEEDED, RunStore

ADMINS = ["slack:U0ADMIN", "teams:aad-admin", "slack:U0OTHER"]
Make = Callable[..., Settings]


@pytest.fixture
def settings(make_settings: Make, tmp_path: Path) -> Settings:
    student = tmp_path / "student"
    student.mkdir()
    return make_settings(
        bot_admins=ADMINS, train_student=str(student), train_dir=str(tmp_path / "train"),
        privacy_budget_epsilon=8.0, train_refresh_min_documents=3, train_refresh_min_rated=2,
    )  # fmt: skip


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    engine = db.make_engine(settings)
    db.upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def senders() -> dict[str, RecordingSender]:
    return {"slack": RecordingSender("slack"), "teams": RecordingSender("teams")}


def _notifier(engine: Engine, senders: dict[str, RecordingSender]) -> AdminNotifier:
    return AdminNotifier(engine, ADMINS, dict(senders))


def _documents(engine: Engine, count: int, *, prefix: str = "doc") -> None:
    with db.session_scope(engine) as session:
        for n in range(count):
            kind = "added" if n % 2 else "updated"
            session.add(DocumentChangeRow(document_id=f"{prefix}{n}", kind=kind, title="t", uri="u",
                                          content_hash="h", changed_at=utcnow()))  # fmt: skip
        session.add(DocumentChangeRow(document_id=f"{prefix}-gone", kind="deleted", title="t", uri="u",
                                      content_hash="h", changed_at=utcnow()))  # fmt: skip


def _rated(engine: Engine, values: list[int]) -> None:
    with db.session_scope(engine) as session:
        for value in values:
            question = BehaviourEventRow(
                kind="question", platform="slack", user_id="U1", at=utcnow(), text="q"
            )
            session.add(question)
            session.flush()
            session.add(BehaviourEventRow(kind="feedback", platform="slack", user_id="U1", at=utcnow(),
                                          question_id=question.id, data={"value": value}))  # fmt: skip


def _finished(engine: Engine, status: str, **outcome: object) -> int:
    runs = RunStore(engine)
    row = runs.create("slack:U0ADMIN", {"epsilon": 4.0, "epochs": 2})
    claimed = runs.claim("w")
    assert claimed is not None and claimed.id == row.id
    runs.finish(row.id or 0, status, **outcome)  # type: ignore[arg-type]
    return row.id or 0


# -- told when a run ends --------------------------------------------------------------------------


async def test_a_succeeded_run_is_told_once_to_every_admin_with_its_figures(
    engine: Engine, senders: dict[str, RecordingSender]
) -> None:
    report = {"epsilon_spent": 3.99, "correctness": 0.512, "active_correctness": 0.48,
              "activation": "active as kb-v1"}  # fmt: skip
    run_id = _finished(engine, SUCCEEDED, report=report, version=1)

    assert await _notifier(engine, senders).finished_runs() == [run_id]

    slack, teams = senders["slack"].sent, senders["teams"].sent
    assert [m.user_id for m in slack] == ["U0ADMIN", "U0OTHER"] and [m.user_id for m in teams] == [
        "aad-admin"
    ]
    text = slack[0].text
    assert f"run #{run_id}" in text and "succeeded: version 1" in text
    assert "ε spent 3.99" in text and "correctness 0.512 (active version: 0.480)" in text
    assert "active as kb-v1" in text
    # The same process again, and a fresh one (a restart): nothing is told twice.
    assert await _notifier(engine, senders).finished_runs() == []
    assert len(senders["slack"].sent) == 2 and len(senders["teams"].sent) == 1


async def test_a_failed_run_and_a_gate_refusal_say_why(
    engine: Engine, senders: dict[str, RecordingSender]
) -> None:
    failed = _finished(engine, FAILED, error="the teacher folder is missing (set KB_TRAIN_TEACHER)")
    report = {"epsilon_spent": 4.0, "correctness": 0.2, "activation": "not activated: correctness 0.2 < 0.48"}
    refused = _finished(engine, SUCCEEDED, report=report, version=2)

    assert await _notifier(engine, senders).finished_runs() == [failed, refused]
    texts = [m.text for m in senders["teams"].sent]
    assert "failed: the teacher folder is missing (set KB_TRAIN_TEACHER)" in texts[0]
    assert "The active model keeps serving" in texts[0]
    assert "not activated: correctness 0.2 < 0.48" in texts[1]


async def test_a_platform_down_for_everyone_leaves_the_run_for_the_next_pass(
    engine: Engine, senders: dict[str, RecordingSender]
) -> None:
    run_id = _finished(engine, FAILED, error="out of memory")
    down = DeliveryFailed("slack is down")
    senders["slack"].fail("U0ADMIN", down)
    senders["slack"].fail("U0OTHER", down)
    senders["teams"].fail("aad-admin", DeliveryFailed("teams is down"))

    assert await _notifier(engine, senders).finished_runs() == []
    assert await _notifier(engine, senders).finished_runs() == [run_id]
    assert len(senders["slack"].sent) == 2 and len(senders["teams"].sent) == 1


async def test_a_message_sent_before_a_crash_is_found_not_sent_again(
    engine: Engine, senders: dict[str, RecordingSender]
) -> None:
    run_id = _finished(engine, FAILED, error="killed")
    senders["slack"].deliver_then_fail("U0ADMIN", DeliveryFailed("timed out"))
    notifier = _notifier(engine, senders)

    assert await notifier.finished_runs() == [run_id]  # two of three admins got it: told
    assert [m.user_id for m in senders["slack"].sent] == ["U0ADMIN", "U0OTHER"]
    await notifier.tell(f"train-run-{run_id}-ended", "again")
    assert len(senders["slack"].sent) == 2 and len(senders["teams"].sent) == 1


def test_runs_still_going_are_not_told(engine: Engine) -> None:
    runs = RunStore(engine)
    row = runs.create("slack:U0ADMIN", {"epsilon": 4.0, "epochs": 2})
    assert row.status == QUEUED
    assert "is queued" in ended_text(row)


# -- the scheduled refresh -------------------------------------------------------------------------


def test_accumulated_counts_changed_documents_and_liked_questions_since_a_time(engine: Engine) -> None:
    before = utcnow() - timedelta(seconds=1)
    _documents(engine, 4)
    _rated(engine, [1, 1, -1, 0])
    assert accumulated(engine, None) == (4, 2)
    assert accumulated(engine, before) == (4, 2)
    assert accumulated(engine, utcnow() + timedelta(seconds=1)) == (0, 0)


async def test_refresh_queues_one_run_when_enough_has_accumulated_and_tells_the_admins(
    settings: Settings, engine: Engine, senders: dict[str, RecordingSender]
) -> None:
    refresher = Refresher(settings, engine, training_desk(settings, engine))
    _documents(engine, 2)
    _rated(engine, [1, 1])
    check = refresher.check()
    assert not check.due and check.reason == "2 of 3 new or changed documents"
    _documents(engine, 3, prefix="more")
    assert await refresher.run_once(_notifier(engine, senders)) is not None

    queued = RunStore(engine).recent(5)
    assert [(r.status, r.requested_by, r.params["epsilon"]) for r in queued] == [(QUEUED, ACTOR, 4.0)]
    told = senders["slack"].sent[0]
    assert told.key == f"train-refresh-run-{queued[0].id}:U0ADMIN"
    assert "Scheduled refresh: 5 new or changed documents and 2 👍-rated questions" in told.text
    assert f"Run #{queued[0].id} queued" in told.text
    # Another replica (or this one after a restart) with the same material: the queued run blocks it.
    again = Refresher(settings, engine, training_desk(settings, engine))
    assert await again.run_once(_notifier(engine, senders)) is None
    assert again.check().reason == f"run #{queued[0].id} is queued or running"
    assert len(RunStore(engine).recent(5)) == 1


async def test_refresh_counts_from_the_last_run_and_respects_the_budget(
    make_settings: Make, settings: Settings, engine: Engine
) -> None:
    _documents(engine, 5)
    _rated(engine, [1, 1, 1])
    _finished(engine, FAILED, error="earlier run")
    refresher = Refresher(settings, engine, training_desk(settings, engine))
    check = refresher.check()
    assert (check.documents, check.rated, check.due) == (0, 0, False)

    _documents(engine, 3, prefix="new")
    _rated(engine, [1, 1])
    assert refresher.check().due
    poor = settings.replace(privacy_budget_epsilon=3.0)
    check = Refresher(poor, engine, training_desk(poor, engine)).check()
    assert not check.due and check.reason == "the privacy budget has ε=3 left, a run needs 4"
    assert await Refresher(poor, engine, training_desk(poor, engine)).run_once() is None


# -- the jobs: leader only ---------------------------------------------------------------------------


class CountingSender(RecordingSender):
    """A recording Slack sender that sets `enough` once `count` messages went out."""

    def __init__(self, count: int) -> None:
        super().__init__("slack")
        self.count, self.enough = count, asyncio.Event()

    async def send(self, message: OutgoingMessage) -> Receipt:
        receipt = await super().send(message)
        if len(self.sent) >= self.count:
            self.enough.set()
        return receipt


async def test_followers_do_nothing_and_the_leader_runs_both_jobs_at_start(
    settings: Settings, engine: Engine, senders: dict[str, RecordingSender]
) -> None:
    run_id = _finished(engine, FAILED, error="killed")
    _documents(engine, 3)
    _rated(engine, [1, 1])
    refresher = Refresher(settings, engine, training_desk(settings, engine))

    follower = TrainingJobs(_notifier(engine, senders), refresher, leads=lambda: False)
    assert await follower.notify_pass() == [] and await follower.refresh_pass() is None
    assert senders["slack"].sent == []

    asked = asyncio.Event()

    def leads() -> bool:
        asked.set()
        return True

    slack = CountingSender(4)  # the ended run and the refresh, to two Slack admins
    senders["slack"] = slack
    leader = TrainingJobs(_notifier(engine, senders), refresher, leads=leads)
    await leader.start()
    try:
        await slack.enough.wait()
    finally:
        await leader.stop()
    assert asked.is_set()
    keys = {m.key for m in senders["slack"].sent}
    assert f"train-run-{run_id}-ended:U0ADMIN" in keys and any(
        k.startswith("train-refresh-run-") for k in keys
    )


async def test_the_service_takes_the_push_leader_lock_when_push_is_off(
    settings: Settings, engine: Engine
) -> None:
    first, second = TrainingJobsService(settings, engine), TrainingJobsService(settings, engine)
    try:
        assert first.leads() and first.leads()
        assert not second.leads()
    finally:
        await first.stop()
    assert second.leads()
    await second.stop()


class _Push:
    """A push scheduler service as far as leadership goes."""

    def __init__(self, leader: bool) -> None:
        self._scheduler = type("Scheduler", (), {"is_leader": leader})()


async def test_the_service_follows_push_leadership_when_push_runs(settings: Settings, engine: Engine) -> None:
    assert TrainingJobsService(settings, engine, push=_Push(True)).leads()  # type: ignore[arg-type]
    assert not TrainingJobsService(settings, engine, push=_Push(False)).leads()  # type: ignore[arg-type]


def test_runs_that_ended_before_the_upgrade_count_as_told(make_settings: Make) -> None:
    from sqlalchemy import text

    engine = db.make_engine(make_settings())
    try:
        db.upgrade(engine, "0016")
        with engine.begin() as connection:
            for status in ("succeeded", "queued"):
                connection.execute(
                    text(
                        "INSERT INTO training_runs (status, requested_by, params, progress, report, error, "
                        "dry_run, worker, attempts, cancel_requested, created_at, finished_at) VALUES "
                        "(:s, 'slack:U0ADMIN', '{}', '{}', '{}', '', 0, '', 0, 0, :now, :now)"
                    ),
                    {"s": status, "now": utcnow()},
                )
        db.upgrade(engine)
        runs = {r.status: r.notified_at for r in RunStore(engine).recent(5)}
        assert runs["succeeded"] is not None and runs["queued"] is None
    finally:
        engine.dispose()
