"""OKR logic: create, change and delete teams, periods, objectives, key results,
initiatives and check-ins, always inside one workspace. Functions flush; routes commit."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from sqlalchemy import BigInteger, func
from sqlmodel import Session, SQLModel, col, select

from service.db import flush_or_conflict
from service.errors import ConflictError, InvalidError, NotFoundError
from service.okr.models import (
    CheckInCreate,
    Initiative,
    InitiativeCreate,
    InitiativeKeyResult,
    InitiativePublic,
    InitiativeUpdate,
    KeyResult,
    KeyResultCreate,
    KeyResultRuleError,
    KeyResultUpdate,
    KeyResultValue,
    Objective,
    ObjectiveCreate,
    ObjectiveUpdate,
    Period,
    PeriodCreate,
    PeriodUpdate,
    Team,
    TeamCreate,
    TeamUpdate,
    ValueSource,
    check_key_result,
)
from service.pagination import MAX_ID, encode_cursor
from service.workspaces.models import Workspace

M = TypeVar("M", bound=SQLModel)

_NAMES = {
    Team: "team",
    Period: "period",
    Objective: "objective",
    KeyResult: "key result",
    Initiative: "initiative",
}


def max_id(model: type[SQLModel]) -> int:
    """The largest id `model`'s id column can hold."""
    id_type = model.__table__.c.id.type  # type: ignore[attr-defined]
    return 2**63 - 1 if isinstance(id_type, BigInteger) else MAX_ID


def wid(ws: Workspace) -> int:
    """The id of a stored workspace."""
    assert ws.id is not None
    return ws.id


def get_owned(
    session: Session, model: type[M], workspace: Workspace, ident: int, *, field: str | None = None
) -> M:
    """The row `ident` of `model` in `workspace`, or NotFoundError (naming `field` if given).

    A row of another workspace is reported exactly like a missing one, so ids leak nothing.
    A reference inside a request body (`field` given) is a 422; a path id is a 404.
    """
    row = session.get(model, ident) if 0 < ident <= max_id(model) else None
    if row is None or getattr(row, "workspace_id", None) != workspace.id:
        name = _NAMES.get(model, model.__name__.lower())
        if field is not None:
            raise InvalidError(f"{name} {ident} does not exist in this workspace", field=field)
        raise NotFoundError(name, ident)
    return row


def page_of(
    session: Session, query: Any, model: type[M], limit: int, after_id: int
) -> tuple[list[M], str | None]:
    """One keyset page of `query` ordered by id, and the cursor of the next page."""
    id_col = col(model.id)  # type: ignore[attr-defined]
    if after_id >= max_id(model):
        return [], None
    rows = list(session.exec(query.where(id_col > after_id).order_by(id_col).limit(limit + 1)))
    if len(rows) > limit:
        return rows[:limit], encode_cursor(rows[limit - 1].id)
    return rows, None


def _apply(row: SQLModel, changes: dict[str, Any]) -> None:
    for key, value in changes.items():
        setattr(row, key, value)


def _flush_unique(session: Session, what: str, field: str) -> None:
    flush_or_conflict(session, f"a {what} with this {field} already exists", field)


# ---------------------------------------------------------------------------- teams


def _check_team_parent(
    session: Session, ws: Workspace, team_id: int | None, parent: int | None
) -> None:
    seen = {team_id} if team_id is not None else set()
    current = parent
    while current is not None:
        if current in seen:
            raise InvalidError("a team cannot be its own ancestor", field="parent_id")
        seen.add(current)
        current = get_owned(session, Team, ws, current, field="parent_id").parent_id


def create_team(session: Session, ws: Workspace, data: TeamCreate) -> Team:
    _check_team_parent(session, ws, None, data.parent_id)
    team = Team(workspace_id=wid(ws), **data.model_dump())
    session.add(team)
    _flush_unique(session, "team", "name")
    return team


def update_team(session: Session, ws: Workspace, team: Team, data: TeamUpdate) -> Team:
    changes = data.model_dump(exclude_unset=True)
    if changes.get("name", "") is None:
        raise InvalidError("name cannot be null", field="name")
    if "parent_id" in changes:
        _check_team_parent(session, ws, team.id, changes["parent_id"])
    _apply(team, changes)
    _flush_unique(session, "team", "name")
    return team


def delete_team(session: Session, team: Team) -> None:
    in_use = session.exec(
        select(func.count()).select_from(Objective).where(Objective.team_id == team.id)
    ).one()
    children = session.exec(
        select(func.count()).select_from(Team).where(Team.parent_id == team.id)
    ).one()
    if in_use or children:
        raise ConflictError(
            f"team {team.id} still owns {in_use} objective(s) and {children} sub-team(s)"
        )
    session.delete(team)
    session.flush()


