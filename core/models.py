"""The database tables: the single source of truth that every package meets through.

FAISS and BM25 indexes are derived from these rows and can always be rebuilt from them.
Schema changes go through Alembic migrations in `core/migrations/versions/`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, ForeignKey, Integer, LargeBinary, String, Text
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything we store is UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class DocumentRow(SQLModel, table=True):
    """One source document (a file, a row of a table, a page of an API)."""

    __tablename__ = "documents"

    id: str = Field(primary_key=True, max_length=512, description="source:key, stable across runs")
    source: str = Field(index=True, max_length=200)
    uri: str = Field(max_length=1024)
    title: str = Field(max_length=500)
    content_hash: str = Field(max_length=64)
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
    acl_groups: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    tags: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    changed_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False, index=True))
    ingest_run_id: int | None = None


class AuditRow(SQLModel, table=True):
    """One entry of the append-only, hash-chained audit log (see privacy/audit.py)."""

    __tablename__ = "audit_log"

    id: int | None = Field(default=None, primary_key=True)
    seq: int = Field(sa_column=Column(Integer, nullable=False, unique=True))
    at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    actor: str = Field(max_length=200)
    action: str = Field(max_length=100, index=True)
    target: str = Field(default="", max_length=500)
    params: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    outcome: str = Field(max_length=500)
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64)
