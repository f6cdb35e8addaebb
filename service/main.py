"""The FastAPI application."""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version

import anyio
import anyio.to_thread
from anyio import CapacityLimiter
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import Engine, text
from sqlalchemy.pool import NullPool
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import Receive, Scope, Send

from service import db, observability
from service.admission import Admission, db_request_slots
from service.auth.models import Role, TokenCreate
from service.auth.routes import router as auth_router
from service.auth.service import create_token
from service.clock import Clock, in_utc, utc_now
from service.dashboard.routes import install_dashboard
from service.errors import ForbiddenError, install_error_handlers, problem
from service.limits import BodySizeLimit, RateLimiter
from service.mappings.routes import router as mappings_router
from service.observability import RequestMetrics
from service.okr.routes import router as okr_router
from service.openapi import install_openapi, problem_response
from service.progress.fastpath import PolledReads
from service.progress.polling import PollScopeDep
from service.progress.routes import router as progress_router
from service.settings import Settings, get_settings
from service.sync import secrets as secret_store
from service.sync.engine import SyncEngine
from service.sync.routes import router as connectors_router
from service.sync.routes import runs_router
from service.sync.scheduler import Scheduler
from service.workspaces.routes import router as workspaces_router

log = logging.getLogger(__name__)

#: `/readyz` answers 503 when the database takes longer than this to answer `SELECT 1`.
READY_TIMEOUT_SECONDS = 2.0

try:
    VERSION = version("okr-sync")
except PackageNotFoundError:  # running from a source tree without installing
    VERSION = "0.0.0"


def upgrade(settings: Settings, engine: Engine) -> None:
    """Bring the schema, and the stored secrets, to the current form."""
    db.upgrade(engine)
    sealed = secret_store.reseal_stored(engine, settings, rotate=False).sealed
    if sealed:
        log.warning("encrypted the plain stored secrets of %d connector(s)", sealed)


def startup(settings: Settings, engine: Engine, clock: Clock = utc_now) -> None:
    """Check the secret keys, migrate, encrypt legacy secrets and load the demo.

    Without a usable key the process stops here (`SecretKeyError`) rather than serve a
    database it cannot encrypt secrets of. Secrets stored before encryption existed are
    encrypted with the migration (`okr-sync db upgrade` and `secrets rotate` do it too).
    A freshly loaded demo is synced once before the API answers, so the first request
    already shows live numbers; later syncs are the scheduler's.
    """
    secret_store.keyring(settings)
    if settings.migrate_on_start:
        upgrade(settings, engine)
    if settings.load_demo:
        from service.demo import demo_connector_id, load_tartempion

        with db.session_scope(engine) as session:
            created = load_tartempion(session, clock())
            if created is not None:
                _, token = create_token(
                    session,
                    created.id,
                    TokenCreate(name="demo admin", role=Role.admin),
                    clock(),
                    "okr-sync serve",
                )
        if created is not None:
            # Shown this once (only its hash is stored), so the demo answers right away.
            sys.stderr.write(
                f"\nDemo workspace 'tartempion' loaded. Its admin token (shown once):\n\n"
                f"    {token}\n\n"
                f"  curl -H 'Authorization: Bearer {token}' localhost:8000/api/v1/progress\n"
                f"A new one: okr-sync tokens create --workspace tartempion --role admin "
                f"--name me\n\n"
            )
            sys.stderr.flush()
            with db.session_scope(engine) as session:
                connector_id = demo_connector_id(session)
            if connector_id is not None:
                SyncEngine(engine, settings, clock=clock).run(connector_id)


class OkrSyncApp(FastAPI):
    """FastAPI, with polled progress reads answered from memory before its middleware
    stack when they can be (`service.progress.fastpath`)."""

    polled_reads: PolledReads | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        polled = self.polled_reads
        if (
            polled is not None
            and not self.root_path
            and await polled.answered(self.state, scope, send)
        ):
            return
        await super().__call__(scope, receive, send)


