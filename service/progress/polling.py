"""Progress reads served from built bytes: what dashboards poll.

A process keeps, per (workspace, resource), the representation it last built, the
workspace version it was built at (`service.progress.versions`) and until when time
leaves it unchanged (`Horizon`). A read is served from it while both hold, and answers
304 when `If-None-Match` names its tag: no query, no serialisation, no hash.

What a read costs when nothing changed: the token from the in-process cache
(`OKR_TOKEN_CACHE_SECONDS`), the rate limit, the workspace's version from memory
(asked from the database at most every `OKR_PROGRESS_VERSION_CHECK_SECONDS`, and at once
after this process's own writes), a dictionary lookup and a tag comparison. None of it
leaves the event loop; builds and lookups run in the thread pool.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Coroutine, Hashable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request, Response
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from service.admission import Admission
from service.auth.models import Role
from service.auth.service import (
    REFRESH_AHEAD,
    Principal,
    authenticate,
    cached_principal,
    enforce_rate,
    forget,
    refresh_due,
    require,
)
from service.clock import Clock
from service.deps import XWorkspace, bearer
from service.errors import NotFoundError, RateLimitedError, UnauthorizedError
from service.http_cache import Representation, representation, respond
from service.limits import RateLimiter
from service.okr.models import KeyResult, Objective, Team
from service.okr.service import find_period, get_owned
from service.progress.models import ProgressVersion
from service.progress.service import (
    Horizon,
    key_result_progress,
    next_local_day,
    objectives_progress,
    period_progress,
)
from service.progress.versions import on_commit, read_versions
from service.settings import Settings
from service.workspaces.models import Workspace

#: Built representations kept per process, at most (beyond, the cache starts over).
MAX_ENTRIES = 10_000
#: Fields left out of the ETag: a sync that changes no value only moves these.
UNTAGGED = ("last_synced_at",)
#: When a background check finds another process's change, the representations read in
#: this many seconds are built again before the new version is published (the others
#: are built by the next read that needs them).
REBUILD_READ_WITHIN_SECONDS = 120.0
#: At most this many per workspace and change: a bound on the background work.
REBUILD_MAX = 256

Build = Callable[[Session, Workspace, datetime, Horizon], BaseModel]
T = TypeVar("T")


log = logging.getLogger("okr_sync.progress")


@dataclass(slots=True)
class _WorkspaceRef:
    id: int
    slug: str
    version: int
    checked_at: datetime
    #: This process's last write to the workspace when the version was read.
    local_tick: int


@dataclass(slots=True)
class _Built:
    version: int
    until: datetime | None
    found: Representation
    #: How it was built, to build it again ahead of the reads (`_refresh`).
    build: Build
    #: When a read last used it (set by the reads, without a lock: a plain store).
    read_at: datetime


@dataclass(frozen=True, slots=True)
class PollScope:
    """Who polls, and which workspace they name."""

    principal: Principal
    x_workspace: str | None


class ProgressCache:
    """One process's built progress representations for one database."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        clock: Clock,
        admission: Admission,
        rate_limiter: RateLimiter,
    ) -> None:
        self.engine = engine
        self.admission = admission
        #: Reads answered by `from_memory` (for tests and metrics).
        self.memory_hits = 0
        self.rate_limiter = rate_limiter
        self.settings = settings
        self.clock = clock
        self._built: dict[tuple[int, tuple[Any, ...]], _Built] = {}
        self._workspaces: dict[tuple[Any, ...], _WorkspaceRef] = {}
        self._ticks = itertools.count(1)
        self._local: dict[int, int] = {}
        self._pending: dict[Hashable, asyncio.Future[Any]] = {}
        #: Background workspace checks in flight (kept referenced until done).
        self._background: set[asyncio.Future[None]] = set()
        on_commit(engine, self._written)

    async def _once(self, key: Hashable, work: Callable[..., T], *args: Any) -> T:
        """`work(*args)` in the thread pool, holding a database slot
        (`service.admission`), shared by every request that needs the same `key`
        meanwhile: when a version changes or a cached token expires under 200 polling
        connections, one of them looks it up, not 200."""
        pending = self._pending.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self.admission.run(work, *args))
            self._pending[key] = pending
            pending.add_done_callback(lambda _: self._pending.pop(key, None))
        result: T = await asyncio.shield(pending)
        return result

    def _written(self, workspace_ids: set[int]) -> None:
        # Called in the committing thread: single dictionary stores only.
        for workspace_id in workspace_ids:
            self._local[workspace_id] = next(self._ticks)

    # ------------------------------------------------------------------ who and where

    async def principal(self, token: str | None, now: datetime) -> Principal:
        ttl = self.settings.token_cache_seconds
        found = cached_principal(token, now, ttl) if token and ttl > 0 else None
        if found is None:
            found = await self._once(("token", token), self._authenticate, token, now)
        return found

    def _authenticate(self, token: str | None, now: datetime, renew: bool = False) -> Principal:
        with Session(self.engine) as session:
            return authenticate(session, token, now, self.settings.token_cache_seconds, renew=renew)

    async def workspace(self, scope: PollScope, now: datetime) -> _WorkspaceRef:
        """The workspace the request acts in, as `deps.ViewerWorkspace` resolves it."""
        own = scope.principal.workspace_id
        key = _workspace_key(scope.principal, scope.x_workspace)
        ref = self._workspaces.get(key)
        if ref is None or not self._current(ref, now):
            ref = await self._once(("workspace", key), self._look_up, key, now)
            self._workspaces[key] = ref
        if own is not None and scope.x_workspace and scope.x_workspace != ref.slug:
            raise NotFoundError("workspace", repr(scope.x_workspace), field="X-Workspace")
        return ref

    def _current(self, ref: _WorkspaceRef, now: datetime) -> bool:
        age = (now - ref.checked_at).total_seconds()
        return (
            0 <= age < self.settings.progress_version_check_seconds
            and self._local.get(ref.id, 0) == ref.local_tick
        )

    def _refresh_ahead(self, key: tuple[Any, ...], ref: _WorkspaceRef, now: datetime) -> None:
        """Start one background check of a current `ref` most of the way to its check
        delay, so that steady polling finds it renewed and never waits for the lookup
        (every polling connection waiting for it once a second was the p99 of a polled
        read under load); a read past the delay still waits for a check, as before."""
        age = (now - ref.checked_at).total_seconds()
        if age >= REFRESH_AHEAD * self.settings.progress_version_check_seconds:
            self._in_background(("workspace", key), self._refresh(key, now))

    def _in_background(self, key: Hashable, work: Coroutine[Any, Any, None]) -> None:
        if key in self._pending:
            work.close()
            return
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _renew_token(self, token: str, now: datetime) -> None:
        try:
            await self._once(("token", token), self._authenticate, token, now, True)
        except UnauthorizedError:
            forget(token)  # revoked or expired meanwhile: refused from the next read on
        except Exception:  # noqa: BLE001 (a read past the cache delay looks it up again)
            log.debug("background token renewal failed", exc_info=True)

    async def _refresh(self, key: tuple[Any, ...], now: datetime) -> None:
        """Check the workspace's version in the background; when another process changed
        it, build the representations in use again *before* publishing the new version,
        so the reads keep answering from memory (the previous bytes, within the check
        delay) instead of all waiting for the builds (which were the p99 of a polled
        period tree while a worker synced)."""
        try:
            before = self._workspaces.get(key)
            # Read now: a build meanwhile may move the reference's version on (`serve`).
            version = before.version if before is not None else 0
            ref = await self._once(("workspace", key), self._look_up, key, now)
            if before is not None and before.id == ref.id and ref.version > version:
                await self._rebuild(ref, version, now)
            self._workspaces[key] = ref
        except Exception:  # noqa: BLE001 (the next read past the delay looks up and answers it)
            log.debug("background workspace check failed", exc_info=True)

    async def _rebuild(self, ref: _WorkspaceRef, version: int, now: datetime) -> None:
        """Build again the representations of `ref`'s workspace read recently and built at
        `version` or before (one a previous rebuild missed). Each is stored as it is built:
        a read takes bytes at least as new as its reference, so storing early is safe."""
        recent = now.timestamp() - REBUILD_READ_WITHIN_SECONDS
        due = [
            (resource, built.build)
            for (workspace_id, resource), built in list(self._built.items())
            if workspace_id == ref.id
            and built.version <= version
            and built.read_at.timestamp() >= recent
        ][:REBUILD_MAX]
        results = await asyncio.gather(
            *(
                self._once(
                    ("build", ref.id, ref.version, resource),
                    self._build,
                    ref.id,
                    resource,
                    build,
                    now,
                )
                for resource, build in due
            ),
            return_exceptions=True,  # gone meanwhile: the next read answers the error
        )
        for result in results:
            if isinstance(result, _Built):
                ref.version = max(ref.version, result.version)

    def _look_up(self, key: tuple[Any, ...], now: datetime) -> _WorkspaceRef:
        tick = self._local
        query = select(Workspace.id, Workspace.slug, ProgressVersion.version).outerjoin(
            ProgressVersion, col(ProgressVersion.workspace_id) == Workspace.id
        )
        if key[0] == "id":
            query = query.where(Workspace.id == key[1])
        elif key[0] == "slug":
            query = query.where(Workspace.slug == key[1])
        with Session(self.engine) as session:
            # Read before the version, so a write committed meanwhile is seen next time.
            row = session.exec(query.order_by(col(Workspace.id)).limit(1)).first()
        if row is None:
            what = repr(key[1]) if key[0] == "slug" else "(default)"
            if key[0] == "id":
                what = "(of this token)"
            raise NotFoundError("workspace", what, field="X-Workspace")
        workspace_id, slug, version = row
        assert workspace_id is not None
        return _WorkspaceRef(workspace_id, slug, version or 0, now, tick.get(workspace_id, 0))

    # ------------------------------------------------------------------ representations

    def from_memory(
        self,
        token: str | None,
        x_workspace: str | None,
        resource: tuple[Any, ...],
        now: datetime,
    ) -> tuple[Representation, str] | None:
        """What `serve` would answer (and the workspace's slug), when it needs nothing but
        memory: a cached token
        allowed to read, a workspace version checked recently enough, a current
        representation, the token within its rate. None when anything is missing,
        invalid or refused: the request then takes the ordinary route, which looks up,
        builds or answers the error."""
        ttl = self.settings.token_cache_seconds
        if not token or ttl <= 0:
            return None
        principal = cached_principal(token, now, ttl)
        if principal is None or principal.role.rank < Role.viewer.rank:
            return None
        key = _workspace_key(principal, x_workspace)
        ref = self._workspaces.get(key)
        if ref is None or not self._current(ref, now):
            return None
        if principal.workspace_id is not None and x_workspace and x_workspace != ref.slug:
            return None
        built = self._built.get((ref.id, resource))
        if (
            built is None
            or built.version < ref.version
            or (built.until is not None and now >= built.until)
        ):
            return None
        limiter = self.rate_limiter
        try:
            enforce_rate(limiter, self.settings.rate_limit_requests_per_minute, principal, now)
        except RateLimitedError:
            return None
        self._refresh_ahead(key, ref, now)
        if refresh_due(token, now, ttl):
            self._in_background(("token", token), self._renew_token(token, now))
        self.memory_hits += 1
        built.read_at = now
        return built.found, ref.slug

    async def serve(
        self, request: Request, scope: PollScope, resource: tuple[Any, ...], build: Build
    ) -> Response:
        """The resource's stored representation if still current, else a new one."""
        now = self.clock()
        ref = await self.workspace(scope, now)
        request.state.workspace = ref.slug
        built = self._built.get((ref.id, resource))
        if (
            built is None
            or built.version < ref.version
            or (built.until is not None and now >= built.until)
        ):
            built = await self._once(
                ("build", ref.id, ref.version, resource), self._build, ref.id, resource, build, now
            )
            # A build may have seen a newer version than the reference: adopt it, or every
            # read until the next check would build again.
        # Bytes at least as new as the reference's version are current (versions only
        # grow; a background rebuild stores them before it publishes the version).
        ref.version = max(ref.version, built.version)
        built.read_at = now
        return respond(request, built.found)

    def _build(
        self, workspace_id: int, resource: tuple[Any, ...], build: Build, now: datetime
    ) -> _Built:
        with Session(self.engine) as session:
            # The version first: data read after it is at least as new, so the bytes are
            # never older than the version they are stored under.
            version = read_versions(session, [workspace_id])[workspace_id]
            ws = session.get(Workspace, workspace_id)
            if ws is None:
                raise NotFoundError("workspace", str(workspace_id), field="X-Workspace")
            horizon = Horizon()
            payload = build(session, ws, now, horizon)
        built = _Built(version, horizon.until, representation(payload, UNTAGGED), build, now)
        if len(self._built) >= MAX_ENTRIES:
            self._built.clear()
        self._built[(workspace_id, resource)] = built
        return built


