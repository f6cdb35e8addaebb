"""HTTP routes for connectors: configure, check, sync, and read their runs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from connectors.errors import ConnectorError
from service.deps import (
    AdminWorkspace,
    ClockDep,
    RequestDbDep,
    SessionDep,
    SettingsDep,
    ViewerWorkspace,
)
from service.okr.service import get_owned, page_of
from service.openapi import problem_response
from service.pagination import Cursor, Id, Limit, Page, decode_cursor, page_size
from service.sync import secrets as secret_store
from service.sync import service
from service.sync.budget import budget_for
from service.sync.engine import runtime_for
from service.sync.models import (
    CheckPublic,
    Connector,
    ConnectorCreate,
    ConnectorPublic,
    ConnectorUpdate,
    SyncRun,
    SyncRunPublic,
)

router = APIRouter(prefix="/connectors", tags=["connectors"])
runs_router = APIRouter(prefix="/runs", tags=["connectors"])


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
    now = clock()
    row = service.update_connector(session, row, data, settings, now)
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
    # A check's request counts against the account's limit like a sync's.
    service.share_budget(row, vendor, budget_for(access.engine))
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


@router.post(
    "/{connector_id}/sync",
    response_model=SyncRunPublic,
    status_code=202,
    responses={
        202: {
            "description": "The run, queued (or the one already queued or running).",
            "headers": {
                "Location": {
                    "description": "Where to poll the run: `/api/v1/runs/{id}`.",
                    "schema": {"type": "string"},
                }
            },
        },
        409: problem_response("The connector is paused (`field`: `paused`)."),
    },
)
def sync_connector(
    response: Response,
    session: SessionDep,
    ws: AdminWorkspace,
    clock: ClockDep,
    connector_id: Id,
) -> SyncRun:
    """Queue a sync (a worker runs it) and answer with the run to poll at `Location`; while
    one is queued or running, answer that one."""
    row = get_owned(session, Connector, ws, connector_id)
    try:
        run = service.enqueue(session, row, clock())
        session.commit()
    except IntegrityError:
        # Another request queued one between our read and our insert: answer that one.
        session.rollback()
        row = get_owned(session, Connector, ws, connector_id)
        run = service.enqueue(session, row, clock())
        session.commit()
    response.headers["Location"] = f"/api/v1/runs/{run.id}"
    return run


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


@runs_router.get("/{run_id}", response_model=SyncRunPublic)
def read_run(session: SessionDep, ws: ViewerWorkspace, run_id: Id) -> SyncRun:
    """Read a sync run (poll a queued one until it is `succeeded` or `failed`)."""
    return get_owned(session, SyncRun, ws, run_id)
