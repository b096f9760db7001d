"""Syncing declared sources: each one read, written through the ingest, its state and audit kept.

>>> runner = SourceRunner(kb, load_sources(settings.sources_path), environ=os.environ)  # doctest: +SKIP
>>> [r.status for r in runner.sync_all(full=False)]                                      # doctest: +SKIP
['ok', 'partial']

A source that fails is reported by name with its reason and the others still sync; its
documents from earlier syncs stay, because only a complete listing sweeps (see each reader).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from core.models import SourceStateRow, utcnow
from knowledge.errors import KnowledgeError
from knowledge.service import KnowledgeBase
from knowledge.sources.api import ApiReader
from knowledge.sources.config import (
    AnySource,
    ApiSource,
    FilesSource,
    SourceError,
    SourcesFile,
    SqlSource,
    audit_params,
    defaults_for,
    source_dict,
)
from knowledge.sources.http import UrlPolicy
from knowledge.sources.sql import SqlReader, encode_cursor
from knowledge.sources.state import SourceStates
from knowledge.sync import IngestReport, Problem, Progress
from knowledge.types import Document
from privacy.audit import AuditLog

log = logging.getLogger(__name__)


@dataclass(slots=True)
class SyncResult:
    """How one source's sync went: `ok`, `partial` (some records or files skipped) or `failed`
    (the source could not be read, or not to the end; nothing was swept)."""

    name: str
    kind: str
    status: str
    full: bool
    report: IngestReport
    cursor: dict[str, Any] | None
    documents: int

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "status": self.status,
            "full": self.full,
            **self.report.counts(),
            "documents": self.documents,
            "cursor": None if self.cursor is None else self.cursor.get("value"),
            "seconds": round(self.report.seconds, 3),
            "problems": [{"path": p.path, "reason": p.reason} for p in self.report.skipped],
        }


@dataclass(frozen=True, slots=True)
class _Outcome:
    report: IngestReport
    complete: bool
    cursor: dict[str, Any] | None
    full: bool = True  # every record was asked for (so deletions could be seen)


class SourceRunner:
    """Syncs the sources of one sources file into a knowledge base.

    `environ` supplies the variables that `${NAME}` in SQL URLs and `auth_env` refer to (the
    command line passes os.environ). With `audit`, every sync and removal is recorded as `actor`.
    """

    def __init__(
        self,
        kb: KnowledgeBase,
        sources: SourcesFile,
        *,
        environ: Mapping[str, str],
        audit: AuditLog | None = None,
        actor: str = "system",
    ) -> None:
        self.kb, self.sources, self.environ = kb, sources, environ
        self.audit, self.actor = audit, actor
        if audit is not None:  # runs found interrupted are recorded in the same log
            kb.store.runs.audit = audit
        self.states = SourceStates(kb.store.engine)
        self.policy = UrlPolicy(kb.settings.sources.url_allowlist)

    def select(self, names: Sequence[str] = ()) -> list[AnySource]:
        """The named sources (all of them when none are named); an unknown name raises first."""
        return [self.sources.get(name) for name in names] if names else list(self.sources.sources)

    def sync_all(self, names: Sequence[str] = (), *, full: bool = False) -> list[SyncResult]:
        return [self.sync(source, full=full) for source in self.select(names)]

    def sync(self, source: AnySource, *, full: bool = False, progress: Progress | None = None) -> SyncResult:
        """Sync one source; never raises for a problem with the source itself, only reports it."""
        started = utcnow()
        state = self.states.get(source.name)
        try:
            outcome = self._read(source, state, full=full, started=started, progress=progress)
        except KnowledgeError as exc:  # before a row was read: a variable, a folder, a URL
            outcome = _failed(source.name, str(exc), state)
        except Exception as exc:  # a bug in one source's reader must not stop the others
            log.exception("unexpected error syncing source %s", source.name)
            outcome = _failed(source.name, f"unexpected error: {exc!r}", state)
        report = outcome.report
        status = "failed" if not outcome.complete else "ok" if report.ok else "partial"
        documents = self.states.count_documents(self.document_source(source))
        self.states.save(
            source.name,
            kind=source.kind,
            cursor=outcome.cursor,
            synced_at=started,
            status=status,
            documents=documents,
            problems=[{"path": p.path, "reason": p.reason} for p in report.skipped],
            run_id=report.run_id or None,
        )
        result = SyncResult(source.name, source.kind, status, outcome.full, report, outcome.cursor, documents)
        first = report.skipped[0].reason if report.skipped else ""
        outcome_text = status if status == "ok" else f"{status}: {first}"
        self._record(
            "source.sync", source, outcome_text, {"kind": source.kind, "full": full, **report.counts()}
        )
        for document, flagged in report.flagged_documents().items():
            self._record("source.flagged", source, f"flagged: {document}", flagged)
        return result

    def document_source(self, source: AnySource) -> str:
        """The key its documents carry: a files source's as the registry knows its folder (the
        folder's name until its first sync), a declared source's name."""
        if isinstance(source, FilesSource):
            folder = self.sources.folder(source)
            return self.kb.store.owners.key_for_root(folder) or self.sources.document_source(source)
        return source.name

    def remove(self, source: AnySource, *, purge: bool) -> int:
        """Forget the source's state; with `purge`, delete its documents too. Returns how many were."""
        removed = 0
        if purge:  # asked for by name: every document goes, restorable until the retention ends
            previous = self.kb.store.with_policy(allow=True)
            try:
                report = self.kb.ingest_documents(
                    self.document_source(source), (), sweep=True, label=f"purge {source.name}"
                )
            finally:
                self.kb.store.policy = previous
            removed = report.removed
        self.states.delete(source.name)
        params = {**audit_params(source), "purge": purge, "removed": removed}
        self._record("source.remove", source, "ok", params)
        return removed

    def _read(
        self,
        source: AnySource,
        state: SourceStateRow | None,
        *,
        full: bool,
        started: datetime,
        progress: Progress | None,
    ) -> _Outcome:
        previous = state.cursor if state is not None else None
        if isinstance(source, FilesSource):
            folder = self.sources.folder(source)
            if not folder.is_dir():
                raise SourceError(f"source {source.name!r}: no folder at {folder}")
            report = self.kb.ingest([folder], prepare=defaults_for(source), progress=progress)
            return _Outcome(report, complete=True, cursor=None)
        if isinstance(source, SqlSource):
            return self._read_sql(source, previous, full=full, started=started, progress=progress)
        api = ApiReader(
            source,
            environ=self.environ,
            policy=self.policy,
            timeout_s=self.kb.settings.sources.timeout_s,
            max_bytes=self.kb.settings.ingest.max_file_bytes,
            now=started,
        )
        report = self._ingest(source, api.documents(), sweep=True, progress=progress)
        if not api.complete or api.cursor is None:
            return _Outcome(report, api.complete, previous)
        return _Outcome(report, complete=True, cursor=encode_cursor(api.cursor))

    def _read_sql(
        self,
        source: SqlSource,
        previous: dict[str, Any] | None,
        *,
        full: bool,
        started: datetime,
        progress: Progress | None,
    ) -> _Outcome:
        # A cursor is only good for the query and mapping it was read with: after an edit of the
        # source, every row is read again (and rows the new query leaves out are swept).
        config = _fingerprint(source)
        usable = previous is not None and previous.get("config") == config and not full
        sql = SqlReader(
            source,
            environ=self.environ,
            timeout_s=self.kb.settings.sources.timeout_s,
            since=previous if usable else None,
            now=started,
        )
        # A read of every row (first sync, --full, no updated_column) also finds deleted rows.
        report = self._ingest(source, sql.documents(), sweep=sql.since is None, progress=progress)
        if not sql.complete:
            return _Outcome(report, complete=False, cursor=previous, full=sql.since is None)
        cursor = None if sql.cursor is None else {**sql.cursor, "config": config}
        return _Outcome(report, complete=True, cursor=cursor, full=sql.since is None)

    def _ingest(
        self,
        source: SqlSource | ApiSource,
        items: Iterable[Document | Problem],
        *,
        sweep: bool,
        progress: Progress | None,
    ) -> IngestReport:
        apply = defaults_for(source)

        def prepared() -> Iterator[Document | Problem]:
            for item in items:
                yield apply(item) if isinstance(item, Document) else item

        return self.kb.ingest_documents(
            source.name, prepared(), sweep=sweep, label=source.name, progress=progress
        )

    def _record(self, action: str, source: AnySource, outcome: str, params: dict[str, Any]) -> None:
        if self.audit is not None:
            self.audit.record(self.actor, action, target=source.name, params=params, outcome=outcome)


def _failed(name: str, reason: str, state: SourceStateRow | None) -> _Outcome:
    report = IngestReport(skipped=[Problem(name, reason)])
    return _Outcome(report, complete=False, cursor=state.cursor if state is not None else None)


def _fingerprint(source: SqlSource) -> str:
    """Changes whenever what the rows are read with (URL, query, mapping, defaults) changes."""
    canonical = json.dumps(source_dict(source), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
