"""Tables of the knowledge base: documents, chunks, sources, ingest runs, changes, removals."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, ForeignKey, Integer, LargeBinary, String, Text
from sqlmodel import Field, SQLModel


class DocumentRow(SQLModel, table=True):
    """One source document (a file, a row of a table, a page of an API)."""

    __tablename__ = "documents"

    id: str = Field(primary_key=True, max_length=512, description="source:key, stable across runs")
    source: str = Field(index=True, max_length=200)
    uri: str = Field(max_length=1024)
    title: str = Field(max_length=500)
    content_hash: str = Field(max_length=64)
    text_hash: str = Field(default="", max_length=64, description="headings and text only (migration 0010)")
    size_bytes: int = 0
    acl_groups: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    tags: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    updated_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    ingested_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class ChunkRow(SQLModel, table=True):
    """A passage of a document; its id is also its id in the vector index."""

    __tablename__ = "chunks"

    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True, autoincrement=True))
    document_id: str = Field(
        sa_column=Column(
            String(512), ForeignKey("documents.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    ordinal: int
    text: str = Field(sa_column=Column(Text, nullable=False))
    section: str = Field(default="", max_length=1000, description="heading path, ' > '-joined")
    anchor: str = Field(default="", max_length=300)
    page: int | None = None
    token_count: int
    embedding: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    flag: str = Field(
        default="", max_length=500, description="why the ingest scan distrusts it (empty: clean)"
    )


class IngestRunRow(SQLModel, table=True):
    """One `kb ingest` run and what it did, for `kb status` and the audit trail."""

    __tablename__ = "ingest_runs"

    id: int | None = Field(default=None, primary_key=True)
    started_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    finished_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    status: str = Field(default="running", max_length=20)
    paths: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    skipped: int = 0
    chunks: int = 0
    problems: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    flagged: int = 0
    pid: int | None = Field(default=None, description="the ingesting process, to see that it died")
    host: str = Field(default="", max_length=255)
    heartbeat_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


class DocumentChangeRow(SQLModel, table=True):
    """One change to one document, in the order it was committed; push reads it to find news.

    Written in the same transaction as the change itself, so the log never disagrees with the
    documents table. Deleted documents keep their last title, uri and ACL here.
    """

    __tablename__ = "document_changes"

    id: int | None = Field(default=None, primary_key=True)
    document_id: str = Field(index=True, max_length=512)
    kind: str = Field(max_length=10, description="added, updated or deleted")
    title: str = Field(max_length=500)
    uri: str = Field(max_length=1024)
    content_hash: str = Field(max_length=64)
    text_hash: str = Field(default="", max_length=64, description="empty for changes before migration 0010")
    acl_groups: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    tags: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    changed_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False, index=True))
    ingest_run_id: int | None = None


class SourceStateRow(SQLModel, table=True):
    """Where one declared source (`kb sources`) stands: its incremental cursor and its last sync.

    `cursor` is the largest `updated` value seen, typed so that it binds back as the same kind of
    value it was read as (see knowledge/sources/sql.py); `problems` are the last sync's.
    """

    __tablename__ = "source_state"

    name: str = Field(primary_key=True, max_length=200)
    kind: str = Field(max_length=20)
    cursor: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    last_sync_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    status: str = Field(default="never", max_length=20, description="ok, partial or failed")
    documents: int = 0
    problems: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    ingest_run_id: int | None = None


# --- knowledge: who owns which documents, and what a sync removed (see knowledge/owners.py) ---


class DocumentSourceRow(SQLModel, table=True):
    """A source of documents: `key` is what its documents' ids and links start with.

    A folder source has its resolved absolute `root`; a declared SQL or API source has none (its
    key is its declared name). A `legacy` source was keyed by its folder's base name before roots
    were recorded: the first ingest of a folder whose files match its documents adopts it.
    """

    __tablename__ = "document_sources"

    key: str = Field(primary_key=True, max_length=200)
    kind: str = Field(max_length=20, description="folder, named or legacy")
    root: str | None = Field(default=None, sa_column=Column(String(1024), nullable=True, unique=True))
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    seen_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


class RemovedDocumentRow(SQLModel, table=True):
    """A document a sync removed, kept with its chunks until `kb sources restore` or the purge."""

    __tablename__ = "removed_documents"

    id: int | None = Field(default=None, primary_key=True)
    document_id: str = Field(index=True, max_length=512)
    source: str = Field(index=True, max_length=200)
    removed_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False, index=True))
    ingest_run_id: int | None = None
    document: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class RemovedChunkRow(SQLModel, table=True):
    """A chunk of a removed document, with its embedding, so a restore needs no model."""

    __tablename__ = "removed_chunks"

    id: int | None = Field(default=None, primary_key=True)
    removed_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("removed_documents.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    ordinal: int
    text: str = Field(sa_column=Column(Text, nullable=False))
    section: str = Field(default="", max_length=1000)
    anchor: str = Field(default="", max_length=300)
    page: int | None = None
    token_count: int
    embedding: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    flag: str = Field(default="", max_length=500)
