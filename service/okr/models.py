"""The OKR model: teams, periods, objectives, key results, initiatives and value history.

Every row belongs to a workspace; every query goes through the workspace dependency.
"""

from __future__ import annotations

import enum
from datetime import date, datetime
from typing import Any

from pydantic import FiniteFloat, ValidationInfo, field_validator
from sqlalchemy import JSON, Column, ForeignKey, Integer, UniqueConstraint
from sqlmodel import Field, SQLModel

from service.db_types import UTCDateTime
from service.workspaces.models import Text


def _fk(target: str, *, nullable: bool = False, cascade: bool = True, index: bool = True) -> Any:
    """A foreign-key column; `cascade` deletes children with their parent."""
    return Column(
        Integer,
        ForeignKey(target, ondelete="CASCADE" if cascade else None),
        nullable=nullable,
        index=index,
    )


def workspace_fk(*, index: bool = True) -> Any:
    return _fk("workspace.id", index=index)


class KeyResultKind(enum.StrEnum):
    """How progress is computed from the value (PRODUCT.md, "Progress")."""

    increase = "increase"
    decrease = "decrease"
    at_least = "at_least"
    at_most = "at_most"
    milestone = "milestone"


class Unit(enum.StrEnum):
    count = "count"  # type: ignore[assignment]  # shadows str.count, harmlessly
    percent = "percent"
    currency = "currency"
    score = "score"


class InitiativeStatus(enum.StrEnum):
    planned = "planned"
    in_progress = "in_progress"
    done = "done"
    dropped = "dropped"


class ValueSource(enum.StrEnum):
    manual = "manual"
    sync = "sync"


# ---------------------------------------------------------------------------- teams


class TeamBase(Text):
    name: str = Field(min_length=1, max_length=200)
    parent_id: int | None = None


class Team(TeamBase, table=True):
    __table_args__ = (UniqueConstraint("workspace_id", "name"),)
    id: int | None = Field(default=None, primary_key=True)
    workspace_id: int = Field(sa_column=workspace_fk())
    parent_id: int | None = Field(
        default=None, sa_column=_fk("team.id", nullable=True, cascade=False)
    )


class TeamCreate(TeamBase):
    pass


class TeamUpdate(Text):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    parent_id: int | None = None


class TeamPublic(TeamBase):
    id: int


# ---------------------------------------------------------------------------- periods


class PeriodBase(Text):
    name: str = Field(min_length=1, max_length=100)
    #: First day of the period, in the workspace's time zone.
    start: date
    #: The day after the last day: periods are half-open `[start, end)`.
    end: date


def _check_range(start: date | None, end: date | None, end_field: str) -> None:
    if start is not None and end is not None and end <= start:
        raise ValueError(f"{end_field} must be after start (windows are half-open [start, end))")


class Period(PeriodBase, table=True):
    __table_args__ = (UniqueConstraint("workspace_id", "name"),)
    id: int | None = Field(default=None, primary_key=True)
    workspace_id: int = Field(sa_column=workspace_fk())


class PeriodCreate(PeriodBase):
    @field_validator("end")
    @classmethod
    def _range(cls, end: date, info: ValidationInfo) -> date:
        # A field validator (not a model one) so that the error names `end`.
        _check_range(info.data.get("start"), end, "end")
        return end


class PeriodUpdate(Text):
    name: str | None = Field(default=None, min_length=1, max_length=100)
    start: date | None = None
    end: date | None = None


class PeriodPublic(PeriodBase):
    id: int


# ---------------------------------------------------------------------------- objectives


class ObjectiveBase(Text):
    title: str = Field(min_length=1, max_length=500)
    description: str | None = Field(default=None, max_length=5000)
    period_id: int
    team_id: int | None = None
    #: The objective this one aligns to (the pyramid); None for a top-level objective.
    parent_id: int | None = None
    weight: FiniteFloat = Field(default=1.0, gt=0)


