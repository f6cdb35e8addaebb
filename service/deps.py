"""FastAPI dependencies, as `Annotated` aliases routes declare by type."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlmodel import Session, select

from service.admission import Admission, RequestDb
from service.auth.models import Role
from service.auth.service import Principal, act_as, authenticate, enforce_rate, require
from service.clock import Clock
from service.errors import ForbiddenError, NotFoundError
from service.settings import Settings
from service.workspaces.models import Workspace


async def get_app_settings(request: Request) -> Settings:
    """The settings the app was built with. Read from the app rather than set as a
    dependency override: while any override is set, FastAPI analyses every dependency's
    signature again on every request (measured: most of a cached progress read's time).
    `async`: nothing to wait for, so no trip through the thread pool."""
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_app_settings)]


async def get_request_db(request: Request) -> AsyncIterator[RequestDb]:
    """The request's database access: a slot first (waiting, if it must, in the event
    loop, holding nothing), then a session. Both are given back when the endpoint has
    returned and its answer is serialised (`scope="function"`), before it is sent."""
    admission: Admission = request.app.state.admission
    await admission.acquire()
    access = RequestDb(request.app.state.engine, admission)
    try:
        yield access
    finally:
        await access.aclose()


RequestDbDep = Annotated[RequestDb, Depends(get_request_db, scope="function")]


async def get_session(access: RequestDbDep) -> Session:
    """A session per request. Routes commit (the boundary owns the transaction)."""
    return access.session


SessionDep = Annotated[Session, Depends(get_session)]


def get_clock(request: Request) -> Clock:
    """The clock the app was built with (`create_app(clock=...)`)."""
    clock: Clock = request.app.state.clock
    return clock


ClockDep = Annotated[Clock, Depends(get_clock)]


bearer = HTTPBearer(
    auto_error=False,
    scheme_name="token",
    description="An API token, from `okr-sync tokens create` or `POST /api/v1/tokens`.",
)


#: The `X-Workspace` header: which workspace a deployment token acts in.
XWorkspace = Annotated[
    str | None,
    Header(
        description="Workspace slug, for deployment tokens (default: the first "
        "workspace created); a workspace token always acts in its own."
    ),
]


def get_principal(
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    """Who is asking: the bearer token's principal (401 without a valid one, 429 beyond
    the token's rate), to whom this request's changes are attributed in the audit log."""
    now = clock()
    principal = authenticate(session, credentials.credentials if credentials else None, now)
    enforce_rate(
        request.app.state.rate_limiter, settings.rate_limit_requests_per_minute, principal, now
    )
    act_as(session, principal, now)
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def get_deployment_admin(principal: PrincipalDep) -> Principal:
    """A deployment admin token (not bound to a workspace), else 403."""
    if principal.workspace_id is not None or principal.role is not Role.admin:
        raise ForbiddenError("this needs a deployment admin token (okr-sync tokens create)")
    return principal


DeploymentAdmin = Annotated[Principal, Depends(get_deployment_admin)]


def _workspace_for(role: Role) -> Callable[..., Workspace]:
    def current_workspace(
        request: Request,
        session: SessionDep,
        principal: PrincipalDep,
        x_workspace: XWorkspace = None,
    ) -> Workspace:
        """The workspace every query of this request is scoped to, once the token's role
        is checked: a workspace token's own (another slug is not found), or for a
        deployment token the `X-Workspace` one."""
        require(principal, role)
        if principal.workspace_id is not None:
            own = session.get(Workspace, principal.workspace_id)
            if own is None or (x_workspace and x_workspace != own.slug):
                raise NotFoundError("workspace", repr(x_workspace), field="X-Workspace")
            request.state.workspace = own.slug  # for the request log
            return own
        query = select(Workspace)
        if x_workspace:
            query = query.where(Workspace.slug == x_workspace)
        workspace = session.exec(query.order_by(Workspace.id)).first()  # type: ignore[arg-type]
        if workspace is None:
            if x_workspace:
                raise NotFoundError("workspace", repr(x_workspace), field="X-Workspace")
            raise NotFoundError("workspace", "(default)", field="X-Workspace")
        request.state.workspace = workspace.slug
        return workspace

    return current_workspace


#: The request's workspace, for a token with at least the viewer role (reads).
ViewerWorkspace = Annotated[Workspace, Depends(_workspace_for(Role.viewer))]
#: ... at least editor (OKRs, check-ins, mappings).
EditorWorkspace = Annotated[Workspace, Depends(_workspace_for(Role.editor))]
#: ... admin (connectors, tokens, workspace settings, audit log).
AdminWorkspace = Annotated[Workspace, Depends(_workspace_for(Role.admin))]
