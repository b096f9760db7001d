"""Training runs remember when the admins were told that they ended (`notified_at`).

The leader tells the admins in chat once per finished run and then sets the column, so a restart or
a new leader does not tell them again. Runs that ended before this revision count as told: their
admins read them with `admin status`, and a burst of old news after an upgrade would be noise.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("training_runs") as batch:
        batch.add_column(sa.Column("notified_at", sa.DateTime(timezone=True), nullable=True))
    op.execute(
        "UPDATE training_runs SET notified_at = COALESCE(finished_at, created_at) "
        "WHERE status IN ('succeeded', 'failed', 'cancelled')"
    )


def downgrade() -> None:
    with op.batch_alter_table("training_runs") as batch:
        batch.drop_column("notified_at")
