"""Bot tables: behaviour events, subscriptions, digest preferences, processed events, conversation refs.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_WHEN = sa.DateTime(timezone=True)
_INDEXES = {
    "behaviour_events": ("kind", "user_id", "question_id", "at"),
    "processed_events": ("received_at",),
    "conversation_refs": ("user_id",),
}


def upgrade() -> None:
    op.create_table(
        "behaviour_events",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("platform", sa.String(20), nullable=False),
        sa.Column("user_id", sa.String(200), nullable=False),
        sa.Column("channel", sa.String(200), nullable=False),
        sa.Column("thread", sa.String(200), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("question_id", sa.Integer(), nullable=True),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("at", _WHEN, nullable=False),
    )
    op.create_table(
        "subscriptions",
        sa.Column("platform", sa.String(20), primary_key=True),
        sa.Column("user_id", sa.String(200), primary_key=True),
        sa.Column("topic", sa.String(200), primary_key=True),
        sa.Column("created_at", _WHEN, nullable=False),
    )
    op.create_table(
        "digest_prefs",
        sa.Column("platform", sa.String(20), primary_key=True),
        sa.Column("user_id", sa.String(200), primary_key=True),
        sa.Column("cadence", sa.String(10), nullable=False),
        sa.Column("updated_at", _WHEN, nullable=False),
        sa.Column("requested_at", _WHEN, nullable=True),
    )
    op.create_table(
        "processed_events",
        sa.Column("event_id", sa.String(200), primary_key=True),
        sa.Column("received_at", _WHEN, nullable=False),
    )
    op.create_table(
        "conversation_refs",
        sa.Column("platform", sa.String(20), primary_key=True),
        sa.Column("conversation_id", sa.String(500), primary_key=True),
        sa.Column("user_id", sa.String(200), nullable=False),
        sa.Column("service_url", sa.String(1000), nullable=False),
        sa.Column("reference", sa.JSON(), nullable=False),
        sa.Column("updated_at", _WHEN, nullable=False),
    )
    for table, columns in _INDEXES.items():
        for column in columns:
            op.create_index(f"ix_{table}_{column}", table, [column])


def downgrade() -> None:
    for table, columns in _INDEXES.items():
        for column in columns:
            op.drop_index(f"ix_{table}_{column}", table_name=table)
    for table in (
        "conversation_refs",
        "processed_events",
        "digest_prefs",
        "subscriptions",
        "behaviour_events",
    ):
        op.drop_table(table)