class Objective(ObjectiveBase, table=True):
    id: int | None = Field(default=None, primary_key=True)
    workspace_id: int = Field(sa_column=workspace_fk())
    period_id: int = Field(sa_column=_fk("period.id", cascade=False))
    team_id: int | None = Field(
        default=None, sa_column=_fk("team.id", nullable=True, cascade=False)
    )
    parent_id: int | None = Field(
        default=None, sa_column=_fk("objective.id", nullable=True, cascade=False)
    )
    created_at: datetime = Field(sa_type=UTCDateTime)


class ObjectiveCreate(ObjectiveBase):
    pass


class ObjectiveUpdate(Text):
    title: str | None = Field(default=None, min_length=1, max_length=500)
    description: str | None = Field(default=None, max_length=5000)
    period_id: int | None = None
    team_id: int | None = None
    parent_id: int | None = None
    weight: FiniteFloat | None = Field(default=None, gt=0)


class ObjectivePublic(ObjectiveBase):
    id: int
    created_at: datetime


# ---------------------------------------------------------------------------- key results


#: ISO 4217 currency codes. (SQLModel's `regex=` is silently ignored under pydantic 2:
#: patterns go through `schema_extra`.)
CURRENCY_PATTERN = r"^[A-Z]{3}$"


class KeyResultBase(Text):
    title: str = Field(min_length=1, max_length=500)
    description: str | None = Field(default=None, max_length=5000)
    objective_id: int
    kind: KeyResultKind = KeyResultKind.increase
    unit: Unit = Unit.count
    #: ISO 4217 code, required when `unit` is currency.
    currency: str | None = Field(default=None, schema_extra={"pattern": CURRENCY_PATTERN})
    #: Where the value starts; required by increase/decrease, optional for thresholds.
    start: FiniteFloat | None = None
    target: FiniteFloat
    weight: FiniteFloat = Field(default=1.0, gt=0)
    #: Own window `[window_start, window_end)`; defaults to the objective's period.
    window_start: date | None = None
    window_end: date | None = None


def check_key_result(values: dict[str, Any]) -> None:
    """Cross-field rules of a key result; raises ValueError naming the field."""
    kind = KeyResultKind(values["kind"])
    start, target = values.get("start"), values["target"]
    if kind in (KeyResultKind.increase, KeyResultKind.decrease):
        if start is None:
            raise KeyResultRuleError("start", f"a {kind.value} key result needs a start value")
        if kind is KeyResultKind.increase and not target > start:
            raise KeyResultRuleError("target", "an increase key result needs target > start")
        if kind is KeyResultKind.decrease and not target < start:
            raise KeyResultRuleError("target", "a decrease key result needs target < start")
    if kind is KeyResultKind.at_least and start is not None and not start < target:
        raise KeyResultRuleError("start", "an at_least key result needs start < target")
    if kind is KeyResultKind.at_most and start is not None and not start > target:
        raise KeyResultRuleError("start", "an at_most key result needs start > target")
    if kind is KeyResultKind.milestone and target != 1:
        raise KeyResultRuleError("target", "a milestone key result has target 1 (done)")
    if Unit(values["unit"]) is Unit.currency and not values.get("currency"):
        raise KeyResultRuleError("currency", "a currency key result needs an ISO 4217 currency")
    if Unit(values["unit"]) is not Unit.currency and values.get("currency"):
        raise KeyResultRuleError("currency", "currency is only allowed with unit 'currency'")
    ws, we = values.get("window_start"), values.get("window_end")
    if (ws is None) != (we is None):
        field = "window_end" if we is None else "window_start"
        raise KeyResultRuleError(field, "give both window_start and window_end, or neither")
    if ws is not None and we is not None and we <= ws:
        raise KeyResultRuleError("window_end", "window_end must be after window_start")


