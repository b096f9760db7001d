"""Push delivery log, digests and scheduler state: what makes each push message exactly-once.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    _deliveries()
    _user_state_and_inbox()
    _scheduler_jobs()


def _deliveries() -> None:
    op.create_table(
        "push_deliveries",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("key", sa.String(300), nullable=False, unique=True),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("platform", sa.String(20), nullable=False),
        sa.Column("user_id", sa.String(200), nullable=False),
        sa.Column("window_start", _WHEN, nullable=True),
        sa.Column("window_end", _WHEN, nullable=False),
        sa.Column("state", sa.String(12), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(500), nullable=False),
        sa.Column("documents", sa.JSON(), nullable=False),
        sa.Column("message", sa.JSON(), nullable=False),
        sa.Column("channel", sa.String(200), nullable=False),
        sa.Column("message_id", sa.String(200), nullable=False),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.Column("updated_at", _WHEN, nullable=False),
        sa.Column("sent_at", _WHEN, nullable=True),
        sa.Column("next_attempt_at", _WHEN, nullable=True),
        sa.Column("clicked_at", _WHEN, nullable=True),
        sa.Column("dismissed_at", _WHEN, nullable=True),
    )
    op.create_index("ix_push_deliveries_user_id", "push_deliveries", ["user_id"])
    op.create_index("ix_push_deliveries_state", "push_deliveries", ["state"])
    op.create_index("ix_push_deliveries_sent_at", "push_deliveries", ["sent_at"])


def _user_state_and_inbox() -> None:
    op.create_table(
        "push_user_state",
        sa.Column("platform", sa.String(20), primary_key=True),
        sa.Column("user_id", sa.String(200), primary_key=True),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("digest_hour", sa.Integer(), nullable=True),
        sa.Column("quiet_start", sa.Integer(), nullable=True),
        sa.Column("quiet_end", sa.Integer(), nullable=True),
        sa.Column("backoff", sa.Integer(), nullable=False),
        sa.Column("updated_at", _WHEN, nullable=False),
    )
    op.create_table(
        "push_cursors",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("value", sa.Integer(), nullable=False),
        sa.Column("updated_at", _WHEN, nullable=False),
    )
    op.create_table(
        "push_inbox",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("key", sa.String(300), nullable=False, unique=True),
        sa.Column("user_id", sa.String(200), nullable=False),
        sa.Column("message", sa.JSON(), nullable=False),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.Column("read_at", _WHEN, nullable=True),
    )
    op.create_index("ix_push_inbox_user_id", "push_inbox", ["user_id"])


def _scheduler_jobs() -> None:
    # APScheduler's SQLAlchemyJobStore table, in its own layout (it would create it at start anyway;
    # creating it here keeps the whole schema under Alembic).
    op.create_table(
        "push_scheduler_jobs",
        sa.Column("id", sa.Unicode(191), primary_key=True),
        sa.Column("next_run_time", sa.Float(25), nullable=True),
        sa.Column("job_state", sa.LargeBinary(), nullable=False),
    )
    op.create_index("ix_push_scheduler_jobs_next_run_time", "push_scheduler_jobs", ["next_run_time"])


def downgrade() -> None:
    op.drop_index("ix_push_scheduler_jobs_next_run_time", table_name="push_scheduler_jobs")
    op.drop_table("push_scheduler_jobs")
    op.drop_index("ix_push_inbox_user_id", table_name="push_inbox")
    op.drop_table("push_inbox")
    op.drop_table("push_cursors")
    op.drop_table("push_user_state")
    for column in ("sent_at", "state", "user_id"):
        op.drop_index(f"ix_push_deliveries_{column}", table_name="push_deliveries")
    op.drop_table("push_deliveries")
