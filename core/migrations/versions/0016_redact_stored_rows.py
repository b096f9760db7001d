"""Stored titles, headings, anchors and passages redacted again under the current index policy.

Ingest redacted titles and passages but not headings, so a heading holding an IBAN or a token
reached users in a citation's section name and in its link's anchor. Ingest now redacts those
too (knowledge/chunking.py, `redact_document`); this carries the rows already stored over, so
nothing waits for a source to be ingested again, and sources that are gone are cleaned as well.

The work is the product's redaction policy, which lives above `core`: `kb db upgrade` hands it in
as the data step `redact_stored_rows` (knowledge/stored_redaction.py, which says what it does).
A database with documents cannot pass this revision without it; an empty one has nothing to do.
There is no way back: downgrade leaves the rows as they are.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    connection = op.get_bind()
    config = op.get_context().config
    step = config.attributes.get("data_steps", {}).get("redact_stored_rows") if config else None
    if step is not None:
        step(connection)
        return
    if connection.execute(sa.text("select count(*) from documents")).scalar():
        raise RuntimeError(
            "revision 0016 re-redacts stored documents under the redaction policy: run it through "
            "`kb db upgrade`, which provides that step"
        )


def downgrade() -> None:
    """Redaction cannot be undone: the rows stay redacted."""
