"""The progress object dashboards read (PRODUCT.md, "The progress object")."""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel

from service.okr.models import InitiativeStatus, KeyResultKind, Unit
from service.progress.maths import Status


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
    expected_progress: float
    status: Status
    forecast: float | None
    stale: bool
    last_synced_at: datetime | None


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
    expected_progress: float
    progress: float
    status: Status
    objectives: list[ObjectiveProgress]
