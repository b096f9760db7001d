"""Database access for documents and chunks: the only place knowledge/ writes SQL."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import Engine, Select, bindparam, delete, func, select
from sqlmodel import Session, col

from core.db import session_scope
from core.models import (
    ChunkRow,
    DocumentChangeRow,
    DocumentRow,
    IngestRunRow,
    RemovedDocumentRow,
    as_utc,
    utcnow,
)
from knowledge.catalog import ChunkMeta
from knowledge.embeddings import Vectors
from knowledge.index import ID_CHECKSUM_MOD, Fingerprint
from knowledge.owners import SourceRegistry
from knowledge.runs import IngestRuns
from knowledge.trash import RemovalPolicy, Removed, as_removed, drop, move_to_trash, restore_from_trash
from knowledge.types import Chunk, Document, Hit


@dataclass(frozen=True, slots=True)
class Stats:
    documents: int
    chunks: int
    last_ingest: IngestRunRow | None


@dataclass(frozen=True, slots=True)
class Flagged:
    """A passage the ingest scan distrusts, for `kb sources flagged`."""

    chunk_id: int
    document_id: str
    title: str
    uri: str
    section: str
    reasons: str
    ingested_at: datetime


class Store:
    def __init__(self, engine: Engine, *, policy: RemovalPolicy | None = None) -> None:
        self.engine = engine
        # What a sync may remove unasked; the commands set it from the settings (KB_INGEST_*).
        self.policy = policy or RemovalPolicy()
        self.runs = IngestRuns(engine)
        self.owners = SourceRegistry(engine)

    def document_hashes(self, source: str | None = None) -> dict[str, str]:
        with Session(self.engine) as session:
            query = select(col(DocumentRow.id), col(DocumentRow.content_hash))
            if source is not None:
                query = query.where(col(DocumentRow.source) == source)
            return {row[0]: row[1] for row in session.execute(query)}

    def replace_document(
        self,
        document: Document,
        chunks: list[Chunk],
        vectors: Vectors,
        *,
        run_id: int | None = None,
        flags: list[str] | None = None,
    ) -> tuple[list[int], list[int]]:
        """Insert or update a document with its new chunks, and log the change, in one transaction.

        `flags` (one per chunk, "" for a clean one) are the ingest scan's reasons to distrust it.
        Returns (removed chunk ids, added chunk ids) for the index to mirror.
        """
        flags = flags or [""] * len(chunks)
        with session_scope(self.engine) as session:
            removed = self._chunk_ids(session, document.id)
            session.execute(delete(ChunkRow).where(col(ChunkRow.document_id) == document.id))
            fields: dict[str, object] = {
                "source": document.source,
                "uri": document.uri,
                "title": document.title,
                "content_hash": document.content_hash,
                "text_hash": document.text_hash,
                "size_bytes": document.size_bytes,
                "acl_groups": list(document.acl_groups),
                "tags": list(document.tags),
                "updated_at": document.updated_at,
                "ingested_at": utcnow(),
            }
            row = session.get(DocumentRow, document.id)
            kind = "added" if row is None else "updated"
            if row is None:
                row = DocumentRow.model_validate({"id": document.id, **fields})
            else:
                row.sqlmodel_update(fields)
            session.add(row)
            session.add(_change(row, kind, run_id))
            session.flush()  # the document row first: chunks reference it
            rows = [
                ChunkRow(
                    document_id=chunk.document_id,
                    ordinal=chunk.ordinal,
                    text=chunk.text,
                    section=chunk.section,
                    anchor=chunk.anchor,
                    page=chunk.page,
                    token_count=chunk.token_count,
                    embedding=vector.astype(np.float32).tobytes(),
                    flag=flag[:500],
                )
                for chunk, vector, flag in zip(chunks, vectors, flags, strict=True)
            ]
            session.add_all(rows)
            session.flush()
            return removed, [int(r.id) for r in rows if r.id is not None]

    def delete_documents(self, document_ids: list[str], *, run_id: int | None = None) -> list[int]:
        """Remove documents softly (restorable until purged), logging each; returns the removed
        chunk ids for the index to drop."""
        removed: list[int] = []
        now = utcnow()
        with session_scope(self.engine) as session:
            for document_id in document_ids:
                row = session.get(DocumentRow, document_id)
                if row is None:
                    continue
                session.add(_change(row, "deleted", run_id))
                removed += move_to_trash(session, row, at=now, run_id=run_id)
        return removed

    def removed(self, *, source: str | None = None) -> list[Removed]:
        """Removed documents that can still be restored, newest first."""
        with Session(self.engine) as session:
            query = select(RemovedDocumentRow).order_by(col(RemovedDocumentRow.id).desc())
            if source is not None:
                query = query.where(col(RemovedDocumentRow.source) == source)
            return [as_removed(row) for row in session.execute(query).scalars()]

    def restore(self, ids: list[int], *, run_id: int | None = None) -> tuple[list[str], list[str]]:
        """Put removed documents (by trash id) back: (restored ids, ids skipped as live again)."""
        restored: list[str] = []
        skipped: list[str] = []
        with session_scope(self.engine) as session:
            for trash_id in ids:
                removed = session.get(RemovedDocumentRow, trash_id)
                if removed is None:
                    continue
                row = restore_from_trash(session, removed)
                if row is None:
                    skipped.append(removed.document_id)
                    continue
                session.add(_change(row, "added", run_id))
                restored.append(row.id)
        return restored, skipped

    def purge(self, *, before: datetime | None = None) -> int:
        """Delete for good what was removed before `before` (default: the retention period ago)."""
        cutoff = before or utcnow() - timedelta(days=self.policy.retention_days)
        with session_scope(self.engine) as session:
            query = select(col(RemovedDocumentRow.id)).where(col(RemovedDocumentRow.removed_at) < cutoff)
            ids = [int(i) for i in session.execute(query).scalars()]
            drop(session, ids)
        return len(ids)

    def flagged(self) -> list[Flagged]:
        """Passages the ingest scan flagged, by document."""
        with Session(self.engine) as session:
            rows = session.execute(
                select(
                    col(ChunkRow.id), col(DocumentRow.id), col(DocumentRow.title), col(DocumentRow.uri),
                    col(ChunkRow.section), col(ChunkRow.flag), col(DocumentRow.ingested_at),
                )
                .join(DocumentRow, col(DocumentRow.id) == col(ChunkRow.document_id))
                .where(col(ChunkRow.flag) != "")
                .order_by(col(DocumentRow.id), col(ChunkRow.ordinal))
            ).all()  # fmt: skip
        return [Flagged(int(r[0]), r[1], r[2], r[3], r[4], r[5], as_utc(r[6])) for r in rows]

    def hits(
        self, scored: list[tuple[int, float]], *, query: Vectors | None = None
    ) -> list[tuple[Hit, list[str]]]:
        """Chunk ids with scores -> hits (in the same order) with their documents' ACL groups.

        With `query`, each hit's score is its cosine similarity to the query (from the stored
        embedding), so fused rankings still carry a calibrated score for abstention.
        """
        if not scored:
            return []
        statement = _HITS_WITH_EMBEDDING if query is not None else _HITS
        ids = [chunk_id for chunk_id, _ in scored]
        with self.engine.connect() as connection:
            rows: dict[int, Any] = {row[0]: row for row in connection.execute(statement, {"ids": ids})}
        result = []
        for chunk_id, score in scored:
            row = rows.get(chunk_id)
            if row is None:
                continue  # deleted since the index was searched
            if query is not None:
                score = float(np.frombuffer(row[11], dtype=np.float32) @ query)
            hit = Hit(
                flag=row[10],
                chunk_id=chunk_id,
                score=score,
                text=row[1],
                section=row[2],
                anchor=row[3],
                page=row[4],
                document_id=row[5],
                title=row[6],
                uri=row[7],
                updated_at=as_utc(row[8]),
            )
            result.append((hit, list(row[9] or [])))
        return result

    def fingerprint(self) -> Fingerprint:
        with Session(self.engine) as session:
            count, max_id, id_sum = session.execute(
                select(func.count(col(ChunkRow.id)), func.max(col(ChunkRow.id)), func.sum(col(ChunkRow.id)))
            ).one()
        return Fingerprint(int(count), int(max_id or 0), int(id_sum or 0) % ID_CHECKSUM_MOD)

    def iter_embeddings(self, batch: int = 10_000) -> Iterator[tuple[list[int], Vectors]]:
        """All stored embeddings in id order, in batches, for rebuilding the index."""
        last = 0
        while True:
            with Session(self.engine) as session:
                rows = session.execute(
                    select(col(ChunkRow.id), col(ChunkRow.embedding))
                    .where(col(ChunkRow.id) > last)
                    .order_by(col(ChunkRow.id))
                    .limit(batch)
                ).all()
            if not rows:
                return
            ids = [int(row[0]) for row in rows]
            vectors = np.stack([np.frombuffer(row[1], dtype=np.float32) for row in rows])
            yield ids, vectors
            last = ids[-1]

    def iter_chunk_texts(self, batch: int = 2_000) -> Iterator[list[tuple[int, str, str, str]]]:
        """(chunk id, document title, section, text) in id order, for re-embedding with a new model."""
        last = 0
        while True:
            with Session(self.engine) as session:
                rows = session.execute(
                    select(
                        col(ChunkRow.id), col(DocumentRow.title), col(ChunkRow.section), col(ChunkRow.text)
                    )
                    .join(DocumentRow, col(DocumentRow.id) == col(ChunkRow.document_id))
                    .where(col(ChunkRow.id) > last)
                    .order_by(col(ChunkRow.id))
                    .limit(batch)
                ).all()
            if not rows:
                return
            yield [(int(r[0]), r[1], r[2], r[3]) for r in rows]
            last = int(rows[-1][0])

    def changes(self, *, after_id: int = 0, limit: int = 1000) -> list[DocumentChangeRow]:
        """The change log in commit order, from just after `after_id` (push keeps its position)."""
        with Session(self.engine) as session:
            query = (
                select(DocumentChangeRow)
                .where(col(DocumentChangeRow.id) > after_id)
                .order_by(col(DocumentChangeRow.id))
                .limit(limit)
            )
            return list(session.execute(query).scalars())

    def acls_by_uri(self, uris: list[str]) -> dict[str, list[str]]:
        """The ACL groups of the documents with these uris (anchors are ignored)."""
        bare = sorted({uri.split("#", 1)[0] for uri in uris})
        if not bare:
            return {}
        with Session(self.engine) as session:
            rows = session.execute(
                select(col(DocumentRow.uri), col(DocumentRow.acl_groups)).where(
                    col(DocumentRow.uri).in_(bare)
                )
            ).all()
        return {row[0]: list(row[1] or []) for row in rows}

    def last_change(self) -> int:
        with Session(self.engine) as session:
            value = session.execute(select(func.max(col(DocumentChangeRow.id)))).scalar_one_or_none()
        return int(value or 0)

    def catalog_rows(self) -> list[ChunkMeta]:
        """Every chunk's filterable metadata, for the in-memory ChunkCatalog."""
        with Session(self.engine) as session:
            query = select(
                col(ChunkRow.id),
                col(DocumentRow.source),
                col(DocumentRow.acl_groups),
                col(DocumentRow.tags),
                col(DocumentRow.updated_at),
            ).join(DocumentRow, col(DocumentRow.id) == col(ChunkRow.document_id))
            return [
                ChunkMeta(int(r[0]), r[1], tuple(r[2] or ()), tuple(r[3] or ()), as_utc(r[4]))
                for r in session.execute(query)
            ]

    def update_embeddings(self, ids: list[int], vectors: Vectors) -> None:
        with session_scope(self.engine) as session:
            for chunk_id, vector in zip(ids, vectors, strict=True):
                row = session.get(ChunkRow, chunk_id)
                if row is not None:
                    row.embedding = vector.astype(np.float32).tobytes()
                    session.add(row)

    def stats(self) -> Stats:
        self.runs.reap()  # a run whose process died shows as interrupted, not running
        with Session(self.engine) as session:
            documents = session.execute(select(func.count()).select_from(DocumentRow)).scalar_one()
            chunks = session.execute(select(func.count()).select_from(ChunkRow)).scalar_one()
            last = session.execute(
                select(IngestRunRow).order_by(col(IngestRunRow.id).desc()).limit(1)
            ).scalar_one_or_none()
        return Stats(documents=int(documents), chunks=int(chunks), last_ingest=last)

    def last_finished_run(self) -> int | None:
        with Session(self.engine) as session:
            query = select(func.max(col(IngestRunRow.id))).where(col(IngestRunRow.finished_at).is_not(None))
            value = session.execute(query).scalar_one_or_none()
        return int(value) if value is not None else None

    def start_run(self, paths: list[str]) -> int:
        """Record a run by this process (marking runs whose process died first)."""
        return self.runs.start(paths)

    def heartbeat(self, run_id: int) -> None:
        self.runs.heartbeat(run_id)

    def finish_run(
        self, run_id: int, *, status: str, counts: dict[str, int], problems: list[dict[str, str]]
    ) -> None:
        self.runs.finish(run_id, status=status, counts=counts, problems=problems)

    def with_policy(self, **changes: Any) -> RemovalPolicy:
        """Set a changed removal policy (e.g. allow=True for an explicit purge); returns the old one."""
        old, self.policy = self.policy, replace(self.policy, **changes)
        return old

    @staticmethod
    def _chunk_ids(session: Session, document_id: str) -> list[int]:
        query = select(col(ChunkRow.id)).where(col(ChunkRow.document_id) == document_id)
        return [int(i) for i in session.execute(query).scalars()]


