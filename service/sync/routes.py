"""HTTP routes for connectors: configure, check, sync, and read their runs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from sqlmodel import col, select

from connectors.errors import ConnectorError
from service.deps import AdminWorkspace, ClockDep, RequestDbDep, SessionDep, SettingsDep
from service.okr.service import get_owned, page_of
from service.pagination import Cursor, Id, Limit, Page, decode_cursor, page_size
from service.sync import secrets as secret_store
from service.sync import service
from service.sync.engine import SyncEngine, runtime_for
from service.sync.models import (
    CheckPublic,
    Connector,
    ConnectorCreate,
    ConnectorPublic,
    ConnectorUpdate,
    RunTrigger,
    SyncRun,
    SyncRunPublic,
)

router = APIRouter(prefix="/connectors", tags=["connectors"])


def _engine(request: Request) -> SyncEngine:
    engine: SyncEngine = request.app.state.sync_engine
    return engine


@router.get("", response_model=Page[ConnectorPublic])
def list_connectors(
    session: SessionDep,
    ws: AdminWorkspace,
    settings: SettingsDep,
    clock: ClockDep,
    limit: Limit = None,
    cursor: Cursor = None,
) -> Page[ConnectorPublic]:
    """List the workspace's connectors (secrets are never returned)."""
    size = page_size(settings, limit)
    query = select(Connector).where(Connector.workspace_id == ws.id)
    rows, nxt = page_of(session, query, Connector, size, decode_cursor(cursor))
    now = clock()
    return Page(items=[service.public(r, now) for r in rows], next_cursor=nxt)


@router.post("", response_model=ConnectorPublic, status_code=201)
def create_connector(
    session: SessionDep,
    ws: AdminWorkspace,
    settings: SettingsDep,
    clock: ClockDep,
    data: ConnectorCreate,
) -> ConnectorPublic:
    """Configure a connector (Salesforce, HubSpot, Delighted or demo). URLs must name the
    vendor's hosts over https (or `OKR_CONNECTOR_ALLOWED_HOSTS`)."""
    now = clock()
    row = service.create_connector(session, ws, data, now, settings)
    session.commit()
    return service.public(row, now)


@router.get("/{connector_id}", response_model=ConnectorPublic)
def read_connector(
    session: SessionDep, ws: AdminWorkspace, clock: ClockDep, connector_id: Id
) -> ConnectorPublic:
    """Read a connector (secrets are reported by name only)."""
    return service.public(get_owned(session, Connector, ws, connector_id), clock())


@router.patch("/{connector_id}", response_model=ConnectorPublic)
def update_connector(
    session: SessionDep,
    ws: AdminWorkspace,
    settings: SettingsDep,
    clock: ClockDep,
    connector_id: Id,
    data: ConnectorUpdate,
) -> ConnectorPublic:
    """Change a connector's name, configuration, secrets, kinds or schedule. Changing a URL
    needs the connector's secrets in the same request."""
    row = get_owned(session, Connector, ws, connector_id)
    row = service.update_connector(session, row, data, settings)
    session.commit()
    return service.public(row, clock())


@router.delete("/{connector_id}", status_code=204)
def delete_connector(session: SessionDep, ws: AdminWorkspace, connector_id: Id) -> None:
    """Delete a connector with its synced records and runs."""
    session.delete(get_owned(session, Connector, ws, connector_id))
    session.commit()


@router.post("/{connector_id}/check", response_model=CheckPublic)
def check_connector(
    access: RequestDbDep,
    session: SessionDep,
    ws: AdminWorkspace,
    settings: SettingsDep,
    clock: ClockDep,
    connector_id: Id,
) -> CheckPublic:
    """Probe the connector's credentials and configuration with one cheap call."""
    row = get_owned(session, Connector, ws, connector_id)
    runtime = runtime_for(row, settings, clock)
    runtime.retry.max_attempts = min(runtime.retry.max_attempts, 2)
    try:
        vendor = service.build_connector(row, settings, runtime)
    except ConnectorError as exc:  # secrets no key decrypts
        return CheckPublic(ok=False, detail=f"{exc.error_class}: {exc.message}")
    # The vendor may take its whole timeout to answer: hold no connection meanwhile.
    access.release()
    try:
        result = vendor.check()
    except ConnectorError as exc:
        secrets = secret_store.known_values(row.secrets, settings)
        return CheckPublic(
            ok=False, detail=f"{exc.error_class}: {secret_store.redact(exc.message, secrets)}"
        )
    finally:
        vendor.close()
    return CheckPublic(
        ok=result.ok,
        detail=result.detail,
        quota_used=result.quota_used,
        quota_limit=result.quota_limit,
    )


@router.post("/{connector_id}/sync", response_model=SyncRunPublic)
def sync_connector(
    request: Request,
    access: RequestDbDep,
    session: SessionDep,
    ws: AdminWorkspace,
    connector_id: Id,
) -> SyncRun:
    """Run a sync now and return the finished run (409 if one is already running)."""
    get_owned(session, Connector, ws, connector_id)
    # The sync opens its own sessions, one page at a time; this request's goes back now.
    access.release()
    return _engine(request).run(connector_id, RunTrigger.manual)


@router.get("/{connector_id}/runs", response_model=Page[SyncRunPublic])
def list_runs(
    session: SessionDep,
    ws: AdminWorkspace,
    settings: SettingsDep,
    connector_id: Id,
    limit: Limit = None,
    cursor: Cursor = None,
) -> Page[Any]:
    """The connector's sync runs, oldest first."""
    get_owned(session, Connector, ws, connector_id)
    size = page_size(settings, limit)
    query = select(SyncRun).where(col(SyncRun.connector_id) == connector_id)
    rows, nxt = page_of(session, query, SyncRun, size, decode_cursor(cursor))
    return Page(items=rows, next_cursor=nxt)