# ---------------------------------------------------------------------------- periods


def create_period(session: Session, ws: Workspace, data: PeriodCreate) -> Period:
    period = Period(workspace_id=wid(ws), **data.model_dump())
    session.add(period)
    _flush_unique(session, "period", "name")
    return period


def update_period(session: Session, period: Period, data: PeriodUpdate) -> Period:
    changes = data.model_dump(exclude_unset=True)
    for key in ("name", "start", "end"):
        if key in changes and changes[key] is None:
            raise InvalidError(f"{key} cannot be null", field=key)
    start, end = changes.get("start", period.start), changes.get("end", period.end)
    if end <= start:
        raise InvalidError("end must be after start (periods are half-open)", field="end")
    _apply(period, changes)
    _flush_unique(session, "period", "name")
    return period


def delete_period(session: Session, period: Period) -> None:
    used = session.exec(
        select(func.count()).select_from(Objective).where(Objective.period_id == period.id)
    ).one()
    if used:
        raise ConflictError(f"period {period.id} still has {used} objective(s)")
    session.delete(period)
    session.flush()


#: The period reference meaning "the one that contains today".
CURRENT_PERIOD = "current"


def find_period(session: Session, ws: Workspace, ref: str, now: datetime) -> Period:
    """A period by name (`2026`, `2026-Q1`), by id, or `current`.

    `current` is the longest period containing today in the workspace's time zone (the
    year rather than its quarter), so a link or a script written once works every year.
    """
    if "\x00" in ref:  # no name holds NUL, and PostgreSQL refuses to compare with it
        raise NotFoundError("period", repr(ref), field="period")
    query = select(Period).where(Period.workspace_id == ws.id)
    # Names win over ids: a period named "2026" is what `?period=2026` means.
    found = session.exec(query.where(Period.name == ref)).first()
    if found is None and ref.isascii() and ref.isdigit() and 0 < int(ref) <= MAX_ID:
        found = session.exec(query.where(Period.id == int(ref))).first()
    if found is None and ref == CURRENT_PERIOD:
        today = now.astimezone(ZoneInfo(ws.timezone)).date()
        containing = session.exec(query.where(Period.start <= today, Period.end > today)).all()
        if not containing:
            raise NotFoundError(
                "period", f"containing {today.isoformat()} ({ws.timezone})", field="period"
            )
        found = min(containing, key=lambda p: (p.start - p.end, p.start, p.id))
    if found is None:
        raise NotFoundError("period", repr(ref), field="period")
    return found


# ---------------------------------------------------------------------------- objectives


def _check_objective_refs(
    session: Session, ws: Workspace, objective_id: int | None, values: dict[str, Any]
) -> None:
    if values.get("period_id") is not None:
        get_owned(session, Period, ws, values["period_id"], field="period_id")
    if values.get("team_id") is not None:
        get_owned(session, Team, ws, values["team_id"], field="team_id")
    seen = {objective_id} if objective_id is not None else set()
    current = values.get("parent_id")
    while current is not None:
        if current in seen:
            raise InvalidError("an objective cannot be its own ancestor", field="parent_id")
        seen.add(current)
        current = get_owned(session, Objective, ws, current, field="parent_id").parent_id


def create_objective(
    session: Session, ws: Workspace, data: ObjectiveCreate, now: datetime
) -> Objective:
    values = data.model_dump()
    _check_objective_refs(session, ws, None, values)
    objective = Objective(workspace_id=wid(ws), created_at=now, **values)
    session.add(objective)
    session.flush()
    return objective


def update_objective(
    session: Session, ws: Workspace, objective: Objective, data: ObjectiveUpdate
) -> Objective:
    changes = data.model_dump(exclude_unset=True)
    for key in ("title", "period_id", "weight"):
        if key in changes and changes[key] is None:
            raise InvalidError(f"{key} cannot be null", field=key)
    _check_objective_refs(session, ws, objective.id, changes)
    _apply(objective, changes)
    session.flush()
    return objective


def delete_objective(session: Session, objective: Objective) -> None:
    children = session.exec(
        select(func.count()).select_from(Objective).where(Objective.parent_id == objective.id)
    ).one()
    if children:
        raise ConflictError(
            f"objective {objective.id} has {children} aligned objective(s); "
            "move or delete them first"
        )
    session.delete(objective)  # key results, their history and links cascade
    session.flush()


# ---------------------------------------------------------------------------- key results


def _check_rules(values: dict[str, Any]) -> None:
    try:
        check_key_result(values)
    except KeyResultRuleError as exc:
        raise InvalidError(exc.message, field=exc.field) from None


