"""The audit log: who did what, when, with which parameters, and how it ended.

Admin commands, training runs, model activations, source changes, refused requests and pushes
are appended here. The table is append-only (database triggers refuse UPDATE and DELETE) and
hash-chained: each entry's hash covers its content and the previous entry's hash, so editing,
deleting or reordering a past entry breaks every hash after it, which :func:`verify` reports.

    log = AuditLog(engine)
    log.record("U123", "admin.ingest", target="docs", params={"paths": ["docs"]}, outcome="ok")
    checked, problems = log.verify()
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select, text
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

from core.db import session_scope
from core.models import AuditRow, as_utc, utcnow

GENESIS = "0" * 64
_APPEND_ATTEMPTS = 50
_LOCK_KEY = 0x6B62_4155_4449_54  # "kbAUDIT": the advisory lock that serializes appends
# Parameter names whose values never reach the log, whatever the caller passes.
_SECRET_KEY = re.compile(r"pass(word|wd)?|secret|token|api[_-]?key|credential|authorization", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Problem:
    seq: int
    reason: str


def entry_hash(prev_hash: str, seq: int, at: datetime, actor: str, action: str, target: str,
               params: dict[str, Any], outcome: str) -> str:  # fmt: skip
    """SHA-256 over the previous hash and a canonical JSON of the entry (UTC time, sorted keys)."""
    body = json.dumps(
        [seq, as_utc(at).isoformat(timespec="microseconds"), actor, action, target, params, outcome],
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(f"{prev_hash}\n{body}".encode()).hexdigest()


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


class AuditLog:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record(
        self, actor: str, action: str, *, outcome: str, target: str = "", params: dict[str, Any] | None = None
    ) -> AuditRow:
        """Append one entry; concurrent writers (threads, processes, replicas) each get their own seq."""
        clean = scrub(params or {})
        actor, action, target, outcome = actor[:200], action[:100], target[:500], outcome[:500]
        for attempt in range(_APPEND_ATTEMPTS):
            try:
                with session_scope(self.engine) as session:
                    if self.engine.dialect.name == "postgresql":
                        # One appender at a time across processes and replicas; released at commit.
                        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
                    last = session.execute(
                        select(AuditRow).order_by(col(AuditRow.seq).desc()).limit(1)
                    ).scalar_one_or_none()
                    seq, prev = (last.seq + 1, last.hash) if last else (1, GENESIS)
                    at = utcnow()
                    digest = entry_hash(prev, seq, at, actor, action, target, clean, outcome)
                    row = AuditRow(
                        seq=seq, at=at, actor=actor, action=action, target=target, params=clean,
                        outcome=outcome, prev_hash=prev, hash=digest,
                    )  # fmt: skip
                    session.add(row)
                return row
            except IntegrityError:
                # Another writer took this seq (SQLite has no advisory lock): chain onto theirs.
                time.sleep(random.uniform(0, 0.01 * (attempt + 1)))
        raise RuntimeError("could not append to the audit log: too much contention")

    def tail(self, count: int = 20, *, action: str | None = None) -> list[AuditRow]:
        with Session(self.engine) as session:
            query = select(AuditRow).order_by(col(AuditRow.seq).desc()).limit(count)
            if action:
                query = query.where(col(AuditRow.action).startswith(action))
            return list(reversed(session.execute(query).scalars().all()))

    def verify(self) -> tuple[int, list[Problem]]:
        """Walk the chain from the first entry; returns (entries checked, problems found)."""
        problems: list[Problem] = []
        prev, expected_seq, checked = GENESIS, 1, 0
        for row in self._rows():
            checked += 1
            if row.seq != expected_seq:
                problems.append(Problem(row.seq, f"expected entry {expected_seq} here: entries are missing"))
            if row.prev_hash != prev:
                problems.append(Problem(row.seq, "does not chain to the entry before it"))
            actual = entry_hash(row.prev_hash, row.seq, row.at, row.actor, row.action, row.target, row.params,
                                row.outcome)  # fmt: skip
            if actual != row.hash:
                problems.append(Problem(row.seq, "content does not match its hash: it was changed"))
            prev, expected_seq = row.hash, row.seq + 1
        return checked, problems

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
