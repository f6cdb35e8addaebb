"""FastAPI dependencies, as `Annotated` aliases routes declare by type."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy import Engine
from sqlmodel import Session, select

from service.clock import Clock
from service.errors import NotFoundError
from service.settings import Settings, get_settings
from service.workspaces.models import Workspace

SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_engine(request: Request) -> Engine:
    """The engine the app was started with."""
    engine: Engine = request.app.state.engine
    return engine


EngineDep = Annotated[Engine, Depends(get_engine)]


def get_session(engine: EngineDep) -> Iterator[Session]:
    """A session per request. Routes commit (the boundary owns the transaction)."""
    with Session(engine, expire_on_commit=False) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def get_clock(request: Request) -> Clock:
    """The clock the app was built with (`create_app(clock=...)`)."""
    clock: Clock = request.app.state.clock
    return clock


ClockDep = Annotated[Clock, Depends(get_clock)]


def get_current_workspace(
    session: SessionDep,
    x_workspace: Annotated[
        str | None,
        Header(description="Workspace slug; defaults to the first workspace created."),
    ] = None,
) -> Workspace:
    """The workspace every query of this request is scoped to.

    Today the `X-Workspace` header picks it (default: the oldest workspace). Bearer tokens
    scoped to a workspace will resolve it here instead, without touching any route.
    """
    query = select(Workspace)
    if x_workspace:
        query = query.where(Workspace.slug == x_workspace)
    workspace = session.exec(query.order_by(Workspace.id)).first()  # type: ignore[arg-type]
    if workspace is None:
        if x_workspace:
            raise NotFoundError("workspace", repr(x_workspace), field="X-Workspace")
        raise NotFoundError("workspace", "(default)", field="X-Workspace")
    return workspace


CurrentWorkspace = Annotated[Workspace, Depends(get_current_workspace)]
