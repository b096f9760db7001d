"""Push interest profiles: per-person interest centroids and the full-update watermark.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "interest_profiles",
        sa.Column("platform", sa.String(20), primary_key=True),
        sa.Column("user_id", sa.String(200), primary_key=True),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("vectors", sa.LargeBinary(), nullable=False),
        sa.Column("weights", sa.JSON(), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("strengths", sa.JSON(), nullable=False),
        sa.Column("seen", sa.JSON(), nullable=False),
        sa.Column("last_event_id", sa.Integer(), nullable=False),
        sa.Column("as_of", _WHEN, nullable=True),
        sa.Column("updated_at", _WHEN, nullable=False),
    )
    state = op.create_table(
        "interest_profile_state",
        sa.Column("name", sa.String(50), primary_key=True),
        sa.Column("last_event_id", sa.Integer(), nullable=False),
        sa.Column("updated_at", _WHEN, nullable=False),
    )
    # The row exists from the start, so that two first-ever updates lock it instead of racing to insert it.
    op.bulk_insert(state, [{"name": "behaviour_events", "last_event_id": 0, "updated_at": datetime.now(UTC)}])


def downgrade() -> None:
    op.drop_table("interest_profile_state")
    op.drop_table("interest_profiles")
