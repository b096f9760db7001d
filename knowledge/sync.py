"""Ingest: files -> Documents -> chunks -> embeddings -> database rows and index vectors.

Each document is written in its own transaction, so an interrupted run keeps what it finished
and the next run skips it (same content hash). A file that cannot be loaded is reported with
its reason and skipped; its previously ingested version, if any, is kept.

A folder's documents belong to its source (knowledge/owners.py): an ingest sweeps only what that
source owns under the folder, never another source's documents, and a sweep that would remove
more than the removal policy's share stops and asks. Removed documents are kept restorable
(knowledge/trash.py). Every written passage goes through the injection scan; flagged ones are
marked on their chunk row and carried on retrieved hits.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from knowledge.chunking import chunk_document, redact_document
from knowledge.embeddings import Embedder
from knowledge.errors import KnowledgeError, LoadError
from knowledge.index import VectorIndex
from knowledge.ingest_report import IngestReport as IngestReport  # re-exported: the ingest API
from knowledge.ingest_report import Problem as Problem
from knowledge.owners import Refused, Scope, file_part
from knowledge.runs import HEARTBEAT_EVERY_S
from knowledge.store import Store
from knowledge.types import Document
from privacy.guard import scan_document

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
"""Called as progress(path, done, total) after each file (total 0: not known in advance)."""


@dataclass(frozen=True, slots=True)
class _Target:
    given: Path  # as the user named it
    scope: Scope
    sweep: bool  # a whole folder: documents no longer in it are removed

    @property
    def source(self) -> str:
        return self.scope.key


def embedding_text(title: str, section: str, text: str) -> str:
    """What gets embedded for a chunk: its title and section give a short passage its context."""
    return "\n".join(part for part in (title, section, text) if part)


class Ingestor:
    def __init__(
        self,
        store: Store,
        embedder: Embedder,
        index: VectorIndex,
        *,
        chunk_tokens: int,
        overlap: int,
        max_bytes: int,
        prepare: Callable[[Document], Document] | None = None,
        redact: Callable[[str], str] | None = None,
    ) -> None:
        self.store, self.embedder, self.index = store, embedder, index
        self.chunk_tokens, self.overlap, self.max_bytes = chunk_tokens, overlap, max_bytes
        # Applied to each loaded file's documents, e.g. a declared source's default ACL groups.
        self.prepare = prepare
        self.redact = redact
        self._run_id: int | None = None
        self._beat = 0.0

    def run(self, paths: list[Path], *, progress: Progress | None = None) -> IngestReport:
        started = time.perf_counter()
        report = IngestReport(run_id=self.store.start_run([str(p) for p in paths]))
        self._run_id, self._beat = report.run_id, time.monotonic()
        status = "failed"
        try:
            targets = self._targets(paths, report)
            total, done = sum(len(t.scope.files) for t in targets), 0
            for target in targets:
                done = self._ingest_target(target, report, done, total, progress)
            status = "ok" if report.ok else "partial"
        finally:
            self._finish(report, status, started)
        return report

    def _ingest_target(
        self, target: _Target, report: IngestReport, done: int, total: int, progress: Progress | None
    ) -> int:
        scope = target.scope
        report.notes += scope.notes
        known = self.store.document_hashes(scope.key)
        owned = {doc_id for doc_id in known if scope.owns(doc_id)}
        if target.sweep:
            present = {f"{scope.key}:{f.relative_to(scope.root).as_posix()}" for f in scope.files}
            if self._refused(target, sorted(d for d in owned if file_part(d) not in present), owned, report):
                return done + len(scope.files)
        seen: set[str] = set()
        added_before = report.added
        for path in scope.files:
            self._ingest_file(path, target, known, seen, report)
            done += 1
            self._heartbeat()
            if progress:
                progress(str(path), done, total)
        if target.sweep:
            gone = sorted(owned - seen)
            if not self._refused(target, gone, owned, report):
                self.index.remove(self.store.delete_documents(gone, run_id=report.run_id))
                report.removed += len(gone)
        if report.added > added_before:
            report.notes += self.store.owners.copies_elsewhere(scope.key, sorted(seen - set(known)))
        self.store.owners.touch(scope.key)
        return done

    def _refused(self, target: _Target, gone: list[str], owned: set[str], report: IngestReport) -> bool:
        """Whether removing `gone` of the `owned` documents needs --allow-removals (then reported)."""
        policy = self.store.policy
        if not policy.refuses(len(gone), len(owned)):
            return False
        report.skipped.append(
            Problem(
                str(target.given),
                f"{len(gone)} of the {len(owned)} documents of source {target.source!r} "
                f"({target.scope.root}) are no longer there, more than the {policy.max_share:.0%} a "
                "sync removes unasked; nothing was removed. Check that this is the right folder; if "
                "the removals are intended, run again with --allow-removals (removed documents can be "
                f"restored with `kb sources restore` for {policy.retention_days} days)",
            )
        )
        return True

    def _heartbeat(self) -> None:
        if self._run_id is not None and time.monotonic() - self._beat >= HEARTBEAT_EVERY_S:
            self._beat = time.monotonic()
            self.store.heartbeat(self._run_id)

    def _finish(self, report: IngestReport, status: str, started: float) -> None:
        report.seconds = time.perf_counter() - started
        problems = [{"path": p.path, "reason": p.reason} for p in report.skipped]
        self.store.finish_run(report.run_id, status=status, counts=report.counts(), problems=problems)

    def ingest_documents(
        self,
        source: str,
        documents: Iterable[Document | Problem],
        *,
        sweep: bool = False,
        label: str | None = None,
        progress: Progress | None = None,
    ) -> IngestReport:
        """Write already-built documents of one source (a table, an API), skipping unchanged ones.

        `documents` may also yield Problems (a record without an id, say): they go to the report.
        With `sweep`, the source's documents that did not come are removed, but only when
        `documents` was read to the end: an error while reading it is reported under `label`
        (default: the source), and a partial listing is not taken for a removal. A name that a
        folder source has takes no documents (they would overwrite the folder's); sweeping it with
        no documents removes the folder source's documents (a purge).
        """
        started = time.perf_counter()
        name = label or source
        report = IngestReport(run_id=self.store.start_run([name]))
        self._run_id, self._beat = report.run_id, time.monotonic()
        status = "failed"
        try:
            owner = self.store.owners.claim_name(source)
            foreign = None
            if owner.kind == "folder":
                foreign = (
                    f"{source!r} is the name of the folder source {owner.root}; rename the declared source"
                )
            known = self.store.document_hashes(source)
            seen: set[str] = set()
            complete = self._ingest_stream(source, name, documents, known, seen, report, progress, foreign)
            if sweep and complete:
                gone = sorted(set(known) - seen)
                target = _Target(Path(name), Scope(source, Path(name), "", ()), sweep=True)
                if not self._refused(target, gone, set(known), report):
                    self.index.remove(self.store.delete_documents(gone, run_id=report.run_id))
                    report.removed += len(gone)
            status = "ok" if report.ok else "partial"
        finally:
            self._finish(report, status, started)
        return report

    def _ingest_stream(
        self,
        source: str,
        name: str,
        documents: Iterable[Document | Problem],
        known: dict[str, str],
        seen: set[str],
        report: IngestReport,
        progress: Progress | None,
        foreign: str | None = None,
    ) -> bool:
        """Write each document as it comes; False when reading `documents` failed half-way."""
        iterator, done = iter(documents), 0
        while True:
            try:
                item = next(iterator)
            except StopIteration:
                return True
            except Exception as exc:  # the source's failure, reported; our own write errors propagate
                if not isinstance(exc, KnowledgeError):
                    log.exception("unexpected error reading %s", name)
                reason = str(exc) if isinstance(exc, KnowledgeError) else f"unexpected error: {exc!r}"
                report.skipped.append(Problem(name, reason))
                return False
            if isinstance(item, Problem):
                report.skipped.append(item)
                continue
            if foreign is not None:
                report.skipped.append(Problem(name, foreign))
                return False
            if item.source != source or item.id in seen:
                why = f"belongs to source {item.source!r}" if item.source != source else "repeats an id"
                report.skipped.append(Problem(name, f"document {item.id!r} {why}; skipped"))
                continue
            seen.add(item.id)
            self._apply(self._redacted(item), known, report)
            done += 1
            self._heartbeat()
            if progress:
                progress(item.id, done, 0)

    def _targets(self, paths: list[Path], report: IngestReport) -> list[_Target]:
        # The loaders (pypdf, BeautifulSoup, python-docx) load on the first ingest, not with the
        # knowledge base: answering a question needs none of them.
        from knowledge.loaders import suffixes, supported

        targets = []
        for path in paths:
            if not path.exists():
                report.skipped.append(Problem(str(path), self._missing(path)))
                continue
            if path.is_dir():
                folder, files = path.resolve(), _walk(path, report)
                if not files:
                    kinds = ", ".join(suffixes())
                    report.skipped.append(
                        Problem(str(path), f"no supported documents ({kinds}) in this folder")
                    )
                    continue
                rebased = [folder / f.relative_to(path) for f in files]
                sweep = True
            elif supported(path):
                folder, rebased, sweep = path.resolve().parent, [path.resolve().parent / path.name], False
            else:
                report.skipped.append(
                    Problem(str(path), f"unsupported file type {path.suffix or '(none)'!r}")
                )
                continue
            try:
                scope = self.store.owners.resolve(folder, rebased)
            except Refused as exc:
                report.skipped.append(Problem(str(path), str(exc)))
                continue
            targets.append(_Target(given=path, scope=scope, sweep=sweep))
        return targets

    def _missing(self, path: Path) -> str:
        """Why a path is not there, naming the source that was read from it if there was one."""
        real = str(path.resolve())
        for row in self.store.owners.all():
            if row.root == real:
                return (
                    f"no such file or directory; source {row.key!r} was read from there: if it moved, "
                    f"re-point it with `kb sources move {row.key} NEW_FOLDER`"
                )
        return "no such file or directory"

    def _ingest_file(
        self, path: Path, target: _Target, known: dict[str, str], seen: set[str], report: IngestReport
    ) -> None:
        from knowledge.loaders import load_file

        file_id = f"{target.source}:{path.relative_to(target.scope.root).as_posix()}"
        try:
            documents = load_file(
                path,
                root=target.scope.root,
                source=target.source,
                max_bytes=self.max_bytes,
                on_note=lambda note: report.skipped.append(Problem(str(path), note)),
            )
        except Exception as exc:
            # A broken file is not a deleted one: keep what it gave last time, rows (`#...`) included.
            seen.update(doc_id for doc_id in known if doc_id == file_id or doc_id.startswith(f"{file_id}#"))
            if isinstance(exc, LoadError):
                report.skipped.append(Problem(str(path), str(exc).removeprefix(f"{path}: ")))
            else:  # a loader bug must not sink the whole run
                log.exception("unexpected error loading %s", path)
                reason = f"unexpected error: {exc.__class__.__name__}: {exc}"
                report.skipped.append(Problem(str(path), reason))
            return
        if self.prepare is not None:
            documents = [self.prepare(document) for document in documents]
        for document in map(self._redacted, documents):
            seen.add(document.id)
            self._apply(document, known, report)

    def _apply(self, document: Document, known: dict[str, str], report: IngestReport) -> None:
        """Write `document` unless its hash is the one on record; count it unchanged, updated or added."""
        if known.get(document.id) == document.content_hash:
            report.unchanged += 1
            return
        report.chunks += self._write(document, report)
        if document.id in known:
            report.updated += 1
        else:
            report.added += 1

    def _redacted(self, document: Document) -> Document:
        """The document as the index may hold it (the KB_REDACT_INDEX_KINDS policy); redacting before
        the hash check means a policy change re-ingests what it changes."""
        if self.redact is None:
            return document
        return redact_document(document, self.redact)

    def _write(self, document: Document, report: IngestReport) -> int:
        prefix = max(
            (
                self.embedder.count_tokens(embedding_text(document.title, s.path, ""))
                for s in document.sections
            ),
            default=0,
        )
        budget = max(min(self.chunk_tokens, self.embedder.max_tokens) - prefix - 2, 16)
        chunks = chunk_document(
            document,
            count_tokens=self.embedder.count_tokens,
            max_tokens=budget,
            overlap=min(self.overlap, budget // 2),
        )
        texts = [embedding_text(document.title, c.section, c.text) for c in chunks]
        vectors = self.embedder.encode(texts)
        flags = ["; ".join(scan_document(text)) for text in texts]
        report.flagged += [
            {"document": document.id, "section": c.section, "reasons": flag}
            for c, flag in zip(chunks, flags, strict=True)
            if flag
        ]
        removed, added = self.store.replace_document(
            document, chunks, vectors, run_id=self._run_id, flags=flags
        )
        self.index.remove(removed)
        self.index.add(added, vectors)
        return len(chunks)


def _walk(root: Path, report: IngestReport) -> list[Path]:
    """Supported files under root, in a stable order; hidden files and folders are left out, and
    so is anything a symbolic link leads to outside the folder (it is reported, never read)."""
    from knowledge.loaders import supported

    files = []
    real_root = root.resolve()
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts):
            continue
        if path.is_symlink() and not path.exists():
            report.skipped.append(Problem(str(path), "broken symbolic link"))
        elif not path.resolve().is_relative_to(real_root):
            if path.is_symlink():  # the files beneath a linked folder are covered by this one report
                report.skipped.append(Problem(str(path), "a symbolic link out of the folder; not read"))
        elif not path.is_file():
            continue
        elif supported(path):
            files.append(path)
        else:
            report.ignored += 1
    return files