def _workspace_key(principal: Principal, x_workspace: str | None) -> tuple[Any, ...]:
    if principal.workspace_id is not None:
        return ("id", principal.workspace_id)
    return ("slug", x_workspace) if x_workspace else ("first",)


def progress_cache(request: Request) -> ProgressCache:
    """The app's cache."""
    return cache_of(request.app.state)


def cache_of(state: Any) -> ProgressCache:
    """The cache of an app's `state` (made on first use: every read runs on the event
    loop, so no two can make one)."""
    cache: ProgressCache | None = getattr(state, "progress_cache", None)
    if cache is None:
        cache = ProgressCache(
            state.engine, state.settings, state.clock, state.admission, state.rate_limiter
        )
        state.progress_cache = cache
    return cache


async def poll_scope(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    x_workspace: XWorkspace = None,
) -> PollScope:
    """`deps.ViewerWorkspace` for polled reads, without leaving the event loop when the
    token is cached: 401 without a valid token, 429 beyond its rate, 403 below viewer."""
    cache = progress_cache(request)
    now = cache.clock()
    principal = await cache.principal(credentials.credentials if credentials else None, now)
    enforce_rate(cache.rate_limiter, cache.settings.rate_limit_requests_per_minute, principal, now)
    require(principal, Role.viewer)
    return PollScope(principal, x_workspace)


PollScopeDep = Annotated[PollScope, Depends(poll_scope)]


# ---------------------------------------------------------------------------- builds


def key_result(key_result_id: int) -> Build:
    def build(session: Session, ws: Workspace, now: datetime, horizon: Horizon) -> BaseModel:
        kr = get_owned(session, KeyResult, ws, key_result_id)
        [progress] = key_result_progress(session, ws, [kr], now, horizon)
        return progress

    return build


def objective(objective_id: int) -> Build:
    def build(session: Session, ws: Workspace, now: datetime, horizon: Horizon) -> BaseModel:
        found = get_owned(session, Objective, ws, objective_id)
        [progress] = objectives_progress(session, ws, [found], now, horizon)
        return progress

    return build


def period_tree(period: str, team: int | None) -> Build:
    def build(session: Session, ws: Workspace, now: datetime, horizon: Horizon) -> BaseModel:
        found = find_period(session, ws, period, now)
        if team is not None:
            get_owned(session, Team, ws, team, field="team")
        # `current` (and a name that resolves to it) may name another period tomorrow.
        horizon.note(next_local_day(ws, now))
        return period_progress(session, ws, found, now, team, horizon)

    return build
