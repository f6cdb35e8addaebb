"""Connectors configured in a workspace, their synced records, checkpoints and runs."""

from __future__ import annotations

import enum
from datetime import date, datetime
from typing import Any

from pydantic import field_validator
from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Double,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from service.db_types import UTCDateTime
from service.okr.models import workspace_fk
from service.workspaces.models import Text

#: JSON on SQLite, JSONB on PostgreSQL (binary, so `->>` extraction is cheap).
JSONType = JSON().with_variant(JSONB(), "postgresql")

#: Amounts are stored exactly as integers of 1/10,000 of the currency unit.
AMOUNT_SCALE = 10_000


def _connector_fk() -> Any:
    return Column(Integer, ForeignKey("connector.id", ondelete="CASCADE"), nullable=False)


class RunStatus(enum.StrEnum):
    #: Waiting for a worker (`POST /sync`, or a run interrupted by a shutdown to resume).
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"


class RunTrigger(enum.StrEnum):
    manual = "manual"
    schedule = "schedule"


# ---------------------------------------------------------------------------- connectors


class ConnectorBase(Text):
    name: str = Field(min_length=1, max_length=200)
    #: Connector type: salesforce, hubspot, delighted or demo.
    type: str = Field(max_length=32)
    #: Non-secret configuration, validated by the connector type's config model.
    config: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    #: Record kinds to sync (default: every kind the connector reads).
    kinds: list[str] | None = Field(default=None, sa_column=Column(JSON))
    #: How often scheduled syncs run; values are flagged stale once the next run after the
    #: last successful one is due (`service.sync.service.stale_after`).
    sync_interval_seconds: int = Field(default=900, ge=60, le=7 * 86400)
    #: A cron expression (5 fields, UTC, e.g. `0 */2 * * *`) scheduling syncs instead of
    #: the interval; values turn stale once its first fire time after the last
    #: successful sync's start has passed.
    sync_cron: str | None = Field(default=None, max_length=100)
    #: Scheduled syncs on (a manual `POST /sync` works either way).
    enabled: bool = True
    #: No sync at all, scheduled or manual, until unpaused (a running one stops after the
    #: page it is storing; a queued run resumes it from there once unpaused).
    paused: bool = False


class Connector(ConnectorBase, table=True):
    __table_args__ = (
        UniqueConstraint("workspace_id", "name"),
        # What workers poll every tick (`service.sync.jobs.claim`): due connectors, and
        # those whose sync lease ran out (a dead worker's).
        Index("ix_connector_next_run_at", "next_run_at"),
        Index("ix_connector_lease_until", "lease_until"),
    )
    id: int | None = Field(default=None, primary_key=True)
    workspace_id: int = Field(sa_column=workspace_fk())
    #: Secrets, write-only over the API. Stored through `service.sync.secrets` so that
    #: encryption at rest plugs in there.
    secrets: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(sa_type=UTCDateTime)
    last_success_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_run_status: str | None = Field(default=None, max_length=16)
    #: Sync lease: one worker at a time per connector (scaled deployments).
    lease_owner: str | None = Field(default=None, max_length=100)
    lease_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    #: When a worker next starts a run: the next scheduled time, or the time a run was
    #: queued. None: nothing planned (schedule off, paused).
    next_run_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class ConnectorCreate(ConnectorBase):
    secrets: dict[str, Any] = Field(default_factory=dict)

    @field_validator("type")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.strip().lower()


class ConnectorUpdate(Text):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    config: dict[str, Any] | None = None
    #: Only the secret fields given are replaced; the others are kept.
    secrets: dict[str, Any] | None = None
    kinds: list[str] | None = None
    sync_interval_seconds: int | None = Field(default=None, ge=60, le=7 * 86400)
    #: A cron expression, or null to go back to the interval.
    sync_cron: str | None = Field(default=None, max_length=100)
    enabled: bool | None = None
    paused: bool | None = None


class ConnectorPublic(ConnectorBase):
    id: int
    created_at: datetime
    last_success_at: datetime | None
    last_run_status: str | None
    #: Names of the secrets that are set (their values are never returned).
    secrets_set: list[str]
    stale: bool
    #: When the next sync starts (scheduled, or queued); null when none is planned.
    next_run_at: datetime | None


class CheckPublic(SQLModel):
    ok: bool
    detail: str
    quota_used: int | None = None
    quota_limit: int | None = None


# ---------------------------------------------------------------------------- records


