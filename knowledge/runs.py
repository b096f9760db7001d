"""Ingest runs: started with the process that runs them, kept alive by a heartbeat, finished or
found interrupted.

A run whose process was killed (kill -9, a crash, a power cut) never writes its end. The next
ingest or `kb status` marks it `interrupted` and records that in the audit log: on the same host
when its process is gone, on another host (or for a run without a pid) when its heartbeat is
older than STALE_AFTER.
"""

from __future__ import annotations

import logging
import os
import socket
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, select
from sqlmodel import Session, col

from core.db import session_scope
from core.models import IngestRunRow, as_utc, utcnow

if TYPE_CHECKING:
    from privacy.audit import AuditLog

log = logging.getLogger(__name__)

STALE_AFTER = timedelta(minutes=30)
HEARTBEAT_EVERY_S = 15.0


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


class IngestRuns:
    """`audit` is the log an interrupted run is recorded in; without one, the log as the process's
    settings (its KB_* environment, as every `kb` command reads them) key it."""

    def __init__(self, engine: Engine, *, audit: AuditLog | None = None) -> None:
        self.engine = engine
        self.audit = audit
        self.host = socket.gethostname()[:255]

    def start(self, paths: list[str]) -> int:
        self.reap()
        with session_scope(self.engine) as session:
            now = utcnow()
            run = IngestRunRow(started_at=now, paths=paths, pid=os.getpid(), host=self.host, heartbeat_at=now)
            session.add(run)
            session.flush()
            assert run.id is not None
            return run.id

    def heartbeat(self, run_id: int) -> None:
        with session_scope(self.engine) as session:
            run = session.get(IngestRunRow, run_id)
            if run is not None and run.status == "running":
                run.heartbeat_at = utcnow()
                session.add(run)

    def finish(
        self,
        run_id: int,
        *,
        status: str,
        counts: dict[str, int],
        problems: list[dict[str, str]],
    ) -> None:
        with session_scope(self.engine) as session:
            run = session.get(IngestRunRow, run_id)
            assert run is not None
            run.status, run.finished_at, run.problems = status, utcnow(), problems
            for name, value in counts.items():
                setattr(run, name, value)
            session.add(run)

    def reap(self, *, now: datetime | None = None) -> list[IngestRunRow]:
        """Mark runs whose process died `interrupted`, each with an audit entry; returns them."""
        now = now or utcnow()
        with Session(self.engine) as session:
            running = list(
                session.execute(select(IngestRunRow).where(col(IngestRunRow.status) == "running")).scalars()
            )
        dead = [(run, reason) for run in running if (reason := self._why_dead(run, now))]
        marked = []
        for run, reason in dead:
            with session_scope(self.engine) as session:
                row = session.get(IngestRunRow, run.id)
                if row is None or row.status != "running":
                    continue  # another process marked it first
                row.status, row.finished_at = "interrupted", now
                row.problems = [*row.problems, {"path": "", "reason": f"interrupted: {reason}"}]
                session.add(row)
            marked.append(row)
            self._audit(row, reason)
        return marked

    def _why_dead(self, run: IngestRunRow, now: datetime) -> str:
        """Why the run's process is taken for dead, or "" while it may still be running."""
        if run.pid is not None and run.host == self.host:
            return "" if process_alive(run.pid) else f"its process {run.pid} on {run.host} is gone"
        last = as_utc(run.heartbeat_at or run.started_at)
        if now - last > STALE_AFTER:
            where = f"process {run.pid} on {run.host}" if run.pid is not None else "its process"
            return f"no heartbeat from {where} since {last:%Y-%m-%d %H:%M:%S} UTC"
        return ""

    def _audit_log(self) -> AuditLog:
        if self.audit is None:
            from core.settings import load_settings
            from privacy.audit import AuditLog

            self.audit = AuditLog.from_settings(load_settings(), self.engine)
        return self.audit

    def _audit(self, run: IngestRunRow, reason: str) -> None:
        params: dict[str, Any] = {
            "pid": run.pid,
            "host": run.host,
            "started_at": as_utc(run.started_at).isoformat(),
            "paths": list(run.paths)[:20],
        }
        try:
            self._audit_log().record(
                "system", "ingest.interrupted", target=f"ingest run {run.id}", params=params, outcome=reason
            )
        except Exception:  # the run is marked either way; a failing audit write must not stop an ingest
            log.exception("could not audit the interrupted ingest run %s", run.id)
