"""Soft removal: a document a sync removes moves here with its chunks and embeddings.

It leaves the documents and chunks tables (so nothing else needs to know about it: retrieval,
the indexes and the catalog only ever see live rows) and can be put back by `kb sources restore`
without the embedding model, until the purge after the retention period deletes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select
from sqlmodel import Session, col

from core.models import ChunkRow, DocumentRow, RemovedChunkRow, RemovedDocumentRow, as_utc

if TYPE_CHECKING:
    from core.settings.groups import IngestSettings

_DATES = ("updated_at", "ingested_at")


@dataclass(frozen=True, slots=True)
class Removed:
    """One removed document, as `kb sources removed` lists it."""

    id: int
    document_id: str
    source: str
    title: str
    uri: str
    removed_at: datetime
    ingest_run_id: int | None


def move_to_trash(session: Session, row: DocumentRow, *, at: datetime, run_id: int | None) -> list[int]:
    """Move the document and its chunks out of the live tables; returns the chunk ids it had."""
    data: dict[str, Any] = row.model_dump(mode="json")
    removed = RemovedDocumentRow(
        document_id=row.id, source=row.source, removed_at=at, ingest_run_id=run_id, document=data
    )
    session.add(removed)
    session.flush()
    assert removed.id is not None
    chunks = list(session.execute(select(ChunkRow).where(col(ChunkRow.document_id) == row.id)).scalars())
    session.add_all(
        RemovedChunkRow(
            removed_id=removed.id, ordinal=c.ordinal, text=c.text, section=c.section, anchor=c.anchor,
            page=c.page, token_count=c.token_count, embedding=c.embedding, flag=c.flag,
        )
        for c in chunks
    )  # fmt: skip
    session.execute(delete(ChunkRow).where(col(ChunkRow.document_id) == row.id))
    session.execute(delete(DocumentRow).where(col(DocumentRow.id) == row.id))
    return [int(c.id) for c in chunks if c.id is not None]


def restore_from_trash(session: Session, removed: RemovedDocumentRow) -> DocumentRow | None:
    """Put a removed document back (its chunks get new ids); None when a live one has its id."""
    if session.get(DocumentRow, removed.document_id) is not None:
        return None
    data = dict(removed.document)
    for name in _DATES:
        data[name] = datetime.fromisoformat(data[name])
    row = DocumentRow.model_validate(data)
    session.add(row)
    session.flush()
    chunks = session.execute(
        select(RemovedChunkRow)
        .where(col(RemovedChunkRow.removed_id) == removed.id)
        .order_by(col(RemovedChunkRow.ordinal))
    ).scalars()
    session.add_all(
        ChunkRow(
            document_id=row.id, ordinal=c.ordinal, text=c.text, section=c.section, anchor=c.anchor,
            page=c.page, token_count=c.token_count, embedding=c.embedding, flag=c.flag,
        )
        for c in chunks
    )  # fmt: skip
    drop(session, [removed.id] if removed.id is not None else [])
    return row


def drop(session: Session, ids: list[int]) -> None:
    if ids:
        session.execute(delete(RemovedChunkRow).where(col(RemovedChunkRow.removed_id).in_(ids)))
        session.execute(delete(RemovedDocumentRow).where(col(RemovedDocumentRow.id).in_(ids)))


def as_removed(row: RemovedDocumentRow) -> Removed:
    assert row.id is not None
    return Removed(
        id=row.id,
        document_id=row.document_id,
        source=row.source,
        title=str(row.document.get("title", "")),
        uri=str(row.document.get("uri", "")),
        removed_at=as_utc(row.removed_at),
        ingest_run_id=row.ingest_run_id,
    )


@dataclass(frozen=True, slots=True)
class RemovalPolicy:
    """How far a sync may remove on its own, and how long what it removed can be restored.

    A sync that would remove more than `max_share` of the documents it covers stops and asks for
    `allow` (`--allow-removals`): a folder emptied by a failed mount is not a deletion.
    """

    max_share: float = 0.5
    allow: bool = False
    retention_days: int = 30

    @classmethod
    def from_settings(cls, ingest: IngestSettings, *, allow: bool = False) -> RemovalPolicy:
        return cls(ingest.max_removal_share, allow, ingest.removal_retention_days)

    def refuses(self, removing: int, covered: int) -> bool:
        return not self.allow and removing > 0 and removing > self.max_share * covered
