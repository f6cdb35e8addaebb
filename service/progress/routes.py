"""HTTP routes for progress reads, served from built bytes (`service.progress.polling`):
ETag / If-None-Match answer 304 without building anything."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from service.pagination import Id
from service.progress import polling
from service.progress.models import KeyResultProgress, ObjectiveProgress, PeriodProgress
from service.progress.polling import PollScopeDep, progress_cache

router = APIRouter(tags=["progress"])

_304: dict[int | str, dict[str, Any]] = {
    304: {"description": "Not modified (the `If-None-Match` ETag still matches)."}
}


@router.get(
    "/key-results/{key_result_id}/progress", response_model=KeyResultProgress, responses=_304
)
async def read_key_result_progress(
    request: Request, scope: PollScopeDep, key_result_id: Id
) -> Response:
    """A key result's progress object."""
    return await progress_cache(request).serve(
        request, scope, ("key_result", key_result_id), polling.key_result(key_result_id)
    )


@router.get("/objectives/{objective_id}/progress", response_model=ObjectiveProgress, responses=_304)
async def read_objective_progress(
    request: Request, scope: PollScopeDep, objective_id: Id
) -> Response:
    """An objective's progress: the weighted mean of its key results, with theirs."""
    return await progress_cache(request).serve(
        request, scope, ("objective", objective_id), polling.objective(objective_id)
    )


@router.get("/progress", response_model=PeriodProgress, responses=_304)
async def read_period_progress(
    request: Request,
    scope: PollScopeDep,
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
    return await progress_cache(request).serve(
        request, scope, ("tree", period, team), polling.period_tree(period, team)
    )
