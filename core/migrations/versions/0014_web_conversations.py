"""Web chat conversations: each web user's conversations and their turns, for the page's history.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

_WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "web_conversations",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("user_id", sa.String(200), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.Column("updated_at", _WHEN, nullable=False),
    )
    op.create_index("ix_web_conversations_user_id", "web_conversations", ["user_id"])
    op.create_index("ix_web_conversations_updated_at", "web_conversations", ["updated_at"])
    op.create_table(
        "web_turns",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "conversation_id",
            sa.Integer(),
            sa.ForeignKey("web_conversations.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("question", sa.Text(), nullable=False),
        sa.Column("reply", sa.JSON(), nullable=False),
        sa.Column("at", _WHEN, nullable=False),
    )
    op.create_index("ix_web_turns_conversation_id", "web_turns", ["conversation_id"])


def downgrade() -> None:
    op.drop_index("ix_web_turns_conversation_id", table_name="web_turns")
    op.drop_table("web_turns")
    op.drop_index("ix_web_conversations_updated_at", table_name="web_conversations")
    op.drop_index("ix_web_conversations_user_id", table_name="web_conversations")
    op.drop_table("web_conversations")
