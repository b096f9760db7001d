"""Privacy budget ledger for DP training: one row per training run's (ε, δ), and a one-row lock table.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "privacy_ledger",
        sa.Column("run_id", sa.String(200), primary_key=True),
        sa.Column("dataset_hash", sa.String(128), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("epsilon_planned", sa.Float(), nullable=False),
        sa.Column("epsilon_spent", sa.Float(), nullable=True),
        sa.Column("delta", sa.Float(), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("privacy_unit", sa.String(200), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("reserved_at", _WHEN, nullable=False),
        sa.Column("settled_at", _WHEN, nullable=True),
    )
    op.create_index("ix_privacy_ledger_dataset_hash", "privacy_ledger", ["dataset_hash"])
    op.create_index("ix_privacy_ledger_status", "privacy_ledger", ["status"])
    # Every ledger change first updates this single row: a row lock on PostgreSQL, the write lock
    # on SQLite. Checking the remaining budget and reserving then happen as one serialized step.
    lock = op.create_table(
        "privacy_ledger_lock",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("version", sa.Integer(), nullable=False),
    )
    op.bulk_insert(lock, [{"id": 1, "version": 0}])


def downgrade() -> None:
    op.drop_table("privacy_ledger_lock")
    op.drop_index("ix_privacy_ledger_status", table_name="privacy_ledger")
    op.drop_index("ix_privacy_ledger_dataset_hash", table_name="privacy_ledger")
    op.drop_table("privacy_ledger")
