"""HTTP routes for progress reads (polling-friendly: ETag / If-None-Match)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from service.deps import ClockDep, SessionDep, ViewerWorkspace
from service.http_cache import cached_json
from service.okr.models import KeyResult, Objective
from service.okr.service import find_period, get_owned
from service.pagination import Id
from service.progress.models import KeyResultProgress, ObjectiveProgress, PeriodProgress
from service.progress.service import key_result_progress, objectives_progress, period_progress

router = APIRouter(tags=["progress"])

_304: dict[int | str, dict[str, Any]] = {
    304: {"description": "Not modified (the `If-None-Match` ETag still matches)."}
}


@router.get(
    "/key-results/{key_result_id}/progress", response_model=KeyResultProgress, responses=_304
)
def read_key_result_progress(
    request: Request,
    session: SessionDep,
    ws: ViewerWorkspace,
    clock: ClockDep,
    key_result_id: Id,
) -> Response:
    """A key result's progress object."""
    kr = get_owned(session, KeyResult, ws, key_result_id)
    [progress] = key_result_progress(session, ws, [kr], clock())
    return cached_json(request, progress)


@router.get("/objectives/{objective_id}/progress", response_model=ObjectiveProgress, responses=_304)
def read_objective_progress(
    request: Request,
    session: SessionDep,
    ws: ViewerWorkspace,
    clock: ClockDep,
    objective_id: Id,
) -> Response:
    """An objective's progress: the weighted mean of its key results, with theirs."""
    objective = get_owned(session, Objective, ws, objective_id)
    [progress] = objectives_progress(session, ws, [objective], clock())
    return cached_json(request, progress)


@router.get("/progress", response_model=PeriodProgress, responses=_304)
def read_period_progress(
    request: Request,
    session: SessionDep,
    ws: ViewerWorkspace,
    clock: ClockDep,
    period: Annotated[
        str,
        Query(
            description="Period name (e.g. 2026), id, or `current`: the longest period "
            "containing today in the workspace's time zone (the default).",
        ),
    ] = "current",
    team: Annotated[Id | None, Query(description="Only this team's objectives.")] = None,
) -> Response:
    """The whole tree of a period: objectives > key results > initiatives."""
    found = find_period(session, ws, period, clock())
    if team is not None:
        from service.okr.models import Team

        get_owned(session, Team, ws, team, field="team")
    return cached_json(request, period_progress(session, ws, found, clock(), team))
