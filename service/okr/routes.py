"""HTTP routes for teams, periods, objectives, key results, check-ins and initiatives."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Query, Request
from sqlmodel import col, select

from service.deps import ClockDep, EditorWorkspace, SessionDep, SettingsDep, ViewerWorkspace
from service.okr import history, service
from service.okr.models import (
    CheckInCreate,
    Initiative,
    InitiativeCreate,
    InitiativeKeyResult,
    InitiativePublic,
    InitiativeStatus,
    InitiativeUpdate,
    KeyResult,
    KeyResultCreate,
    KeyResultPublic,
    KeyResultUpdate,
    KeyResultValue,
    KeyResultValuePublic,
    Objective,
    ObjectiveCreate,
    ObjectivePublic,
    ObjectiveUpdate,
    Period,
    PeriodCreate,
    PeriodPublic,
    PeriodUpdate,
    Team,
    TeamCreate,
    TeamPublic,
    TeamUpdate,
)
from service.pagination import Cursor, Id, Limit, Page, decode_cursor, encode_cursor, page_size
from service.progress.maths import Status
from service.progress.service import key_result_progress, objectives_progress

router = APIRouter()
R = TypeVar("R", Objective, KeyResult)

IdFilter = Annotated[Id | None, Query()]


def _page_by_status(candidates: Iterable[R], size: int, matches: Callable[[R], bool]) -> Page[Any]:
    """A page of the rows whose computed progress status matches.

    Status is computed, not stored: candidates are walked in id order until the page is full,
    and the cursor points after the last row returned.
    """
    items: list[R] = []
    for row in candidates:
        if len(items) == size:
            return Page(items=items, next_cursor=encode_cursor(items[-1].id or 0))
        if matches(row):
            items.append(row)
    return Page(items=items, next_cursor=None)


# ---------------------------------------------------------------------------- teams


@router.get("/teams", response_model=Page[TeamPublic], tags=["teams"])
def list_teams(
    session: SessionDep,
    ws: ViewerWorkspace,
    settings: SettingsDep,
    limit: Limit = None,
    cursor: Cursor = None,
) -> Page[Any]:
    """List the workspace's teams."""
    query = select(Team).where(Team.workspace_id == ws.id)
    rows, nxt = service.page_of(
        session, query, Team, page_size(settings, limit), decode_cursor(cursor)
    )
    return Page(items=rows, next_cursor=nxt)


@router.post("/teams", response_model=TeamPublic, status_code=201, tags=["teams"])
def create_team(session: SessionDep, ws: EditorWorkspace, data: TeamCreate) -> Team:
    """Create a team, optionally under a parent team."""
    team = service.create_team(session, ws, data)
    session.commit()
    return team


@router.get("/teams/{team_id}", response_model=TeamPublic, tags=["teams"])
def read_team(session: SessionDep, ws: ViewerWorkspace, team_id: Id) -> Team:
    """Read a team."""
    return service.get_owned(session, Team, ws, team_id)


@router.patch("/teams/{team_id}", response_model=TeamPublic, tags=["teams"])
def update_team(session: SessionDep, ws: EditorWorkspace, team_id: Id, data: TeamUpdate) -> Team:
    """Rename a team or move it under another parent."""
    team = service.update_team(session, ws, service.get_owned(session, Team, ws, team_id), data)
    session.commit()
    return team


@router.delete("/teams/{team_id}", status_code=204, tags=["teams"])
def delete_team(session: SessionDep, ws: EditorWorkspace, team_id: Id) -> None:
    """Delete a team that owns no objective and no sub-team."""
    service.delete_team(session, service.get_owned(session, Team, ws, team_id))
    session.commit()


# ---------------------------------------------------------------------------- periods


@router.get("/periods", response_model=Page[PeriodPublic], tags=["periods"])
def list_periods(
    session: SessionDep,
    ws: ViewerWorkspace,
    settings: SettingsDep,
    limit: Limit = None,
    cursor: Cursor = None,
) -> Page[Any]:
    """List the workspace's periods."""
    query = select(Period).where(Period.workspace_id == ws.id)
    rows, nxt = service.page_of(
        session, query, Period, page_size(settings, limit), decode_cursor(cursor)
    )
    return Page(items=rows, next_cursor=nxt)


@router.post("/periods", response_model=PeriodPublic, status_code=201, tags=["periods"])
def create_period(session: SessionDep, ws: EditorWorkspace, data: PeriodCreate) -> Period:
    """Create a period `[start, end)` such as 2026 or 2026-Q1."""
    period = service.create_period(session, ws, data)
    session.commit()
    return period