def create_key_result(
    session: Session, ws: Workspace, data: KeyResultCreate, now: datetime
) -> KeyResult:
    values = data.model_dump()
    get_owned(session, Objective, ws, data.objective_id, field="objective_id")
    _check_rules(values)
    key_result = KeyResult(workspace_id=wid(ws), created_at=now, **values)
    session.add(key_result)
    session.flush()
    return key_result


_KR_FIELDS = (
    "title",
    "description",
    "objective_id",
    "kind",
    "unit",
    "currency",
    "start",
    "target",
    "weight",
    "window_start",
    "window_end",
)


def update_key_result(
    session: Session, ws: Workspace, key_result: KeyResult, data: KeyResultUpdate
) -> KeyResult:
    changes = data.model_dump(exclude_unset=True)
    for key in ("title", "objective_id", "kind", "unit", "target", "weight"):
        if key in changes and changes[key] is None:
            raise InvalidError(f"{key} cannot be null", field=key)
    if "objective_id" in changes:
        get_owned(session, Objective, ws, changes["objective_id"], field="objective_id")
    merged = {name: getattr(key_result, name) for name in _KR_FIELDS} | changes
    _check_rules(merged)
    _apply(key_result, changes)
    session.flush()
    return key_result


def record_value(
    session: Session,
    key_result: KeyResult,
    *,
    value: float | None,
    at: datetime,
    source: ValueSource,
    note: str | None = None,
    mapping_id: int | None = None,
    mapping_version: int | None = None,
    details: dict[str, Any] | None = None,
) -> KeyResultValue:
    """Append a point to the value history and make it current if it is the newest."""
    point = KeyResultValue(
        workspace_id=key_result.workspace_id,
        key_result_id=key_result.id,  # type: ignore[arg-type]
        at=at,
        value=value,
        source=source,
        note=note,
        mapping_id=mapping_id,
        mapping_version=mapping_version,
        details=details,
    )
    session.add(point)
    if key_result.value_at is None or at >= key_result.value_at:
        key_result.value = value
        key_result.value_at = at
        key_result.value_details = details
    session.flush()
    return point


def check_in(
    session: Session, key_result: KeyResult, data: CheckInCreate, now: datetime
) -> KeyResultValue:
    """A manual check-in: value and note, at `data.at` or now (never in the future)."""
    at = data.at or now
    if at > now:
        raise InvalidError("a check-in cannot be in the future", field="at")
    return record_value(
        session, key_result, value=data.value, at=at, source=ValueSource.manual, note=data.note
    )


# ---------------------------------------------------------------------------- initiatives


def _check_key_results(session: Session, ws: Workspace, ids: Sequence[int]) -> list[int]:
    unique = list(dict.fromkeys(ids))
    for ident in unique:
        get_owned(session, KeyResult, ws, ident, field="key_result_ids")
    return unique


def initiative_public(session: Session, initiative: Initiative) -> InitiativePublic:
    ids = session.exec(
        select(InitiativeKeyResult.key_result_id)
        .where(InitiativeKeyResult.initiative_id == initiative.id)
        .order_by(col(InitiativeKeyResult.key_result_id))
    ).all()
    return InitiativePublic(**initiative.model_dump(), key_result_ids=list(ids))


def _link(session: Session, initiative: Initiative, ids: list[int]) -> None:
    for link in session.exec(
        select(InitiativeKeyResult).where(InitiativeKeyResult.initiative_id == initiative.id)
    ):
        session.delete(link)
    session.flush()
    for ident in ids:
        session.add(InitiativeKeyResult(initiative_id=initiative.id, key_result_id=ident))  # type: ignore[arg-type]


def create_initiative(session: Session, ws: Workspace, data: InitiativeCreate) -> Initiative:
    ids = _check_key_results(session, ws, data.key_result_ids)
    initiative = Initiative(workspace_id=wid(ws), **data.model_dump(exclude={"key_result_ids"}))
    session.add(initiative)
    session.flush()
    _link(session, initiative, ids)
    session.flush()
    return initiative


def update_initiative(
    session: Session, ws: Workspace, initiative: Initiative, data: InitiativeUpdate
) -> Initiative:
    changes = data.model_dump(exclude_unset=True)
    for key in ("title", "status", "progress", "key_result_ids"):
        if key in changes and changes[key] is None:
            raise InvalidError(f"{key} cannot be null", field=key)
    ids = changes.pop("key_result_ids", None)
    if ids is not None:
        ids = _check_key_results(session, ws, ids)
    _apply(initiative, changes)
    if ids is not None:
        _link(session, initiative, ids)
    session.flush()
    return initiative
