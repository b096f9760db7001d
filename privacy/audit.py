"""The audit log: who did what, when, with which parameters, and how it ended.

Admin commands, training runs, model activations, source changes, refused requests and pushes
are appended here. The table is append-only (database triggers refuse UPDATE and DELETE) and
chained: each entry's MAC covers its content and the previous entry's MAC. The MAC is an
HMAC-SHA256 under a key kept outside the database (privacy/audit_keys.py), so someone who can
write the database can neither edit an entry nor rewrite the chain from it onwards unseen. Every
`checkpoint_every` entries the chain's length and head go, signed, to a file outside the database,
so a deleted tail shows too. :meth:`AuditLog.report` says which of these happened.

Entries written before the key existed are plain SHA-256 links (`key_id` empty): they are checked
as before and counted as legacy; the first keyed entry's MAC covers the last of them, so they
cannot be rewritten unseen either. A legacy entry after a keyed one is reported.

    log = AuditLog.from_settings(settings, engine)
    log.record("U123", "admin.ingest", target="docs", params={"paths": ["docs"]}, outcome="ok")
    checked, problems = log.verify()
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, select, text
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

from core.db import session_scope
from core.models import AuditRow, utcnow
from core.settings import Settings
from privacy.audit_keys import AuditKey, CheckpointSink, checkpoint_path, load_key
from privacy.audit_verify import GENESIS, Problem, VerifyReport, entry_hash, entry_mac, verify_chain

__all__ = ["GENESIS", "AuditLog", "Problem", "VerifyReport", "entry_hash", "entry_mac", "scrub"]

log = logging.getLogger(__name__)

_APPEND_ATTEMPTS = 50
_LOCK_KEY = 0x6B62_4155_4449_54  # "kbAUDIT": the advisory lock that serializes appends
# Parameter names whose values never reach the log, whatever the caller passes.
_SECRET_KEY = re.compile(r"pass(word|wd)?|secret|token|api[_-]?key|credential|authorization", re.IGNORECASE)
GAP_ACTION = "audit.checkpoint_unwritable"


def scrub(params: dict[str, Any]) -> dict[str, Any]:
    """A JSON-safe copy of `params` with secret-looking keys masked (nested too)."""

    def clean(key: str, value: Any) -> Any:
        if _SECRET_KEY.search(key):
            return "[SECRET]"
        if isinstance(value, dict):
            return {str(k): clean(str(k), v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(key, v) for v in value]
        if value is None or isinstance(value, bool | int | float | str):
            return value
        return str(value)

    result: dict[str, Any] = clean("", params)
    return result


@dataclass(slots=True)
class _Checkpoints:
    """This process's checkpoint state: the newest entry appended, and what is not checkpointed yet."""

    sink: CheckpointSink
    every: int
    pending: int = 0
    last: tuple[int, str] | None = None  # (seq, mac) of the newest entry this process appended
    gap_start: int | None = None  # first entry appended while the sink could not be written
    gap_recorded: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