def create_app(
    settings: Settings | None = None,
    engine: Engine | None = None,
    *,
    run_startup: bool = True,
    clock: Clock = utc_now,
) -> FastAPI:
    """Build the app. Tests pass their own settings, engine and clock.

    `clock` is the one source of "now" for requests, the startup demo load and every sync
    this process runs.
    """
    settings = settings or get_settings()
    engine = engine or db.make_engine(settings.database_url, **db.pool_options(settings))
    clock = in_utc(clock)
    sync_engine = SyncEngine(engine, settings, clock=clock)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if run_startup:
            startup(settings, engine, clock)
        scheduler = None
        if settings.role in ("all", "worker"):
            scheduler = Scheduler(
                sync_engine, settings.scheduler_tick_seconds, settings.worker_concurrency
            )
            scheduler.start()
        try:
            yield
        finally:
            if scheduler is not None:
                # In a thread: the event loop keeps serving what is still open meanwhile.
                await anyio.to_thread.run_sync(scheduler.stop, settings.shutdown_grace_seconds)

    app = OkrSyncApp(
        title="okr-sync",
        # Served by `install_dashboard` from packaged assets instead of a CDN.
        docs_url=None,
        redoc_url=None,
        version=VERSION,
        summary="OKRs kept live from CRM and NPS survey data.",
        lifespan=lifespan,
        telemetry=None
        if settings.opentelemetry
        else {"tracing": False, "metrics": False, "logs": False},
    )
    app.state.engine = engine
    app.state.settings = settings
    app.state.sync_engine = sync_engine
    app.state.clock = clock
    # Per-token request counts of this process, for the rate limit: a sliding-window
    # counter, constant time per request, on the app's clock.
    app.state.rate_limiter = RateLimiter()
    app.state.admission = Admission(db_request_slots(settings))
    install_error_handlers(app)
    install_openapi(app)
    # Before the stack: polled progress reads answered from memory, when they can be.
    app.polled_reads = PolledReads(settings.allowed_hosts)
    # Outermost last: the Host is checked first, then the body is bounded while it streams.
    app.add_middleware(BodySizeLimit, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=settings.allowed_hosts)
    # Outermost: every request is timed and logged, refused ones included.
    app.add_middleware(RequestMetrics)
    app.state.metrics = observability.registry_for(engine, clock)

    api = APIRouter(prefix=observability.API_PREFIX)
    # Routes are matched in order: the polled progress reads first (no other path
    # overlaps theirs), so a dashboard's request is not compared with every other route.
    api.include_router(progress_router)
    api.include_router(workspaces_router)
    api.include_router(okr_router)
    api.include_router(connectors_router)
    api.include_router(runs_router)
    api.include_router(mappings_router)
    api.include_router(auth_router)
    app.include_router(api)
    install_dashboard(app)

    # Readiness asks the database on a connection of its own, in a thread of its own:
    # neither a busy pool nor a full thread pool can make the probe wait.
    probe_engine = db.make_engine(
        engine.url.render_as_string(hide_password=False), poolclass=NullPool
    )
    probe_threads = CapacityLimiter(2)

    def database_answers() -> None:
        with probe_engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    @app.get(
        "/metrics",
        tags=["operations"],
        response_class=PlainTextResponse,
        responses={
            200: {
                "content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}},
                "description": "Prometheus text exposition format.",
            },
            403: problem_response("A workspace token: metrics span every workspace."),
        },
    )
    async def metrics(request: Request, scope: PollScopeDep) -> Response:
        """Prometheus metrics (syncs, vendor requests, HTTP latency, key results); needs a
        deployment token."""
        if scope.principal.workspace_id is not None:
            raise ForbiddenError("metrics span every workspace: use a deployment token")
        admission: Admission = request.app.state.admission
        body = await admission.run(generate_latest, request.app.state.metrics)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["operations"],
        response_model=dict[str, str],
        responses={503: problem_response("The database does not answer.")},
    )
    async def readyz() -> JSONResponse:
        """Readiness: the database answers."""
        try:
            with anyio.fail_after(READY_TIMEOUT_SECONDS):
                await anyio.to_thread.run_sync(
                    database_answers, limiter=probe_threads, abandon_on_cancel=True
                )
        except TimeoutError:
            return problem(503, f"database did not answer within {READY_TIMEOUT_SECONDS} s")
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
            return problem(503, f"database unavailable: {type(exc).__name__}")
        return JSONResponse({"status": "ready"})

    return app
