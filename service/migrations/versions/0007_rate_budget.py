"""rate budget: vendor accounts' request schedules shared by every process

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "rate_budget",
        sa.Column("account", sa.String(length=255), nullable=False),
        sa.Column("lane", sa.String(length=32), nullable=False),
        sa.Column("next_free", sa.Double(), nullable=False),
        sa.Column("paused_until", sa.Double(), nullable=False),
        sa.Column("granted_from", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("account", "lane"),
    )


def downgrade() -> None:
    op.drop_table("rate_budget")
