"""The progress object dashboards read (PRODUCT.md, "The progress object")."""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, Field
from sqlalchemy import Column, ForeignKey, Integer
from sqlmodel import Field as SQLField
from sqlmodel import SQLModel

from service.okr.models import InitiativeStatus, KeyResultKind, Unit
from service.progress.maths import Status


class ProgressVersion(SQLModel, table=True):
    """A workspace's change counter: bumped in the transaction of every write a progress
    read depends on (`service.progress.versions`), so every API process can tell whether
    the representation it built is still current with one primary-key read."""

    __tablename__ = "progress_version"
    workspace_id: int = SQLField(
        sa_column=Column(Integer, ForeignKey("workspace.id", ondelete="CASCADE"), primary_key=True)
    )
    version: int = 0


EXPECTED_DESCRIPTION = (
    "Elapsed fraction of the window, 0..1, rounded down to 0.001 (0.1% of the window: "
    "about 8.8 hours of a year, 2.2 hours of a quarter), so it and the status it drives "
    "change at most once per such step."
)
FORECAST_DESCRIPTION = (
    "Linear projection of the value to the window's end (null before 10% of the window "
    "has elapsed or without a value). It is projected from the rounded expected progress "
    "and, for counts and amounts, rounded to 0.1% of the target range |target - start|; "
    "levels (rates, scores, thresholds) forecast their current value."
)
LAST_SYNCED_DESCRIPTION = (
    "Oldest last successful sync of the sources (null for manual key results or while one "
    "never synced). Not part of the ETag: a sync that changes no value keeps the tag; the "
    "tag changes when a value does or `stale` flips."
)
STALE_DESCRIPTION = (
    "A source has not synced successfully within its interval; flipping it changes the ETag."
)


class WindowPublic(BaseModel):
    """The resolved half-open window `[start, end)` in the workspace's time zone."""

    start: date
    end: date
    timezone: str


class ProgressFields(BaseModel):
    """Fields every progress read carries."""

    value: float | None
    start: float | None
    target: float
    unit: Unit | str
    progress: float
    expected_progress: float = Field(description=EXPECTED_DESCRIPTION)
    status: Status
    forecast: float | None = Field(description=FORECAST_DESCRIPTION)
    stale: bool = Field(description=STALE_DESCRIPTION)
    last_synced_at: datetime | None = Field(description=LAST_SYNCED_DESCRIPTION)


class InitiativeSummary(BaseModel):
    id: int
    title: str
    owner: str | None
    status: InitiativeStatus
    progress: float
    due_date: date | None


class KeyResultProgress(ProgressFields):
    """A key result's progress."""

    key_result_id: int
    objective_id: int
    title: str
    kind: KeyResultKind
    currency: str | None
    weight: float
    window: WindowPublic
    value_at: datetime | None
    #: Survey responses behind an NPS value.
    responses: int | None = None
    #: The same metric over the previous equivalent window (set once a mapping binds it).
    baseline_previous_period: float | None = None
    #: target ÷ baseline, when there is a non-zero baseline.
    target_to_baseline_ratio: float | None = None
    #: "realistic", "stretch" or "unrealistic" against the baseline.
    ambition: str | None = None
    initiatives: list[InitiativeSummary] = []


class ObjectiveProgress(ProgressFields):
    """An objective's progress: the weighted mean of its key results', in percent."""

    objective_id: int
    title: str
    team_id: int | None
    parent_id: int | None
    period_id: int
    weight: float
    key_results: list[KeyResultProgress]
    #: Objectives aligned to this one (filled in the period tree).
    children: list[ObjectiveProgress] = []


class PeriodProgress(BaseModel):
    """The whole tree of a period: objectives > key results > initiatives."""

    period_id: int
    period: str
    window: WindowPublic
    expected_progress: float = Field(description=EXPECTED_DESCRIPTION)
    progress: float
    status: Status
    objectives: list[ObjectiveProgress]
