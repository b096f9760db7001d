"""Checking the audit chain: link by link, against its key, and against the signed checkpoints.

What each finding means (the `reason` of a Problem):

- "altered: …": an entry's content no longer matches its MAC (or, for a legacy entry, its hash).
- "does not chain …" / "expected entry N here …": entries were removed or reordered in the middle.
- "truncated: checkpoint says M entries, found K": the newest entries were deleted.
- "differs from the checkpoint …": the chain was rewritten after that entry was checkpointed.
- key problems: the key is missing or another one, so keyed entries cannot be checked; this is said
  once per run of entries and is not mistaken for tampering.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from core.models import AuditRow, as_utc
from privacy.audit_keys import AuditKey, Checkpoint, CheckpointSink

GENESIS = "0" * 64


@dataclass(frozen=True, slots=True)
class Problem:
    seq: int  # 0: the log as a whole (the checkpoint file, the key)
    reason: str


@dataclass(slots=True)
class VerifyReport:
    checked: int = 0
    problems: list[Problem] = field(default_factory=list)
    legacy: int = 0  # entries from before the key: plain SHA-256 links
    keyed: int = 0
    checkpoints: int = 0  # checkpoints the chain was found to match
    last_checkpoint: int | None = None  # the entry count of the newest valid checkpoint
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def canonical(seq: int, at: datetime, actor: str, action: str, target: str,
              params: dict[str, Any], outcome: str) -> str:  # fmt: skip
    """The entry as the MAC sees it: a JSON array, UTC time to the microsecond, sorted keys."""
    return json.dumps(
        [seq, as_utc(at).isoformat(timespec="microseconds"), actor, action, target, params, outcome],
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
        default=str,
    )


def entry_hash(prev_hash: str, seq: int, at: datetime, actor: str, action: str, target: str,
               params: dict[str, Any], outcome: str) -> str:  # fmt: skip
    """A legacy (unkeyed) link: SHA-256 over the previous hash and the canonical entry."""
    body = canonical(seq, at, actor, action, target, params, outcome)
    return hashlib.sha256(f"{prev_hash}\n{body}".encode()).hexdigest()


def entry_mac(key: AuditKey, prev_hash: str, seq: int, at: datetime, actor: str, action: str, target: str,
              params: dict[str, Any], outcome: str) -> str:  # fmt: skip
    """A keyed link: HMAC-SHA256 under `key` over the previous MAC, the key's id and the entry."""
    body = canonical(seq, at, actor, action, target, params, outcome)
    return key.mac(f"{prev_hash}\n{key.id}\n{body}")


def _args(row: AuditRow) -> tuple[Any, ...]:
    return (row.prev_hash, row.seq, row.at, row.actor, row.action, row.target, row.params, row.outcome)


@dataclass(slots=True)
class _Run:
    """Consecutive entries that cannot be checked for the same reason (reported once)."""

    reason: str
    first: int
    last: int


def _checkpoints(
    sink: CheckpointSink | None, key: AuditKey | None, report: VerifyReport
) -> dict[int, list[tuple[int, Checkpoint]]]:
    """The sink's checkpoints whose signature holds, by entry count; the rest become problems."""
    if sink is None or key is None:
        if sink is not None:
            report.notes.append("checkpoints not checked: without the audit key their signatures cannot be")
        return {}
    try:
        found, bad = sink.read()
    except FileNotFoundError:
        report.notes.append(f"no checkpoint file at {sink.path}")
        return {}
    except OSError as exc:
        report.problems.append(Problem(0, f"the checkpoint file {sink.path} cannot be read: {exc}"))
        return {}
    by_entries: dict[int, list[tuple[int, Checkpoint]]] = {}
    other_keys: set[str] = set()
    for line, reason in bad:
        report.problems.append(Problem(0, f"checkpoint file line {line}: {reason}"))
    for line, checkpoint in found:
        if checkpoint.key_id != key.id:
            other_keys.add(checkpoint.key_id)
        elif not checkpoint.valid(key):
            report.problems.append(Problem(0, f"checkpoint file line {line}: its signature does not verify"))
        else:
            by_entries.setdefault(checkpoint.entries, []).append((line, checkpoint))
            if checkpoint.gap:
                first, last = checkpoint.gap
                report.notes.append(f"entries {first}-{last} were written while checkpoints could not be")
    if other_keys:
        keys = ", ".join(sorted(other_keys))
        report.problems.append(Problem(0, f"checkpoints signed with another audit key ({keys}) were skipped"))
    if by_entries:
        report.last_checkpoint = max(by_entries)
    return by_entries


