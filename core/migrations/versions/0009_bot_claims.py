"""Bot event claims with a state and a lease, so an acked but unanswered event is re-run.

A claim is `claimed` while a replica answers it (until `lease_until`, renewed while it works) and
`answered` afterwards; `payload` keeps what is needed to answer again, `reply_ts` the message the
answer goes into, so that a re-run edits that message instead of posting a second answer. Rows
from before this migration were all handled, so they become `answered`.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("processed_events") as batch:
        batch.add_column(sa.Column("state", sa.String(12), nullable=False, server_default="answered"))
        batch.add_column(sa.Column("owner", sa.String(100), nullable=False, server_default=""))
        batch.add_column(sa.Column("lease_until", _WHEN, nullable=True))
        batch.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("payload", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("reply_ts", sa.String(40), nullable=True))
    op.create_index("ix_processed_events_state", "processed_events", ["state"])


def downgrade() -> None:
    op.drop_index("ix_processed_events_state", table_name="processed_events")
    with op.batch_alter_table("processed_events") as batch:
        for column in ("reply_ts", "payload", "attempts", "lease_until", "owner", "state"):
            batch.drop_column(column)
