"""sync jobs: queued runs, pause, cron schedules, next_run_at, one active run per connector

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import service.db_types

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ACTIVE = "status IN ('queued', 'running')"


def upgrade() -> None:
    # Plain ALTER TABLE ... ADD COLUMN, never a batch copy of `connector` on SQLite: with
    # foreign keys on, dropping the old copy would cascade-delete every connector's
    # records, checkpoints, runs and mapping sources. (The `paused` server default stays
    # for the same reason: removing it needs the copy.)
    op.add_column(
        "connector",
        sa.Column("sync_cron", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True),
    )
    op.add_column(
        "connector", sa.Column("paused", sa.Boolean(), nullable=False, server_default=sa.false())
    )
    op.add_column(
        "connector",
        sa.Column("next_run_at", service.db_types.UTCDateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_connector_next_run_at", "connector", ["next_run_at"], unique=False)
    op.create_index("ix_connector_lease_until", "connector", ["lease_until"], unique=False)
    # Every enabled connector is due once after the upgrade (its next time is not known
    # before a worker computes it): a missed schedule runs once.
    op.execute("UPDATE connector SET next_run_at = created_at WHERE enabled")

    with op.batch_alter_table("sync_run", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("queued_at", service.db_types.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("worker", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True)
        )
        batch_op.add_column(sa.Column("resumed_by_run_id", sa.Integer(), nullable=True))
        batch_op.alter_column(
            "started_at", existing_type=service.db_types.UTCDateTime(timezone=True), nullable=True
        )
    op.execute("UPDATE sync_run SET queued_at = started_at")
    # Runs left `running` by the previous version's crashed workers: they never finish.
    op.execute(
        "UPDATE sync_run SET status = 'failed', error_class = 'interrupted', "
        "error_message = 'interrupted before the upgrade' WHERE status = 'running'"
    )
    op.execute("UPDATE connector SET lease_owner = NULL, lease_until = NULL")
    with op.batch_alter_table("sync_run", schema=None) as batch_op:
        batch_op.alter_column(
            "queued_at", existing_type=service.db_types.UTCDateTime(timezone=True), nullable=False
        )
        batch_op.create_index(
            "uq_sync_run_active",
            ["connector_id"],
            unique=True,
            sqlite_where=sa.text(_ACTIVE),
            postgresql_where=sa.text(_ACTIVE),
        )


def downgrade() -> None:
    with op.batch_alter_table("sync_run", schema=None) as batch_op:
        batch_op.drop_index("uq_sync_run_active")
    op.execute("DELETE FROM sync_run WHERE started_at IS NULL")
    with op.batch_alter_table("sync_run", schema=None) as batch_op:
        batch_op.alter_column(
            "started_at", existing_type=service.db_types.UTCDateTime(timezone=True), nullable=False
        )
        batch_op.drop_column("resumed_by_run_id")
        batch_op.drop_column("worker")
        batch_op.drop_column("queued_at")
    op.drop_index("ix_connector_lease_until", table_name="connector")
    op.drop_index("ix_connector_next_run_at", table_name="connector")
    # ALTER TABLE ... DROP COLUMN (SQLite >= 3.35), not a batch copy: see upgrade().
    op.drop_column("connector", "next_run_at")
    op.drop_column("connector", "paused")
    op.drop_column("connector", "sync_cron")
