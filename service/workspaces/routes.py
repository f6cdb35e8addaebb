"""HTTP routes for workspaces."""

from __future__ import annotations

from fastapi import APIRouter
from sqlmodel import select

from service.auth.models import Role
from service.auth.service import Principal, require
from service.db import flush_or_conflict
from service.deps import ClockDep, DeploymentAdmin, PrincipalDep, SessionDep, SettingsDep
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


def _get(session: SessionDep, principal: Principal, slug: str, role: Role) -> Workspace:
    """The workspace `slug`, if the token may see it with `role`; another workspace's
    slug is not found for a workspace token."""
    require(principal, role)
    if "\x00" in slug:  # no slug holds NUL, and PostgreSQL refuses to compare with it
        raise NotFoundError("workspace", repr(slug))
    found = session.exec(select(Workspace).where(Workspace.slug == slug)).first()
    if found is None or principal.workspace_id not in (None, found.id):
        raise NotFoundError("workspace", repr(slug))
    return found


@router.get("", response_model=Page[WorkspacePublic])
def list_workspaces(
    session: SessionDep,
    principal: PrincipalDep,
    settings: SettingsDep,
    limit: Limit = None,
    cursor: Cursor = None,
) -> Page[WorkspacePublic]:
    """List the workspaces the token may see: its own, or all for a deployment token."""
    size = page_size(settings, limit)
    query = select(Workspace)
    if principal.workspace_id is not None:
        query = query.where(Workspace.id == principal.workspace_id)
    rows, nxt = page_of(session, query, Workspace, size, decode_cursor(cursor))
    return Page(items=[WorkspacePublic.model_validate(r) for r in rows], next_cursor=nxt)


@router.post("", response_model=WorkspacePublic, status_code=201)
def create_workspace(
    session: SessionDep, _admin: DeploymentAdmin, clock: ClockDep, data: WorkspaceCreate
) -> Workspace:
    """Create a workspace (one company, isolated from the others); needs a deployment token."""
    check_margins(data.on_track_margin, data.at_risk_margin, data.model_fields_set)
    workspace = Workspace(**data.model_dump(), created_at=clock())
    session.add(workspace)
    flush_or_conflict(session, f"workspace {data.slug!r} already exists", "slug")
    session.commit()
    return workspace


@router.get("/{slug}", response_model=WorkspacePublic)
def read_workspace(session: SessionDep, principal: PrincipalDep, slug: str) -> Workspace:
    """Read a workspace by slug."""
    return _get(session, principal, slug, Role.viewer)


@router.patch("/{slug}", response_model=WorkspacePublic)
def update_workspace(
    session: SessionDep, principal: PrincipalDep, slug: str, data: WorkspaceUpdate
) -> Workspace:
    """Change a workspace's name, time zone or status margins."""
    workspace = _get(session, principal, slug, Role.admin)
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
def delete_workspace(session: SessionDep, principal: PrincipalDep, slug: str) -> None:
    """Delete a workspace and everything in it."""
    session.delete(_get(session, principal, slug, Role.admin))
    session.commit()