def _hits_statement(*, embedding: bool) -> Select[Any]:
    """Chunk and document columns of the chunks with ids in :ids, as plain tuples.

    Built once: per question it only binds the ids (an expanding IN), so SQLAlchemy reuses the
    compiled statement. Whole ORM rows (and a statement built per call on ORM attributes) cost
    about a quarter of retrieve's time at 100k chunks (bench/scale.py's pipeline run)."""
    chunks, documents = ChunkRow.__table__.c, DocumentRow.__table__.c  # type: ignore[attr-defined]
    columns = [
        chunks.id, chunks.text, chunks.section, chunks.anchor, chunks.page,
        documents.id, documents.title, documents.uri, documents.updated_at, documents.acl_groups,
        chunks.flag,
    ]  # fmt: skip
    if embedding:
        columns.append(chunks.embedding)
    return (
        select(*columns)
        .join_from(ChunkRow.__table__, DocumentRow.__table__, documents.id == chunks.document_id)  # type: ignore[attr-defined]
        .where(chunks.id.in_(bindparam("ids", expanding=True)))
    )


_HITS = _hits_statement(embedding=False)
_HITS_WITH_EMBEDDING = _hits_statement(embedding=True)


def _change(row: DocumentRow, kind: str, run_id: int | None) -> DocumentChangeRow:
    return DocumentChangeRow(
        document_id=row.id,
        kind=kind,
        title=row.title,
        uri=row.uri,
        content_hash=row.content_hash,
        text_hash=row.text_hash,
        acl_groups=list(row.acl_groups),
        tags=list(row.tags),
        changed_at=utcnow(),
        ingest_run_id=run_id,
    )