@router.get("/periods/{period_id}", response_model=PeriodPublic, tags=["periods"])
def read_period(session: SessionDep, ws: ViewerWorkspace, period_id: Id) -> Period:
    """Read a period."""
    return service.get_owned(session, Period, ws, period_id)


@router.patch("/periods/{period_id}", response_model=PeriodPublic, tags=["periods"])
def update_period(
    session: SessionDep, ws: EditorWorkspace, period_id: Id, data: PeriodUpdate
) -> Period:
    """Rename a period or change its dates."""
    period = service.update_period(session, service.get_owned(session, Period, ws, period_id), data)
    session.commit()
    return period


@router.delete("/periods/{period_id}", status_code=204, tags=["periods"])
def delete_period(session: SessionDep, ws: EditorWorkspace, period_id: Id) -> None:
    """Delete a period that has no objective."""
    service.delete_period(session, service.get_owned(session, Period, ws, period_id))
    session.commit()


# ---------------------------------------------------------------------------- objectives


@router.get("/objectives", response_model=Page[ObjectivePublic], tags=["objectives"])
def list_objectives(
    session: SessionDep,
    ws: ViewerWorkspace,
    settings: SettingsDep,
    clock: ClockDep,
    limit: Limit = None,
    cursor: Cursor = None,
    period: Annotated[
        str | None,
        Query(description="Period name, id, or `current` (the period containing today)."),
    ] = None,
    team: IdFilter = None,
    status: Status | None = None,
) -> Page[Any]:
    """List objectives, filtered by period, team or progress status."""
    query = select(Objective).where(Objective.workspace_id == ws.id)
    if period is not None:
        query = query.where(
            Objective.period_id == service.find_period(session, ws, period, clock()).id
        )
    if team is not None:
        query = query.where(Objective.team_id == team)
    size = page_size(settings, limit)
    if status is None:
        rows, nxt = service.page_of(session, query, Objective, size, decode_cursor(cursor))
        return Page(items=rows, next_cursor=nxt)
    now = clock()
    return _page_by_status(
        session.exec(
            query.where(col(Objective.id) > decode_cursor(cursor)).order_by(col(Objective.id))
        ),
        size,
        lambda o: objectives_progress(session, ws, [o], now)[0].status is status,
    )


@router.post("/objectives", response_model=ObjectivePublic, status_code=201, tags=["objectives"])
def create_objective(
    session: SessionDep, ws: EditorWorkspace, clock: ClockDep, data: ObjectiveCreate
) -> Objective:
    """Create an objective in a period, optionally aligned to a parent objective."""
    objective = service.create_objective(session, ws, data, clock())
    session.commit()
    return objective


@router.get("/objectives/{objective_id}", response_model=ObjectivePublic, tags=["objectives"])
def read_objective(session: SessionDep, ws: ViewerWorkspace, objective_id: Id) -> Objective:
    """Read an objective."""
    return service.get_owned(session, Objective, ws, objective_id)


@router.patch("/objectives/{objective_id}", response_model=ObjectivePublic, tags=["objectives"])
def update_objective(
    session: SessionDep, ws: EditorWorkspace, objective_id: Id, data: ObjectiveUpdate
) -> Objective:
    """Change an objective (title, period, team, parent, weight)."""
    objective = service.get_owned(session, Objective, ws, objective_id)
    service.update_objective(session, ws, objective, data)
    session.commit()
    return objective


@router.delete("/objectives/{objective_id}", status_code=204, tags=["objectives"])
def delete_objective(session: SessionDep, ws: EditorWorkspace, objective_id: Id) -> None:
    """Delete an objective with its key results and their history."""
    service.delete_objective(session, service.get_owned(session, Objective, ws, objective_id))
    session.commit()


# ---------------------------------------------------------------------------- key results


