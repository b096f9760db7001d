"""Documents owned by sources with an identity, soft removals, ingest-time flags, run liveness.

A document used to be keyed by its folder's base name, so two folders of the same name were one
source and a sync of either swept the other's documents. `document_sources` names every source
with its resolved root; the documents already stored keep their ids and links: each base name
becomes a `legacy` source whose root is unknown until the first ingest of a folder whose files
match its documents adopts it (knowledge/owners.py), which then updates them in place.

Removed documents move, with their chunks and embeddings, to `removed_documents` and
`removed_chunks` until restored or purged. Chunks carry the ingest injection scan's `flag`; an
ingest run records its process (pid, host) and a heartbeat, so a run whose process died is seen.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    sources = op.create_table(
        "document_sources",
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("root", sa.String(1024), nullable=True, unique=True),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.Column("seen_at", _WHEN, nullable=True),
    )
    now = datetime.now(UTC)
    keys = op.get_bind().execute(sa.text("SELECT DISTINCT source FROM documents")).scalars().all()
    op.bulk_insert(sources, [{"key": key, "kind": "legacy", "root": None, "created_at": now} for key in keys])
    op.create_table(
        "removed_documents",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("document_id", sa.String(512), nullable=False, index=True),
        sa.Column("source", sa.String(200), nullable=False, index=True),
        sa.Column("removed_at", _WHEN, nullable=False, index=True),
        sa.Column("ingest_run_id", sa.Integer, nullable=True),
        sa.Column("document", sa.JSON, nullable=False),
    )
    op.create_table(
        "removed_chunks",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "removed_id",
            sa.Integer,
            sa.ForeignKey("removed_documents.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("ordinal", sa.Integer, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("section", sa.String(1000), nullable=False),
        sa.Column("anchor", sa.String(300), nullable=False),
        sa.Column("page", sa.Integer, nullable=True),
        sa.Column("token_count", sa.Integer, nullable=False),
        sa.Column("embedding", sa.LargeBinary, nullable=False),
        sa.Column("flag", sa.String(500), nullable=False),
    )
    with op.batch_alter_table("chunks") as batch:
        batch.add_column(sa.Column("flag", sa.String(500), nullable=False, server_default=""))
    with op.batch_alter_table("ingest_runs") as batch:
        batch.add_column(sa.Column("flagged", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("pid", sa.Integer, nullable=True))
        batch.add_column(sa.Column("host", sa.String(255), nullable=False, server_default=""))
        batch.add_column(sa.Column("heartbeat_at", _WHEN, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ingest_runs") as batch:
        for name in ("heartbeat_at", "host", "pid", "flagged"):
            batch.drop_column(name)
    with op.batch_alter_table("chunks") as batch:
        batch.drop_column("flag")
    op.drop_table("removed_chunks")
    op.drop_table("removed_documents")
    op.drop_table("document_sources")
