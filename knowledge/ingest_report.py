"""What one ingest run did: counts, problems, notes for the user, and the passages it flagged."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Problem:
    path: str
    reason: str


@dataclass(slots=True)
class IngestReport:
    run_id: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    chunks: int = 0
    ignored: int = 0
    skipped: list[Problem] = field(default_factory=list)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)  # what the user should know; not problems
    flagged: list[dict[str, str]] = field(default_factory=list)  # document, section, reasons

    @property
    def ok(self) -> bool:
        return not self.skipped

    def counts(self) -> dict[str, int]:
        return {
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "removed": self.removed,
            "skipped": len(self.skipped),
            "chunks": self.chunks,
            "flagged": len(self.flagged),
        }

    def flagged_documents(self) -> dict[str, dict[str, Any]]:
        """The flagged passages by document, for the audit: how many chunks, their sections and
        reasons (the audit masks keys that look like "pass...", hence "chunks")."""
        result: dict[str, dict[str, Any]] = {}
        for item in self.flagged:
            entry = result.setdefault(item["document"], {"chunks": 0, "sections": [], "reasons": []})
            entry["chunks"] += 1
            for key, value in (("sections", item["section"]), ("reasons", item["reasons"])):
                if value and value not in entry[key]:
                    entry[key].append(value)
        return result