@router.get("/key-results", response_model=Page[KeyResultPublic], tags=["key results"])
def list_key_results(
    session: SessionDep,
    ws: ViewerWorkspace,
    settings: SettingsDep,
    clock: ClockDep,
    limit: Limit = None,
    cursor: Cursor = None,
    objective: IdFilter = None,
    period: Annotated[
        str | None,
        Query(description="Period name, id, or `current` (the period containing today)."),
    ] = None,
    team: IdFilter = None,
    status: Status | None = None,
) -> Page[Any]:
    """List key results, filtered by objective, period, team or progress status."""
    query = select(KeyResult).where(KeyResult.workspace_id == ws.id)
    if objective is not None:
        query = query.where(KeyResult.objective_id == objective)
    if period is not None or team is not None:
        query = query.join(Objective, col(Objective.id) == KeyResult.objective_id)
        if period is not None:
            query = query.where(
                Objective.period_id == service.find_period(session, ws, period, clock()).id
            )
        if team is not None:
            query = query.where(Objective.team_id == team)
    size = page_size(settings, limit)
    if status is None:
        rows, nxt = service.page_of(session, query, KeyResult, size, decode_cursor(cursor))
        return Page(items=rows, next_cursor=nxt)
    now = clock()
    return _page_by_status(
        session.exec(
            query.where(col(KeyResult.id) > decode_cursor(cursor)).order_by(col(KeyResult.id))
        ),
        size,
        lambda kr: key_result_progress(session, ws, [kr], now)[0].status is status,
    )


@router.post("/key-results", response_model=KeyResultPublic, status_code=201, tags=["key results"])
def create_key_result(
    session: SessionDep, ws: EditorWorkspace, clock: ClockDep, data: KeyResultCreate
) -> KeyResult:
    """Create a key result under an objective."""
    key_result = service.create_key_result(session, ws, data, clock())
    session.commit()
    return key_result


@router.get("/key-results/{key_result_id}", response_model=KeyResultPublic, tags=["key results"])
def read_key_result(session: SessionDep, ws: ViewerWorkspace, key_result_id: Id) -> KeyResult:
    """Read a key result."""
    return service.get_owned(session, KeyResult, ws, key_result_id)


@router.patch("/key-results/{key_result_id}", response_model=KeyResultPublic, tags=["key results"])
def update_key_result(
    session: SessionDep, ws: EditorWorkspace, key_result_id: Id, data: KeyResultUpdate
) -> KeyResult:
    """Change a key result (kind, start, target, window...)."""
    key_result = service.get_owned(session, KeyResult, ws, key_result_id)
    service.update_key_result(session, ws, key_result, data)
    session.commit()
    return key_result


@router.delete("/key-results/{key_result_id}", status_code=204, tags=["key results"])
def delete_key_result(session: SessionDep, ws: EditorWorkspace, key_result_id: Id) -> None:
    """Delete a key result and its history."""
    session.delete(service.get_owned(session, KeyResult, ws, key_result_id))
    session.commit()


@router.post(
    "/key-results/{key_result_id}/check-ins",
    response_model=KeyResultValuePublic,
    status_code=201,
    tags=["key results"],
)
def create_check_in(
    session: SessionDep,
    ws: EditorWorkspace,
    clock: ClockDep,
    key_result_id: Id,
    data: CheckInCreate,
) -> KeyResultValue:
    """Record a manual value (with a note) in the key result's history."""
    key_result = service.get_owned(session, KeyResult, ws, key_result_id)
    point = service.check_in(session, key_result, data, clock())
    session.commit()
    return point