class AuditLog:
    """Append and check the audit log; without a `key`, entries are legacy SHA-256 links (tests, tools)."""

    def __init__(
        self,
        engine: Engine,
        *,
        key: AuditKey | None = None,
        sink: CheckpointSink | None = None,
        checkpoint_every: int = 1,
        key_problem: str | None = None,
    ) -> None:
        self.engine = engine
        self.key = key
        self.key_problem = key_problem
        self._checkpoints = _Checkpoints(sink, checkpoint_every) if sink is not None else None
        self._warned = False

    @classmethod
    def from_settings(cls, settings: Settings, engine: Engine) -> AuditLog:
        """The log as the service writes it: keyed and checkpointed as configured (warns, never fails)."""
        loaded = load_key(settings, create=True)
        if loaded.problem:
            log.warning("audit entries will be written without a key: %s", loaded.problem)
        sink = CheckpointSink(checkpoint_path(settings))
        if (unwritable := sink.writable()) is not None:
            log.warning("%s; entries are still written and the gap is recorded", unwritable)
        return cls(
            engine, key=loaded.key, sink=sink, checkpoint_every=settings.privacy.audit_checkpoint_every,
            key_problem=loaded.problem,
        )  # fmt: skip

    def record(
        self, actor: str, action: str, *, outcome: str, target: str = "", params: dict[str, Any] | None = None
    ) -> AuditRow:
        """Append one entry; concurrent writers (threads, processes, replicas) each get their own seq."""
        clean = scrub(params or {})
        actor, action, target, outcome = actor[:200], action[:100], target[:500], outcome[:500]
        if self.key is None and self.key_problem and not self._warned:
            self._warned = True
            log.warning("audit entry written without a key (%s): verification reports it", self.key_problem)
        for attempt in range(_APPEND_ATTEMPTS):
            try:
                row = self._append(actor, action, target, clean, outcome)
            except IntegrityError:
                # Another writer took this seq (SQLite has no advisory lock): chain onto theirs.
                time.sleep(random.uniform(0, 0.01 * (attempt + 1)))
                continue
            self._after_append(row)
            return row
        raise RuntimeError("could not append to the audit log: too much contention")

    def _append(self, actor: str, action: str, target: str, params: dict[str, Any], outcome: str) -> AuditRow:
        with session_scope(self.engine) as session:
            if self.engine.dialect.name == "postgresql":
                # One appender at a time across processes and replicas; released at commit.
                session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
            last = session.execute(
                select(AuditRow).order_by(col(AuditRow.seq).desc()).limit(1)
            ).scalar_one_or_none()
            seq, prev = (last.seq + 1, last.hash) if last else (1, GENESIS)
            at = utcnow()
            entry = (prev, seq, at, actor, action, target, params, outcome)
            if self.key is not None:
                digest, key_id = entry_mac(self.key, *entry), self.key.id
            else:
                digest, key_id = entry_hash(*entry), ""
            row = AuditRow(
                seq=seq, at=at, actor=actor, action=action, target=target, params=params,
                outcome=outcome, prev_hash=prev, hash=digest, key_id=key_id,
            )  # fmt: skip
            session.add(row)
        return row

    def _after_append(self, row: AuditRow) -> None:
        state = self._checkpoints
        if state is None or self.key is None:
            return
        with state.lock:
            # A process's first entry is checkpointed at once: a CLI command writes only one or two.
            first = state.last is None
            if state.last is None or row.seq > state.last[0]:
                state.last = (row.seq, row.hash)
            state.pending += 1
            due = first or state.pending >= state.every
        if due:
            self.checkpoint()

    def checkpoint(self) -> bool:
        """Sign the newest entry this process appended into the sink; False when nothing was written.

        Called every `checkpoint_every` entries and at shutdown. When the sink cannot be written,
        the entries stay in the database, the first such entry is remembered, and an entry saying
        so is appended once; the next checkpoint that gets through names the gap.
        """
        from privacy.audit_keys import Checkpoint

        state, key = self._checkpoints, self.key
        if state is None or key is None:
            return False
        with state.lock:
            if state.last is None or state.pending == 0:
                return False
            seq, head = state.last
            gap = (state.gap_start, seq) if state.gap_start is not None else None
            try:
                state.sink.append(Checkpoint.sign(key, entries=seq, head=head, gap=gap))
            except OSError as exc:
                problem = f"{state.sink.path}: {exc.strerror or exc}"
                if state.gap_start is None:
                    state.gap_start = seq
                record_gap, state.gap_recorded = not state.gap_recorded, True
            else:
                state.pending, state.gap_start, state.gap_recorded = 0, None, False
                return True
        log.warning("could not write the audit checkpoint of entry %d (%s)", seq, problem)
        if record_gap:
            self.record("kb", GAP_ACTION, target=str(state.sink.path), params={"from_entry": seq},
                        outcome=f"checkpoints not written: {problem}")  # fmt: skip
        return False

    def close(self) -> None:
        """Checkpoint what is not checkpointed yet (at shutdown)."""
        self.checkpoint()

    def tail(self, count: int = 20, *, action: str | None = None) -> list[AuditRow]:
        with Session(self.engine) as session:
            query = select(AuditRow).order_by(col(AuditRow.seq).desc()).limit(count)
            if action:
                query = query.where(col(AuditRow.action).startswith(action))
            return list(reversed(session.execute(query).scalars().all()))

    def verify(self) -> tuple[int, list[Problem]]:
        """Walk the chain from the first entry; returns (entries checked, problems found)."""
        report = self.report()
        return report.checked, report.problems

    def report(self, *, sink: CheckpointSink | None = None, key_problem: str | None = None) -> VerifyReport:
        """The chain checked link by link, against the key and the checkpoints (see audit_verify)."""
        sink = sink or (self._checkpoints.sink if self._checkpoints else None)
        problem = key_problem or self.key_problem
        return verify_chain(self._rows(), key=self.key, sink=sink, key_problem=problem)

    def _rows(self, batch: int = 5000) -> Iterator[AuditRow]:
        last = 0
        while True:
            with Session(self.engine) as session:
                rows = session.execute(
                    select(AuditRow).where(col(AuditRow.seq) > last).order_by(col(AuditRow.seq)).limit(batch)
                ).scalars().all()  # fmt: skip
            if not rows:
                return
            yield from rows
            last = rows[-1].seq