def _check_link(row: AuditRow, key: AuditKey | None, keyed_seen: bool, report: VerifyReport) -> str | None:
    """The problem with one entry's own MAC or hash, or a reason it cannot be checked ("!…")."""
    if not row.key_id:
        report.legacy += 1
        if keyed_seen:
            return "altered: an unkeyed entry after keyed ones (the chain was rewritten without the key)"
        if entry_hash(*_args(row)) != row.hash:
            return "content does not match its hash: it was changed"
        return None
    report.keyed += 1
    if key is None:
        return "!no audit key is configured"
    if row.key_id != key.id:
        return f"!written with another audit key (id {row.key_id}; the configured key is {key.id})"
    if not hmac.compare_digest(entry_mac(key, *_args(row)), row.hash):
        return "altered: its content does not match its MAC"
    return None


def verify_chain(
    rows: Iterable[AuditRow],
    *,
    key: AuditKey | None,
    sink: CheckpointSink | None,
    key_problem: str | None = None,
) -> VerifyReport:
    """Walk `rows` (ordered by seq) once; see the module docstring for what is reported."""
    report = VerifyReport()
    checkpoints = _checkpoints(sink, key, report)
    prev, expected, keyed_seen, last_seq = GENESIS, 1, False, 0
    runs: list[_Run] = []
    for row in rows:
        report.checked += 1
        if row.seq != expected:
            report.problems.append(Problem(row.seq, f"expected entry {expected} here: entries are missing"))
        if row.prev_hash != prev:
            report.problems.append(Problem(row.seq, "does not chain to the entry before it"))
        finding = _check_link(row, key, keyed_seen, report)
        keyed_seen = keyed_seen or bool(row.key_id)
        if finding and finding.startswith("!"):
            if runs and runs[-1].reason == finding[1:] and runs[-1].last == row.seq - 1:
                runs[-1].last = row.seq
            else:
                runs.append(_Run(finding[1:], row.seq, row.seq))
        elif finding:
            report.problems.append(Problem(row.seq, finding))
        for line, checkpoint in checkpoints.pop(row.seq, []):
            if hmac.compare_digest(checkpoint.head, row.hash):
                report.checkpoints += 1
            else:
                report.problems.append(Problem(row.seq, (
                    f"differs from the checkpoint of {checkpoint.at} (checkpoint file line {line}): "
                    "the log was rewritten after it was checkpointed"
                )))  # fmt: skip
        prev, expected, last_seq = row.hash, row.seq + 1, row.seq
    for run in runs:
        detail = f" ({key_problem})" if key_problem and run.reason.startswith("no audit key") else ""
        span = f"entry {run.first}" if run.first == run.last else f"entries {run.first}-{run.last}"
        report.problems.append(Problem(run.first, f"{span} cannot be checked: {run.reason}{detail}"))
    beyond = [entries for entries in checkpoints if entries > last_seq]
    if beyond:
        newest = max(beyond)
        at = checkpoints[newest][0][1].at
        report.problems.append(Problem(last_seq + 1, (
            f"truncated: the checkpoint of {at} says {newest} entries, found {report.checked}"
        )))  # fmt: skip
    for entries in sorted(e for e in checkpoints if e <= last_seq):
        report.problems.append(Problem(entries, "missing: a checkpoint names this entry, the log has none"))
    return report
