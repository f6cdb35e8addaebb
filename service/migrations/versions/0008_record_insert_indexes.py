"""record indexes a sync no longer maintains: the closed-date index holds only records
with a close date, and record.workspace_id is not indexed

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 16:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = [
    "connector_id",
    "kind",
    "close_date",
    "deleted",
    "is_won",
    "is_closed",
    "deal_type",
    "lead_source",
    "currency",
    "amount_e4",
]


def upgrade() -> None:
    # Leads and NPS answers have no close date: they made every sync insert maintain a
    # ten-column index they never appear in a query of (close-date windows imply it).
    closed = sa.text("close_date IS NOT NULL")
    op.drop_index("ix_record_eval_closed", table_name="record")
    op.create_index(
        "ix_record_eval_closed",
        "record",
        _COLUMNS,
        unique=False,
        sqlite_where=closed,
        postgresql_where=closed,
    )
    # Nothing selects records by workspace (they are read by connector); the index only
    # served the rare workspace deletion, and cost every sync insert about a tenth.
    op.drop_index("ix_record_workspace_id", table_name="record")


def downgrade() -> None:
    op.create_index("ix_record_workspace_id", "record", ["workspace_id"], unique=False)
    op.drop_index("ix_record_eval_closed", table_name="record")
    op.create_index("ix_record_eval_closed", "record", _COLUMNS, unique=False)
