"""Push interest profiles (issue 6).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28
"""

from __future__ import annotations

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Placeholder reserved so parallel work keeps one linear chain; filled in by the push profiles work.
    pass


def downgrade() -> None:
    pass
