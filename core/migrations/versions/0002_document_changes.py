"""Change log of documents: what was added, updated or deleted, and when.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "document_changes",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("document_id", sa.String(512), nullable=False),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("title", sa.String(500), nullable=False),
        sa.Column("uri", sa.String(1024), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("acl_groups", sa.JSON(), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ingest_run_id", sa.Integer(), nullable=True),
    )
    op.create_index("ix_document_changes_document_id", "document_changes", ["document_id"])
    op.create_index("ix_document_changes_changed_at", "document_changes", ["changed_at"])


def downgrade() -> None:
    op.drop_index("ix_document_changes_changed_at", table_name="document_changes")
    op.drop_index("ix_document_changes_document_id", table_name="document_changes")
    op.drop_table("document_changes")