class KeyResultRuleError(ValueError):
    """A broken key-result rule, with the field it concerns."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class KeyResult(KeyResultBase, table=True):
    __tablename__ = "key_result"
    id: int | None = Field(default=None, primary_key=True)
    workspace_id: int = Field(sa_column=workspace_fk())
    objective_id: int = Field(sa_column=_fk("objective.id"))
    #: Latest value (from a check-in or a mapping evaluation); the history keeps them all.
    value: float | None = None
    value_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    #: Extra facts about the value (e.g. NPS `responses`), served with progress.
    value_details: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    created_at: datetime = Field(sa_type=UTCDateTime)


def _upper(value: object) -> object:
    return value.upper() if isinstance(value, str) else value


class KeyResultCreate(KeyResultBase):
    _currency_upper = field_validator("currency", mode="before")(_upper)


class KeyResultUpdate(Text):
    title: str | None = Field(default=None, min_length=1, max_length=500)
    description: str | None = Field(default=None, max_length=5000)
    objective_id: int | None = None
    kind: KeyResultKind | None = None
    unit: Unit | None = None
    currency: str | None = Field(default=None, schema_extra={"pattern": CURRENCY_PATTERN})
    start: FiniteFloat | None = None
    target: FiniteFloat | None = None
    weight: FiniteFloat | None = Field(default=None, gt=0)
    window_start: date | None = None
    window_end: date | None = None

    _currency_upper = field_validator("currency", mode="before")(_upper)


class KeyResultPublic(KeyResultBase):
    id: int
    value: float | None
    value_at: datetime | None
    created_at: datetime


# ---------------------------------------------------------------------------- check-ins / history


class KeyResultValue(SQLModel, table=True):
    """One point of a key result's value history."""

    __tablename__ = "key_result_value"
    id: int | None = Field(default=None, primary_key=True)
    workspace_id: int = Field(sa_column=workspace_fk())
    key_result_id: int = Field(sa_column=_fk("key_result.id"))
    at: datetime = Field(sa_type=UTCDateTime, index=True)
    value: float | None
    source: ValueSource
    note: str | None = Field(default=None, max_length=2000)
    #: Which mapping version produced a synced value (None for manual check-ins).
    mapping_id: int | None = None
    mapping_version: int | None = None
    details: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))


class CheckInCreate(Text):
    value: FiniteFloat
    note: str | None = Field(default=None, max_length=2000)
    #: When the value was observed; defaults to now. Never in the future.
    at: datetime | None = None

    @field_validator("at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("give a time zone offset, e.g. 2026-03-01T09:00:00+01:00")
        return value


class KeyResultValuePublic(SQLModel):
    id: int
    key_result_id: int
    at: datetime
    value: float | None
    source: ValueSource
    note: str | None
    mapping_id: int | None
    mapping_version: int | None
    details: dict[str, Any] | None


# ---------------------------------------------------------------------------- initiatives


class InitiativeKeyResult(SQLModel, table=True):
    """Which key results an initiative serves."""

    __tablename__ = "initiative_key_result"
    initiative_id: int = Field(
        sa_column=Column(Integer, ForeignKey("initiative.id", ondelete="CASCADE"), primary_key=True)
    )
    key_result_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("key_result.id", ondelete="CASCADE"), primary_key=True, index=True
        )
    )


class InitiativeBase(Text):
    title: str = Field(min_length=1, max_length=500)
    description: str | None = Field(default=None, max_length=5000)
    owner: str | None = Field(default=None, max_length=200)
    status: InitiativeStatus = InitiativeStatus.planned
    progress: float = Field(default=0.0, ge=0, le=1)
    due_date: date | None = None


class Initiative(InitiativeBase, table=True):
    id: int | None = Field(default=None, primary_key=True)
    workspace_id: int = Field(sa_column=workspace_fk())


class InitiativeCreate(InitiativeBase):
    key_result_ids: list[int] = Field(min_length=1)


class InitiativeUpdate(Text):
    title: str | None = Field(default=None, min_length=1, max_length=500)
    description: str | None = Field(default=None, max_length=5000)
    owner: str | None = Field(default=None, max_length=200)
    status: InitiativeStatus | None = None
    progress: float | None = Field(default=None, ge=0, le=1)
    due_date: date | None = None
    key_result_ids: list[int] | None = Field(default=None, min_length=1)


class InitiativePublic(InitiativeBase):
    id: int
    key_result_ids: list[int]
