"""HTTP routes for workspaces."""

from __future__ import annotations

from fastapi import APIRouter
from sqlmodel import select

from service.db import flush_or_conflict
from service.deps import ClockDep, SessionDep, SettingsDep
from service.errors import InvalidError, NotFoundError
from service.okr.service import page_of
from service.pagination import Cursor, Limit, Page, decode_cursor, page_size
from service.workspaces.models import (
    Workspace,
    WorkspaceCreate,
    WorkspacePublic,
    WorkspaceUpdate,
)
from service.workspaces.service import check_margins

router = APIRouter(prefix="/workspaces", tags=["workspaces"])


def _get(session: SessionDep, slug: str) -> Workspace:
    if "\x00" in slug:  # no slug holds NUL, and PostgreSQL refuses to compare with it
        raise NotFoundError("workspace", repr(slug))
    found = session.exec(select(Workspace).where(Workspace.slug == slug)).first()
    if found is None:
        raise NotFoundError("workspace", repr(slug))
    return found


@router.get("", response_model=Page[WorkspacePublic])
def list_workspaces(
    session: SessionDep,
    settings: SettingsDep,
    limit: Limit = None,
    cursor: Cursor = None,
) -> Page[WorkspacePublic]:
    """List workspaces."""
    size = page_size(settings, limit)
    rows, nxt = page_of(session, select(Workspace), Workspace, size, decode_cursor(cursor))
    return Page(items=[WorkspacePublic.model_validate(r) for r in rows], next_cursor=nxt)


@router.post("", response_model=WorkspacePublic, status_code=201)
def create_workspace(session: SessionDep, clock: ClockDep, data: WorkspaceCreate) -> Workspace:
    """Create a workspace (one company, isolated from the others)."""
    check_margins(data.on_track_margin, data.at_risk_margin, data.model_fields_set)
    workspace = Workspace(**data.model_dump(), created_at=clock())
    session.add(workspace)
    flush_or_conflict(session, f"workspace {data.slug!r} already exists", "slug")
    session.commit()
    return workspace


@router.get("/{slug}", response_model=WorkspacePublic)
def read_workspace(session: SessionDep, slug: str) -> Workspace:
    """Read a workspace by slug."""
    return _get(session, slug)


@router.patch("/{slug}", response_model=WorkspacePublic)
def update_workspace(session: SessionDep, slug: str, data: WorkspaceUpdate) -> Workspace:
    """Change a workspace's name, time zone or status margins."""
    workspace = _get(session, slug)
    changes = data.model_dump(exclude_unset=True)
    for key, value in changes.items():
        if value is None:
            raise InvalidError(f"{key} cannot be null", field=key)
    check_margins(
        changes.get("on_track_margin", workspace.on_track_margin),
        changes.get("at_risk_margin", workspace.at_risk_margin),
        changes,
    )
    for key, value in changes.items():
        setattr(workspace, key, value)
    session.commit()
    return workspace


@router.delete("/{slug}", status_code=204)
def delete_workspace(session: SessionDep, slug: str) -> None:
    """Delete a workspace and everything in it."""
    session.delete(_get(session, slug))
    session.commit()