class SyncedRecord(SQLModel, table=True):
    """One source record as last synced (normalised columns + the vendor's raw fields)."""

    __tablename__ = "record"
    __table_args__ = (
        UniqueConstraint("connector_id", "kind", "source_id", name="uq_record_source"),
        # Window lookups by created/close date use the covering indexes of
        # `service.mappings.models`. No index on modified_at: metrics by modification date
        # are rare and scan (connector_id, kind); one index less makes every sync insert
        # about 25% cheaper (measured on SQLite, 40,000 leads).
    )
    id: int | None = Field(
        default=None,
        sa_column=Column(BigInteger().with_variant(Integer(), "sqlite"), primary_key=True),
    )
    #: Not indexed: no query selects records by workspace (they are read by connector),
    #: and the index cost every sync insert about a tenth of its time (measured, 200,000
    #: leads into SQLite). Deleting a workspace scans the table once for its records.
    workspace_id: int = Field(sa_column=workspace_fk(index=False))
    connector_id: int = Field(sa_column=_connector_fk())
    kind: str = Field(sa_column=Column(String(32), nullable=False))
    source_id: str = Field(sa_column=Column(String(255), nullable=False))
    created_at: datetime = Field(sa_type=UTCDateTime)
    modified_at: datetime = Field(sa_type=UTCDateTime)
    deleted: bool = False
    close_date: date | None = None
    status: str | None = Field(default=None, max_length=255)
    stage: str | None = Field(default=None, max_length=255)
    is_closed: bool | None = None
    is_won: bool | None = None
    #: Amount × AMOUNT_SCALE, exact (never a float).
    amount_e4: int | None = Field(default=None, sa_column=Column(BigInteger))
    currency: str | None = Field(default=None, max_length=3)
    lead_source: str | None = Field(default=None, max_length=255)
    owner: str | None = Field(default=None, max_length=255)
    deal_type: str | None = Field(default=None, max_length=255)
    score: int | None = Field(default=None, sa_column=Column(SmallInteger))
    email: str | None = Field(default=None, max_length=320)
    raw: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONType, nullable=False))
    synced_at: datetime = Field(sa_type=UTCDateTime)


# ---------------------------------------------------------------------------- checkpoints


class SyncState(SQLModel, table=True):
    """Where incremental sync of one (connector, kind) stands.

    `watermark` is the end of the last fully read window. While a window is being read,
    `window_start`/`window_end` and the last committed page's `resume` checkpoint are kept,
    so a crash resumes inside the window instead of restarting it.
    """

    __tablename__ = "sync_state"
    connector_id: int = Field(
        sa_column=Column(Integer, ForeignKey("connector.id", ondelete="CASCADE"), primary_key=True)
    )
    kind: str = Field(sa_column=Column(String(32), primary_key=True))
    watermark: datetime | None = Field(default=None, sa_type=UTCDateTime)
    window_start: datetime | None = Field(default=None, sa_type=UTCDateTime)
    window_end: datetime | None = Field(default=None, sa_type=UTCDateTime)
    resume: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    #: Last full-listing reconciliation (connectors whose vendor does not report deletes).
    reconciled_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    updated_at: datetime = Field(sa_type=UTCDateTime)


# ---------------------------------------------------------------------------- runs


class SyncRunBase(SQLModel):
    connector_id: int
    trigger: RunTrigger = Field(sa_column=Column(String(16), nullable=False))
    #: queued -> running -> succeeded | failed. A run whose worker died or shut down ends
    #: `failed` with `error_class` `interrupted`, one stopped by pausing its connector
    #: with `paused`; `resumed_by_run_id` continues it from its last committed page.
    status: RunStatus = Field(sa_column=Column(String(16), nullable=False))
    queued_at: datetime = Field(sa_type=UTCDateTime)
    #: Null while queued.
    started_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    duration_ms: int | None = None
    fetched: int = 0
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    requests: int = 0
    retries: int = 0
    error_class: str | None = Field(default=None, max_length=64)
    #: Why the run failed, secrets redacted.
    error_message: str | None = Field(default=None, max_length=4000)
    #: Per-kind counts, windows and vendor quota figures.
    details: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    #: The worker holding the run (host:id), while it runs.
    worker: str | None = Field(default=None, max_length=100)
    #: The run that resumes this one from its checkpoint, when it was interrupted.
    resumed_by_run_id: int | None = None


#: A connector has at most one queued or running run: the database says so, so two
#: requests or workers racing cannot both start one.
ACTIVE_STATUSES = ("queued", "running")
_ACTIVE = "status IN ('queued', 'running')"


class SyncRun(SyncRunBase, table=True):
    __tablename__ = "sync_run"
    __table_args__ = (
        Index(
            "uq_sync_run_active",
            "connector_id",
            unique=True,
            sqlite_where=text(_ACTIVE),
            postgresql_where=text(_ACTIVE),
        ),
    )
    id: int | None = Field(default=None, primary_key=True)
    workspace_id: int = Field(sa_column=workspace_fk())
    connector_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("connector.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )


class SyncRunPublic(SyncRunBase):
    id: int


# ---------------------------------------------------------------------------- rate budget


class RateBudget(SQLModel, table=True):
    """One lane of a vendor account's request schedule, shared by every process that
    sends on the account's behalf (`service.sync.budget`). Times are the database's
    clock in seconds since the Unix epoch, the one clock every process agrees on."""

    __tablename__ = "rate_budget"
    #: `connectors.governor.account_key`: vendor, base URL and portal id or token hash.
    account: str = Field(sa_column=Column(String(255), primary_key=True))
    lane: str = Field(sa_column=Column(String(32), primary_key=True))
    #: Where the next free cell starts (cells before it are leased to some process).
    next_free: float = Field(sa_column=Column(Double(), nullable=False))
    #: A 429 seen by any process: no cells before this.
    paused_until: float = Field(sa_column=Column(Double(), nullable=False))
    #: The start of the cells the last reservation got; NULL when it got none (so the
    #: reserver reads its own outcome from the row its statement wrote).
    granted_from: float | None = Field(default=None, sa_column=Column(Double(), nullable=True))
