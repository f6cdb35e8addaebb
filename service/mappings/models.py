"""Mappings: which metric feeds a key result, versioned, and what the API shows of them."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from pydantic import ValidationInfo, field_validator
from sqlalchemy import JSON, Column, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlmodel import Field, SQLModel

from service.db_types import UTCDateTime
from service.json_types import as_documented
from service.mappings.spec import MetricSpec
from service.okr.models import workspace_fk
from service.sync.models import SyncedRecord

# ---------------------------------------------------------------------------- tables


class Mapping(SQLModel, table=True):
    """The binding of one key result to a metric spec (its current version)."""

    __tablename__ = "mapping"
    id: int | None = Field(default=None, primary_key=True)
    workspace_id: int = Field(sa_column=workspace_fk())
    #: One mapping per key result; deleting the key result deletes its mapping.
    key_result_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("key_result.id", ondelete="CASCADE"), nullable=False, unique=True
        )
    )
    version: int = 1
    spec: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(sa_type=UTCDateTime)
    updated_at: datetime = Field(sa_type=UTCDateTime)
    #: The same spec over the previous equivalent window (the ambition check).
    baseline: float | None = None
    baseline_start: date | None = None
    baseline_end: date | None = None


class MappingVersion(SQLModel, table=True):
    """A snapshot of a mapping's spec; value history points name the version they came from."""

    __tablename__ = "mapping_version"
    __table_args__ = (UniqueConstraint("mapping_id", "version", name="uq_mapping_version"),)
    id: int | None = Field(default=None, primary_key=True)
    mapping_id: int = Field(
        sa_column=Column(Integer, ForeignKey("mapping.id", ondelete="CASCADE"), nullable=False)
    )
    version: int
    spec: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(sa_type=UTCDateTime)


class MappingSource(SQLModel, table=True):
    """A (connector, kind) a mapping reads: what a sync of that kind must re-evaluate."""

    __tablename__ = "mapping_source"
    __table_args__ = (Index("ix_mapping_source_connector_kind", "connector_id", "kind"),)
    mapping_id: int = Field(
        sa_column=Column(Integer, ForeignKey("mapping.id", ondelete="CASCADE"), primary_key=True)
    )
    connector_id: int = Field(
        sa_column=Column(Integer, ForeignKey("connector.id", ondelete="CASCADE"), primary_key=True)
    )
    kind: str = Field(sa_column=Column(String(32), primary_key=True))


# Covering indexes for evaluation: the window column first (range scan), then the normalised
# columns specs filter and aggregate on, so that counts and sums over normalised fields are
# answered from the index alone, without visiting the table (see docs/benchmarks.md).
_record = SyncedRecord.__table__  # type: ignore[attr-defined]
Index(
    "ix_record_eval_created",
    _record.c.connector_id,
    _record.c.kind,
    _record.c.created_at,
    _record.c.deleted,
    _record.c.status,
    _record.c.score,
)
#: Only records with a close date (opportunities): every close-date window has
#: `close_date >= ? AND close_date < ?`, which implies it, so both databases still use the
#: index, and leads and NPS answers (most records) are no longer written into it.
_CLOSED = _record.c.close_date.is_not(None)
Index(
    "ix_record_eval_closed",
    _record.c.connector_id,
    _record.c.kind,
    _record.c.close_date,
    _record.c.deleted,
    _record.c.is_won,
    _record.c.is_closed,
    _record.c.deal_type,
    _record.c.lead_source,
    _record.c.currency,
    _record.c.amount_e4,
    sqlite_where=_CLOSED,
    postgresql_where=_CLOSED,
)

# ---------------------------------------------------------------------------- API models


class MappingCreate(SQLModel):
    key_result_id: int

    @field_validator("key_result_id", mode="before")
    @classmethod
    def _as_documented(cls, value: object, info: ValidationInfo) -> object:
        return as_documented(cls, value, info)

    spec: MetricSpec


class MappingUpdate(SQLModel):
    #: The new spec; the mapping's version goes up by one.
    spec: MetricSpec


class MappingPublic(SQLModel):
    id: int
    key_result_id: int
    version: int
    spec: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    #: The key result's value after this binding was evaluated.
    value: float | None
    value_details: dict[str, Any] | None
    baseline_previous_period: float | None
    baseline_window: dict[str, Any] | None


class MappingVersionPublic(SQLModel):
    version: int
    spec: dict[str, Any]
    created_at: datetime


class PreviewRequest(SQLModel):
    spec: MetricSpec
    #: The key result whose window (and currency) the spec is evaluated for; required
    #: when a window is the key result's own or the spec sums amounts.
    key_result_id: int | None = None
    sample_size: int = Field(default=20, ge=0, le=200)

    @field_validator("key_result_id", "sample_size", mode="before")
    @classmethod
    def _as_documented(cls, value: object, info: ValidationInfo) -> object:
        return as_documented(cls, value, info)


class RecordRef(SQLModel):
    """A record counted, with a link to it in the source application when known."""

    id: int
    source_id: str
    connector_id: int
    kind: str
    url: str | None
    #: The value the aggregate read from this record (amounts as exact decimal strings).
    value: str | float | int | bool | None = None
    currency: str | None = None


class PartPublic(SQLModel):
    """One aggregate of a spec (the value, a ratio's numerator or denominator, NPS answers)."""

    part: str
    connector_id: int
    kind: str
    aggregate: str
    field: str | None
    date_field: str
    window: dict[str, Any]
    #: Records that passed the filters and the window and entered the aggregate.
    records_counted: int
    #: The aggregate itself (a count, a sum, a mean...), exact, as a string or number.
    result: str | int | None
    #: Records left out because their amount is in another currency, per currency.
    other_currencies: dict[str, int] = {}


class PreviewPublic(SQLModel):
    value: float | None
    details: dict[str, Any]
    parts: list[PartPublic]
    sample: dict[str, list[RecordRef]]


class SourcePublic(SQLModel):
    connector_id: int
    name: str
    type: str
    kinds: list[str]
    last_success_at: datetime | None
    last_run_status: str | None
    stale: bool


class RecordsPage(SQLModel):
    part: str
    items: list[RecordRef]
    next_cursor: str | None


class ExplainPublic(SQLModel):
    key_result_id: int
    #: The value of the spec over the records stored now (what the ids below add up to).
    value: float | None
    #: The value stored on the key result (from the last evaluation), and when.
    stored_value: float | None
    value_at: datetime | None
    unit: str
    currency: str | None
    mapping_id: int
    mapping_version: int
    spec: dict[str, Any]
    timezone: str
    details: dict[str, Any]
    parts: list[PartPublic]
    sources: list[SourcePublic]
    records: RecordsPage
