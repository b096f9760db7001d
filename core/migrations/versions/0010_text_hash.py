"""A hash of headings and text alone on documents and their change log, for push's notices.

The content hash also covers tags, ACL and links, so a change that touched text and tags at once
could not be told from a re-tag; push's notices compare this one. Rows from before it stay empty,
and notices fall back to the old rule for them.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_TABLES = ("documents", "document_changes")


def upgrade() -> None:
    for table in _TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("text_hash", sa.String(64), nullable=False, server_default=""))


def downgrade() -> None:
    for table in _TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("text_hash")
