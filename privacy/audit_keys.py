"""The audit log's secrets outside the database: its HMAC key, and the sink of signed checkpoints.

Whoever can write the database can rewrite an unkeyed hash chain from any point and recompute every
hash after it, or delete its newest rows: both verify as intact. With the chain keyed (HMAC-SHA256)
by a key the database does not hold, a rewrite needs the key; with the chain's head and length
signed into a file elsewhere every few entries, a deleted tail shows as a checkpoint the database
no longer reaches.

    key = load_key(settings, create=True).key
    sink = CheckpointSink(Path("/audit/checkpoints.jsonl"))
    sink.append(Checkpoint.sign(key, entries=41, head="ab…"))
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.settings import Settings

log = logging.getLogger(__name__)

KEY_FILE = "audit.key"
CHECKPOINT_FILE = "audit-checkpoints.jsonl"
_ID_LABEL = b"halden-kb audit key id"


@dataclass(frozen=True, slots=True)
class AuditKey:
    """An HMAC key; `id` names it in each entry (so a changed key reads as such, not as tampering)."""

    secret: bytes

    @property
    def id(self) -> str:
        return hmac.new(self.secret, _ID_LABEL, hashlib.sha256).hexdigest()[:16]

    def mac(self, message: str) -> str:
        return hmac.new(self.secret, message.encode(), hashlib.sha256).hexdigest()

    def derive(self, purpose: str) -> bytes:
        """A separate key for another use (push links), so one leaked use reveals nothing of this one."""
        return hmac.new(self.secret, f"halden-kb derive {purpose}".encode(), hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class LoadedKey:
    """The configured key, or None with the reason (`problem`) when it cannot be had."""

    key: AuditKey | None
    source: str
    problem: str | None = None


def key_path(settings: Settings) -> Path:
    return settings.privacy.audit_key_file or settings.data_dir / KEY_FILE


def load_key(settings: Settings, *, create: bool = False) -> LoadedKey:
    """KB_AUDIT_KEY, else the key file; the default file is created (mode 0600) when `create` is set.

    A key file named explicitly is never created: missing, it is a problem to report, since a new
    key would make every entry signed with the old one unverifiable.
    """
    if settings.privacy.audit_key is not None:
        value = settings.privacy.audit_key.get_secret_value().strip()
        if value:
            return LoadedKey(AuditKey(value.encode()), "KB_AUDIT_KEY")
        return LoadedKey(None, "KB_AUDIT_KEY", "KB_AUDIT_KEY is set but blank")
    path = key_path(settings)
    try:
        value = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        if create and settings.privacy.audit_key_file is None:
            return LoadedKey(_create_key(path), str(path))
        return LoadedKey(None, str(path), f"the audit key file {path} is missing")
    except (OSError, UnicodeDecodeError) as exc:
        return LoadedKey(None, str(path), f"the audit key file {path} cannot be read: {exc}")
    if not value:
        return LoadedKey(None, str(path), f"the audit key file {path} is empty")
    return LoadedKey(AuditKey(value.encode()), str(path))


def _create_key(path: Path) -> AuditKey:
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_hex(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first: use theirs
        return AuditKey(path.read_text(encoding="utf-8").strip().encode())
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(value + "\n")
    log.warning(
        "created the audit key %s; keep a copy apart from the database's backups "
        "(or set KB_AUDIT_KEY_FILE to a secret mount)",
        path,
    )
    return AuditKey(value.encode())


def checkpoint_path(settings: Settings) -> Path:
    return settings.privacy.audit_checkpoint_path or settings.data_dir / CHECKPOINT_FILE


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The chain's length and head at a moment, signed with the audit key.

    `gap` names entries written while the sink could not be written (first and last seq), so the
    window in which a deleted tail would have gone unseen is on record.
    """

    entries: int
    head: str
    at: str
    key_id: str
    mac: str
    gap: tuple[int, int] | None = None

    @staticmethod
    def message(entries: int, head: str, at: str, gap: tuple[int, int] | None) -> str:
        return f"checkpoint\n{entries}\n{head}\n{at}\n{list(gap) if gap else ''}"

    @classmethod
    def sign(
        cls, key: AuditKey, *, entries: int, head: str, gap: tuple[int, int] | None = None
    ) -> Checkpoint:
        at = datetime.now(UTC).isoformat(timespec="microseconds")
        return cls(entries, head, at, key.id, key.mac(cls.message(entries, head, at, gap)), gap)

    def valid(self, key: AuditKey) -> bool:
        expected = key.mac(self.message(self.entries, self.head, self.at, self.gap))
        return self.key_id == key.id and hmac.compare_digest(expected, self.mac)

    def line(self) -> str:
        data: dict[str, Any] = {
            "entries": self.entries, "head": self.head, "at": self.at, "key_id": self.key_id, "mac": self.mac,
        }  # fmt: skip
        if self.gap:
            data["gap"] = list(self.gap)
        return json.dumps(data, separators=(",", ":")) + "\n"

    @classmethod
    def parse(cls, line: str) -> Checkpoint:
        """One line of the sink; ValueError when it is not a checkpoint."""
        data = json.loads(line)
        gap = data.get("gap")
        try:
            fields = (str(data["head"]), str(data["at"]), str(data["key_id"]), str(data["mac"]))
            return cls(int(data["entries"]), *fields, (int(gap[0]), int(gap[1])) if gap else None)
        except (KeyError, TypeError, IndexError) as exc:
            raise ValueError(f"not a checkpoint: {exc}") from exc


class CheckpointSink:
    """An append-only JSON-lines file of checkpoints; each is also logged (a second, remote copy
    wherever the log stream goes)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, checkpoint: Checkpoint) -> None:
        """OSError when the file cannot be written; the caller records the gap."""
        log.info("audit checkpoint %s", checkpoint.line().strip())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:  # one write of one short line: atomic
            handle.write(checkpoint.line())

    def writable(self) -> str | None:
        """None when the sink can be appended to, else why not (checked at start, to warn early)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8"):
                return None
        except OSError as exc:
            return f"the audit checkpoint file {self.path} cannot be written: {exc.strerror or exc}"

    def read(self) -> tuple[list[tuple[int, Checkpoint]], list[tuple[int, str]]]:
        """(line number, checkpoint) pairs, and (line number, reason) for lines that are not ones."""
        found: list[tuple[int, Checkpoint]] = []
        bad: list[tuple[int, str]] = []
        with self.path.open(encoding="utf-8", errors="replace") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    found.append((number, Checkpoint.parse(line)))
                except ValueError:
                    bad.append((number, "not a checkpoint"))
        return found, bad
