"""Training runs as rows: requested, claimed by one worker at a time, reported on, finished.

    runs = RunStore(engine)
    run = runs.create("slack:U0ADMIN", {"epsilon": 4.0, "epochs": 2})   # queued (or refused: busy)
    claimed = runs.claim("worker-1")                                    # running, or None
    runs.progress(claimed.id, step=3, total=40, loss=2.1)               # heartbeat; True: cancel asked
    runs.finish(claimed.id, "succeeded", report={...}, version=4)

One run at a time: `claim` hands out a queued run only while no other run is running with a fresh
heartbeat; a running run whose heartbeat is older than `stale_after_s` lost its worker (a crash, a
kill) and is handed out again to be resumed from its checkpoint under the same ledger reservation.
At most one run waits in the queue: a second retrain while one waits is refused, saying whose it is.
Every change is a conditional UPDATE, so two workers never claim the same run.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, select, update
from sqlmodel import Session, col

from core.db import session_scope
from core.models import TrainingRunRow, as_utc, utcnow
from core.training import TrainingRefused

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
FINISHED = (SUCCEEDED, FAILED, CANCELLED)
STALE_AFTER_S = 60.0


class RunStore:
    def __init__(self, engine: Engine, *, stale_after_s: float = STALE_AFTER_S) -> None:
        self.engine = engine
        self.stale_after = timedelta(seconds=stale_after_s)

    def create(self, actor: str, params: dict[str, Any], *, dry_run: bool = False) -> TrainingRunRow:
        with session_scope(self.engine) as session:
            waiting = (
                session.execute(select(TrainingRunRow).where(col(TrainingRunRow.status) == QUEUED))
                .scalars()
                .first()
            )
            if waiting is not None:
                raise TrainingRefused(
                    f"run #{waiting.id} requested by {waiting.requested_by} is already waiting to train",
                    hint="wait for it (`admin status`), or cancel it with `kb train cancel`",
                )
            row = TrainingRunRow(
                status=QUEUED, requested_by=actor[:200], params=params, dry_run=dry_run, created_at=utcnow()
            )
            session.add(row)
            session.flush()
            session.refresh(row)
            session.expunge(row)
            return row

    def get(self, run_id: int) -> TrainingRunRow | None:
        with Session(self.engine) as session:
            return session.get(TrainingRunRow, run_id)

    def recent(self, limit: int = 10) -> list[TrainingRunRow]:
        with Session(self.engine) as session:
            query = select(TrainingRunRow).order_by(col(TrainingRunRow.id).desc()).limit(limit)
            return list(session.execute(query).scalars().all())

    def running(self) -> TrainingRunRow | None:
        with Session(self.engine) as session:
            query = select(TrainingRunRow).where(col(TrainingRunRow.status) == RUNNING)
            return session.execute(query).scalars().first()

    def claim(self, worker: str) -> TrainingRunRow | None:
        """The run this worker should train now (a stale running one first), or None."""
        now = utcnow()
        running = self.running()
        if running is not None:
            beat = as_utc(running.heartbeat_at) if running.heartbeat_at else None
            if beat is not None and now - beat < self.stale_after:
                return None  # another worker is training: one run at a time
            return self._take(running, RUNNING, worker, resumed=True)
        with Session(self.engine) as session:
            query = select(TrainingRunRow).where(col(TrainingRunRow.status) == QUEUED)
            queued = session.execute(query.order_by(col(TrainingRunRow.id))).scalars().first()
        return self._take(queued, QUEUED, worker, resumed=False) if queued is not None else None

    def _take(self, row: TrainingRunRow, status: str, worker: str, *, resumed: bool) -> TrainingRunRow | None:
        now = utcnow()
        condition = (col(TrainingRunRow.id) == row.id) & (col(TrainingRunRow.status) == status)
        if resumed:  # nobody else took it over since we looked
            condition = condition & (col(TrainingRunRow.heartbeat_at) == row.heartbeat_at)
        values: dict[str, Any] = {
            "status": RUNNING, "worker": worker[:200], "heartbeat_at": now, "attempts": row.attempts + 1,
        }  # fmt: skip
        if not resumed:
            values["started_at"] = now
        with session_scope(self.engine) as session:
            changed = session.execute(update(TrainingRunRow).where(condition).values(**values))
        if getattr(changed, "rowcount", 0) != 1:
            return None
        return self.get(row.id or 0)

    def progress(self, run_id: int, **progress: Any) -> bool:
        """Record progress and beat the heartbeat; True when someone asked to cancel the run."""
        with session_scope(self.engine) as session:
            row = session.get(TrainingRunRow, run_id)
            if row is None:
                return True
            row.progress = {**row.progress, **progress}
            row.heartbeat_at = utcnow()
            return row.cancel_requested

    def finish(
        self,
        run_id: int,
        status: str,
        *,
        report: dict[str, Any] | None = None,
        error: str = "",
        version: int | None = None,
    ) -> None:
        with session_scope(self.engine) as session:
            row = session.get(TrainingRunRow, run_id)
            if row is None:
                return
            row.status, row.error, row.finished_at = status, error[:2000], utcnow()
            row.report = dict(report or {})
            row.version = version

    def cancel(self, run_id: int) -> str:
        """Cancel a queued run at once; ask a running one to stop at its next step."""
        with session_scope(self.engine) as session:
            row = session.get(TrainingRunRow, run_id)
            if row is None:
                raise TrainingRefused(
                    f"there is no training run #{run_id}", hint="`kb train list` shows them"
                )
            if row.status == QUEUED:
                row.status, row.finished_at = CANCELLED, utcnow()
                return f"Run #{run_id} cancelled before it started."
            if row.status == RUNNING:
                row.cancel_requested = True
                return f"Run #{run_id} will stop at its next step; ε already spent stays in the ledger."
            return f"Run #{run_id} already finished ({row.status})."


def describe(row: TrainingRunRow, *, epsilon_so_far: float | None = None) -> str:
    """One line about a run, for chat and `kb train list`; `epsilon_so_far` is what its steps spent."""
    params, progress = row.params, row.progress
    head = f"Run #{row.id} {row.status}"
    asked = f"ε={params.get('epsilon')}, {params.get('epochs')} epochs, by {row.requested_by}"
    if row.status == RUNNING and progress:
        stage = progress.get("stage", "training")
        step = f": step {progress['step']}/{progress.get('total', '?')}" if "step" in progress else ""
        loss = f", loss {progress['loss']:.3f}" if isinstance(progress.get("loss"), float) else ""
        if epsilon_so_far is None and isinstance(progress.get("epsilon"), float):
            epsilon_so_far = progress["epsilon"]
        spent = f", ε so far {epsilon_so_far:.3g}" if epsilon_so_far is not None else ""
        return f"{head} ({asked}); {stage}{step}{loss}{spent}."
    if row.status == SUCCEEDED:
        report = row.report
        figures = f"correctness {report.get('correctness', 0):.3f}" if "correctness" in report else ""
        return (
            f"{head} ({asked}): version {row.version}, ε spent {report.get('epsilon_spent')}, {figures}, "
            f"{report.get('activation', '')} in {report.get('elapsed_s', 0):.0f} s."
        )
    if row.status == FAILED:
        return f"{head} ({asked}): {row.error}"
    return f"{head} ({asked})."
