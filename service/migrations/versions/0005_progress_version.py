"""progress version: a per-workspace change counter for cached progress reads

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 14:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "progress_version",
        sa.Column("workspace_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspace.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("workspace_id"),
    )
    # Every existing workspace gets its row, so writers only ever update one.
    op.execute("INSERT INTO progress_version (workspace_id, version) SELECT id, 1 FROM workspace")


def downgrade() -> None:
    op.drop_table("progress_version")
