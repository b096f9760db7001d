"""Audit entries name the key that MACs them; existing entries stay legacy SHA-256 links.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Adding a column is no UPDATE: the append-only triggers let it through, and the rows it gives
    # an empty key_id are verified as before (privacy/audit_verify.py).
    with op.batch_alter_table("audit_log", recreate="never") as batch:
        batch.add_column(sa.Column("key_id", sa.String(16), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("audit_log", recreate="never") as batch:
        batch.drop_column("key_id")
