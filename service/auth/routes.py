"""HTTP routes for API tokens and the audit log (admins of a workspace)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from sqlmodel import select

from service.auth import service
from service.auth.models import (
    ApiToken,
    AuditEvent,
    AuditEventPublic,
    TokenCreate,
    TokenCreated,
    TokenPublic,
)
from service.deps import AdminWorkspace, ClockDep, PrincipalDep, SessionDep, SettingsDep
from service.okr.service import get_owned, page_of
from service.pagination import Cursor, Id, Limit, Page, decode_cursor, page_size

router = APIRouter(tags=["tokens"])


@router.get("/tokens", response_model=Page[TokenPublic])
def list_tokens(
    session: SessionDep,
    ws: AdminWorkspace,
    settings: SettingsDep,
    limit: Limit = None,
    cursor: Cursor = None,
) -> Page[Any]:
    """List the workspace's tokens (never the tokens themselves)."""
    query = select(ApiToken).where(ApiToken.workspace_id == ws.id)
    rows, nxt = page_of(session, query, ApiToken, page_size(settings, limit), decode_cursor(cursor))
    return Page(items=[TokenPublic.model_validate(r) for r in rows], next_cursor=nxt)


@router.post("/tokens", response_model=TokenCreated, status_code=201)
def create_token(
    session: SessionDep,
    ws: AdminWorkspace,
    principal: PrincipalDep,
    clock: ClockDep,
    data: TokenCreate,
) -> TokenCreated:
    """Create a token for this workspace; the answer is the only time the token is shown."""
    row, token = service.create_token(session, ws.id, data, clock(), principal.label)
    session.commit()
    return TokenCreated.model_validate(row.model_dump() | {"token": token})


@router.delete("/tokens/{token_id}", response_model=TokenPublic)
def revoke_token(
    session: SessionDep, ws: AdminWorkspace, clock: ClockDep, token_id: Id
) -> ApiToken:
    """Revoke a token: from now on it answers 401. Revoking twice keeps the first time."""
    row = get_owned(session, ApiToken, ws, token_id)
    if row.revoked_at is None:
        row.revoked_at = clock()
    session.commit()
    return row


@router.get("/audit", response_model=Page[AuditEventPublic], tags=["audit"])
def list_audit_events(
    session: SessionDep,
    ws: AdminWorkspace,
    settings: SettingsDep,
    limit: Limit = None,
    cursor: Cursor = None,
) -> Page[Any]:
    """Who changed what in this workspace, and when (oldest first; secrets masked)."""
    query = select(AuditEvent).where(AuditEvent.workspace_id == ws.id)
    size = page_size(settings, limit)
    rows, nxt = page_of(session, query, AuditEvent, size, decode_cursor(cursor))
    return Page(items=[AuditEventPublic.model_validate(r) for r in rows], next_cursor=nxt)
