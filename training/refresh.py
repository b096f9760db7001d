"""The scheduled refresh: queue a retrain once enough new material has come in and the budget allows.

    refresher = Refresher(settings, engine, desk)
    check = refresher.check()          # what accumulated since the last run, and whether it is due
    queued = await refresher.run_once(notifier)   # queues a run and tells the admins, or None

A retrain is due when, since the last run was requested (any outcome; the first refresh counts
everything), at least KB_TRAIN_REFRESH_MIN_DOCUMENTS documents were added or changed (the
`document_changes` log) and at least KB_TRAIN_REFRESH_MIN_RATED questions got a 👍 (`feedback`
behaviour events with a positive value), and the privacy ledger has KB_TRAIN_EPSILON left (read,
not reserved: the run reserves it when it starts). A queued or running run blocks the refresh, and
the run goes through the desk's `retrain`, which refuses a second waiting run, so replicas and
restarts never queue two. Counting from the last request, whatever became of it, keeps a failing
run from being retried every pass: the next one waits for new material.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, func, select
from sqlmodel import Session, col

from core.models import BehaviourEventRow, DocumentChangeRow, TrainingRunRow
from core.settings import Settings
from core.training import TrainingDesk, TrainingRefused
from privacy.budget import BudgetLedger
from training.notify import AdminNotifier
from training.runs import QUEUED, RUNNING

log = logging.getLogger(__name__)
ACTOR = "kb:scheduled-refresh"


@dataclass(frozen=True, slots=True)
class RefreshCheck:
    """What accumulated since `since` (None: no run yet), and why a retrain is or is not due."""

    since: datetime | None
    last_run: int | None
    documents: int
    rated: int
    epsilon_left: float
    due: bool
    reason: str


def accumulated(engine: Engine, since: datetime | None) -> tuple[int, int]:
    """Documents added or changed, and questions rated 👍, after `since` (everything when None)."""
    with Session(engine) as session:
        docs = select(func.count(func.distinct(col(DocumentChangeRow.document_id)))).where(
            col(DocumentChangeRow.kind).in_(("added", "updated"))
        )
        rated = select(col(BehaviourEventRow.question_id), col(BehaviourEventRow.data)).where(
            col(BehaviourEventRow.kind) == "feedback", col(BehaviourEventRow.question_id).is_not(None)
        )
        if since is not None:
            docs = docs.where(col(DocumentChangeRow.changed_at) > since)
            rated = rated.where(col(BehaviourEventRow.at) > since)
        documents = int(session.execute(docs).scalar_one())
        liked = {q for q, data in session.execute(rated).all() if _positive(data)}
    return documents, len(liked)


def _positive(data: object) -> bool:
    value = data.get("value", 0) if isinstance(data, dict) else 0
    return isinstance(value, (int, float)) and value > 0


class Refresher:
    def __init__(self, settings: Settings, engine: Engine, desk: TrainingDesk) -> None:
        self.settings, self.engine, self.desk = settings, engine, desk
        self.ledger = BudgetLedger.from_settings(settings, engine)

    def check(self) -> RefreshCheck:
        train = self.settings.training
        with Session(self.engine) as session:
            live = session.execute(
                select(col(TrainingRunRow.id)).where(col(TrainingRunRow.status).in_((QUEUED, RUNNING)))
            ).first()
            last = session.execute(
                select(col(TrainingRunRow.id), col(TrainingRunRow.created_at))
                .where(col(TrainingRunRow.dry_run).is_(False))
                .order_by(col(TrainingRunRow.id).desc())
                .limit(1)
            ).first()
        last_id, since = (int(last[0]), last[1]) if last is not None else (None, None)
        documents, rated = accumulated(self.engine, since)
        left = self.ledger.state().epsilon_remaining

        def verdict(due: bool, reason: str) -> RefreshCheck:
            return RefreshCheck(since, last_id, documents, rated, left, due, reason)

        if live is not None:
            return verdict(False, f"run #{live[0]} is queued or running")
        if documents < train.refresh_min_documents:
            return verdict(False, f"{documents} of {train.refresh_min_documents} new or changed documents")
        if rated < train.refresh_min_rated:
            return verdict(False, f"{rated} of {train.refresh_min_rated} 👍-rated questions")
        if left < train.epsilon:
            return verdict(False, f"the privacy budget has ε={left:.3g} left, a run needs {train.epsilon:g}")
        return verdict(True, f"{documents} new or changed documents and {rated} 👍-rated questions")

    async def run_once(self, notifier: AdminNotifier | None = None) -> str | None:
        """Queue a retrain when one is due and tell the admins; returns the desk's reply, or None."""
        check = await asyncio.to_thread(self.check)
        if not check.due:
            log.info("scheduled refresh: not due (%s)", check.reason)
            return None
        try:
            reply = await self.desk.retrain(ACTOR, epsilon=None, epochs=None, dry_run=False)
        except TrainingRefused as exc:  # another replica queued one meanwhile, or the settings lack a student
            log.warning("scheduled refresh: the retrain was refused: %s", exc.message)
            return None
        after = f" since run #{check.last_run}" if check.last_run is not None else ""
        text = f"Scheduled refresh: {check.reason}{after}. {reply}"
        if notifier is not None:
            queued = await asyncio.to_thread(self._queued_id)
            await notifier.tell(f"train-refresh-run-{queued}", text)
        return text

    def _queued_id(self) -> int | None:
        """The run the refresh just queued (the announcement's message key)."""
        with Session(self.engine) as session:
            newest = session.execute(
                select(func.max(col(TrainingRunRow.id))).where(col(TrainingRunRow.requested_by) == ACTOR)
            ).scalar_one()
        return int(newest) if newest is not None else None
