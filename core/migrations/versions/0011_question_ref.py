"""A reference on behaviour events, for questions recorded after their answer was sent.

A Slack answer's buttons carry the event's key, and the question's row is written once the answer
has gone out (with the claim's close, in one transaction), so that nothing waits for the database
between the answer and its delivery. A click finds the row's id through `ref`. Older rows have none:
their buttons carry the id itself.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("behaviour_events") as batch:
        batch.add_column(sa.Column("ref", sa.String(200), nullable=True))
    op.create_index("ix_behaviour_events_ref", "behaviour_events", ["ref"])


def downgrade() -> None:
    op.drop_index("ix_behaviour_events_ref", table_name="behaviour_events")
    with op.batch_alter_table("behaviour_events") as batch:
        batch.drop_column("ref")