@router.get(
    "/key-results/{key_result_id}/history",
    response_model=Page[KeyResultValuePublic] | history.HistoryBucketsPublic,
    responses={200: history.OPENAPI_200},
    tags=["key results"],
)
def key_result_history(
    request: Request,
    session: SessionDep,
    ws: ViewerWorkspace,
    settings: SettingsDep,
    clock: ClockDep,
    key_result_id: Id,
    limit: Limit = None,
    cursor: Cursor = None,
    bucket: Annotated[
        history.HistoryBucket | None,
        Query(
            description="One item per local day, or per ISO week (Monday first), in the "
            "workspace's time zone, giving the value at its end: days or weeks without a "
            "point carry the previous value, and those before the first point say null. "
            "Not paginated (at most `OKR_HISTORY_BUCKETS_MAX_COUNT`, 1,000 by default). "
            "Without it: the points themselves in the order they were recorded, a page at a "
            "time."
        ),
    ] = None,
    from_: Annotated[
        history.CalendarDate | None,
        Query(
            alias="from",
            description="With `bucket`: the range's first day, YYYY-MM-DD (default: the "
            "start of the key result's window).",
        ),
    ] = None,
    to: Annotated[
        history.CalendarDate | None,
        Query(
            description="With `bucket`: the day after the range, which is half-open like "
            "periods (default: the end of the key result's window); days after today are "
            "left out."
        ),
    ] = None,
    format_: Annotated[
        history.HistoryFormat,
        Query(
            alias="format",
            description="`json`, or `csv` (`text/csv`, UTF-8, a header row; points: "
            "id, key_result_id, at, value, source, note, mapping_id, mapping_version, "
            "details; buckets: start, start_at, value, value_at, count; times in UTC). Text "
            "a spreadsheet would run as a formula (starting with = + - @) gets a leading `'`. "
            "A CSV of points holds all of them from `cursor` up to `limit` or "
            "`OKR_HISTORY_CSV_MAX_ROWS` (10,000 by default), and links the next ones in "
            '`Link: <...>; rel="next"`.',
        ),
    ] = history.HistoryFormat.json,
) -> Any:
    """The key result's value history: its points, or its value at the end of each day or week."""
    key_result = service.get_owned(session, KeyResult, ws, key_result_id)
    history.check_parameters(bucket=bucket, from_=from_, to=to, limit=limit, cursor=cursor)
    csv = format_ is history.HistoryFormat.csv
    if bucket is not None:
        found = history.buckets(
            session,
            ws,
            key_result,
            bucket,
            from_,
            to,
            clock(),
            settings.history_buckets_max_count,
        )
        return history.csv_response(history.buckets_csv(found), key_result_id) if csv else found
    size = (
        history.csv_page_size(settings.history_csv_max_rows, limit)
        if csv
        else page_size(settings, limit)
    )
    query = select(KeyResultValue).where(KeyResultValue.key_result_id == key_result_id)
    rows, nxt = service.page_of(session, query, KeyResultValue, size, decode_cursor(cursor))
    if not csv:
        return Page(items=rows, next_cursor=nxt)
    next_url = None
    if nxt is not None:
        following = request.url.include_query_params(cursor=nxt)
        next_url = f"{following.path}?{following.query}"
    return history.csv_response(history.points_csv(rows), key_result_id, next_url)


# ---------------------------------------------------------------------------- initiatives


@router.get("/initiatives", response_model=Page[InitiativePublic], tags=["initiatives"])
def list_initiatives(
    session: SessionDep,
    ws: ViewerWorkspace,
    settings: SettingsDep,
    limit: Limit = None,
    cursor: Cursor = None,
    status: InitiativeStatus | None = None,
    key_result: IdFilter = None,
) -> Page[InitiativePublic]:
    """List initiatives, filtered by status or by the key result they serve."""
    query = select(Initiative).where(Initiative.workspace_id == ws.id)
    if status is not None:
        query = query.where(Initiative.status == status)
    if key_result is not None:
        query = query.where(
            col(Initiative.id).in_(
                select(InitiativeKeyResult.initiative_id).where(
                    InitiativeKeyResult.key_result_id == key_result
                )
            )
        )
    rows, nxt = service.page_of(
        session, query, Initiative, page_size(settings, limit), decode_cursor(cursor)
    )
    return Page(items=[service.initiative_public(session, r) for r in rows], next_cursor=nxt)


@router.post("/initiatives", response_model=InitiativePublic, status_code=201, tags=["initiatives"])
def create_initiative(
    session: SessionDep, ws: EditorWorkspace, data: InitiativeCreate
) -> InitiativePublic:
    """Create an initiative serving one or more key results."""
    initiative = service.create_initiative(session, ws, data)
    session.commit()
    return service.initiative_public(session, initiative)


@router.get("/initiatives/{initiative_id}", response_model=InitiativePublic, tags=["initiatives"])
def read_initiative(
    session: SessionDep, ws: ViewerWorkspace, initiative_id: Id
) -> InitiativePublic:
    """Read an initiative."""
    initiative = service.get_owned(session, Initiative, ws, initiative_id)
    return service.initiative_public(session, initiative)


@router.patch("/initiatives/{initiative_id}", response_model=InitiativePublic, tags=["initiatives"])
def update_initiative(
    session: SessionDep, ws: EditorWorkspace, initiative_id: Id, data: InitiativeUpdate
) -> InitiativePublic:
    """Change an initiative (status, progress, owner, linked key results...)."""
    initiative = service.get_owned(session, Initiative, ws, initiative_id)
    service.update_initiative(session, ws, initiative, data)
    session.commit()
    return service.initiative_public(session, initiative)


@router.delete("/initiatives/{initiative_id}", status_code=204, tags=["initiatives"])
def delete_initiative(session: SessionDep, ws: EditorWorkspace, initiative_id: Id) -> None:
    """Delete an initiative."""
    session.delete(service.get_owned(session, Initiative, ws, initiative_id))
    session.commit()
