"""The `okr-sync` command line."""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable
from datetime import timedelta
from enum import IntEnum
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, ParamSpec, TypeVar

import typer

from service import db
from service.auth.models import Role
from service.observability import configure_logging
from service.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from service.sync.models import SyncRun

app = typer.Typer(
    help="okr-sync: OKRs kept live from CRM and NPS survey data.", no_args_is_help=True
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")
tokens_app = typer.Typer(help="API tokens.", no_args_is_help=True)
app.add_typer(tokens_app, name="tokens")
secrets_app = typer.Typer(help="Encryption of connector secrets at rest.", no_args_is_help=True)
app.add_typer(secrets_app, name="secrets")

P = ParamSpec("P")
R = TypeVar("R")


class ExitCode(IntEnum):
    """What a command's exit status means (README, "Commands")."""

    OK = 0
    #: The sync ran and failed (the run says why), or the server could not start.
    FAILED = 1
    #: Bad arguments, or settings/keys that cannot work.
    USAGE = 2
    #: No such connector, workspace or token.
    NOT_FOUND = 3
    #: The database does not answer, or its schema is not the one this version needs.
    DATABASE = 4
    #: The vendor refused the connector's credentials or configuration.
    VENDOR = 5
    #: Another worker is syncing this connector right now: try again later.
    BUSY = 6
    #: Interrupted (Ctrl-C).
    INTERRUPTED = 130


#: Failed runs whose cause is the connector's credentials or configuration, not the sync.
VENDOR_ERROR_CLASSES = frozenset({"auth", "session_expired", "config"})


def fail(message: str, code: ExitCode) -> NoReturn:
    """Stop with one line on stderr and `code`."""
    typer.echo(f"okr-sync: {message}", err=True)
    raise typer.Exit(int(code))


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _classify(exc: Exception) -> tuple[str, ExitCode] | None:
    """The one line and exit code of an error a person can act on (None: a bug, which
    keeps its traceback). Imports here: `--version` need not load the sync engine."""
    from sqlalchemy.exc import DBAPIError

    from service.errors import DomainError, NotFoundError
    from service.sync import secrets as secret_store
    from service.sync.engine import SyncAlreadyRunning

    if isinstance(exc, secret_store.SecretKeyError):
        return _one_line(exc), ExitCode.USAGE
    if isinstance(exc, NotFoundError):
        return _one_line(exc.detail), ExitCode.NOT_FOUND
    if isinstance(exc, SyncAlreadyRunning):
        return _one_line(exc.detail), ExitCode.BUSY
    if isinstance(exc, DomainError):
        # What the API would answer with a 4xx: the command's input cannot be acted on.
        return _one_line(exc.detail), ExitCode.USAGE
    if isinstance(exc, DBAPIError):
        # Unreachable server, refused login, missing table of an unmigrated schema.
        reason = _one_line(exc.orig) if exc.orig is not None else type(exc).__name__
        return f"database error: {reason}", ExitCode.DATABASE
    return None


def one_line_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn the errors a person can act on into one line and an exit code, not a traceback."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except KeyboardInterrupt:
            fail("interrupted", ExitCode.INTERRUPTED)
        except Exception as exc:
            known = _classify(exc)
            if known is None:
                raise
            fail(*known)

    return wrapper


def _version_callback(value: bool) -> None:
    if value:
        from service.main import VERSION

        typer.echo(f"okr-sync {VERSION}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version_callback, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """okr-sync: OKRs kept live from CRM and NPS survey data."""


def _settings() -> Settings:
    """The settings, or exit 2 with one line naming every invalid `OKR_*` variable."""
    from pydantic import ValidationError

    try:
        return Settings()
    except ValidationError as exc:
        errors = "; ".join(
            f"OKR_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in exc.errors()
        )
        fail(f"invalid settings: {_one_line(errors)}", ExitCode.USAGE)


def _schema_revisions(engine: Engine) -> tuple[set[str], set[str]]:
    """(the revisions the database is at, the revisions this version's code needs)."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(db.alembic_config(engine))
    with engine.connect() as conn:
        current = set(MigrationContext.configure(conn).get_current_heads())
    return current, set(script.get_heads())


def ready_database(settings: Settings, *, migrate: bool = True) -> Engine:
    """An engine on a database at this version's schema.

    Migrates the schema first when `OKR_MIGRATE_ON_START` is on (the default), as `serve`
    and `worker` do (with `migrate=False`, only checks that the database answers: the
    caller migrates later); otherwise stops with exit 4 and the command that migrates.
    Secrets stored in plain are left to `serve`, `db upgrade` and `secrets rotate`, which
    report what they encrypted.
    """
    engine = db.make_engine(settings.database_url)
    where = db.safe_url(settings.database_url)
    if settings.migrate_on_start:
        if migrate:
            db.upgrade(engine)
        else:
            with engine.connect():
                pass
        return engine
    current, needed = _schema_revisions(engine)
    if current != needed:
        at = ", ".join(sorted(current)) or "no schema"
        fail(
            f"database {where} is not migrated ({at}; this version needs "
            f"{', '.join(sorted(needed))}): run `okr-sync db upgrade` "
            "(migrating on start is off: OKR_MIGRATE_ON_START=false)",
            ExitCode.DATABASE,
        )
    return engine


def _dump_threads_on_sigusr1() -> None:
    """`kill -USR1 <pid>` writes every thread's stack to stderr (the log), to see where a
    process that does not stop or answer is waiting, without stopping it."""
    import faulthandler
    import signal

    faulthandler.register(signal.SIGUSR1, all_threads=True)


def _check_keys(settings: Settings) -> None:
    """Stop with the reason (exit 2) when no key can encrypt connector secrets."""
    from service.sync import secrets as secret_store

    try:
        secret_store.keyring(settings)
    except secret_store.SecretKeyError as exc:
        fail(_one_line(exc), ExitCode.USAGE)


@app.command()
@one_line_errors
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
) -> None:
    """Start the API (docs at /docs) and, unless OKR_ROLE=api, the sync scheduler."""
    import gc
    import signal

    import uvicorn

    from service.main import create_app
    from service.progress.stream import end_streams
    from service.sync.scheduler import load_sync_code

    settings = _settings()
    _check_keys(settings)
    # A database that does not answer, or an unmigrated one that this process may not
    # migrate, stops here in one line rather than in a startup traceback.
    ready_database(settings, migrate=False).dispose()
    if host not in ("0.0.0.0", "::", "") and "*" not in settings.allowed_hosts:
        # The address the server binds to reaches it, so requests may name it as their Host.
        bound = f"[{host}]" if ":" in host else host
        settings = settings.model_copy(update={"allowed_hosts": [*settings.allowed_hosts, bound]})
    database = db.safe_url(settings.database_url)
    typer.echo(f"okr-sync on http://{host}:{port}  (docs: /docs, database: {database})")
    configure_logging(settings)
    _dump_threads_on_sigusr1()
    api = create_app(settings)

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            super().handle_exit(sig, frame)
            if sig == signal.SIGTERM:
                # SIGTERM is how a container runtime or process manager asks us to stop:
                # once shut down gracefully, exit 0. uvicorn would raise it again after
                # the shutdown, ending the process "killed by SIGTERM" (143) unless it is
                # a namespace's PID 1, where the kernel ignores it.
                self._captured_signals = [s for s in self._captured_signals if s != sig]
            # Event streams never end by themselves: end them, or the shutdown waits for
            # them until the grace period runs out.
            end_streams(api)

    config = uvicorn.Config(
        api,
        host=host,
        port=port,
        # Our handler and our request log (method, route, status, latency, workspace) in
        # place of uvicorn's own logging config and access log.
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=settings.shutdown_grace_seconds,
    )
    server = Server(config)
    # Everything imported and built so far lives as long as the process: out of the
    # collector's sight, a full collection no longer walks it (it paused every request in
    # flight for tens of milliseconds under load: the tail of a polled read's latency).
    if settings.role != "api":
        load_sync_code()  # the scheduler's, before the freeze below
    gc.collect()
    gc.freeze()
    try:
        server.run()
    except KeyboardInterrupt:  # a second Ctrl-C
        pass
    if not server.started:
        fail("the server did not start (see the log above)", ExitCode.FAILED)


@app.command()
@one_line_errors
def worker() -> None:
    """Run syncs only (no API): queued, scheduled and interrupted ones, OKR_WORKER_CONCURRENCY
    at a time. SIGTERM/SIGINT: stop claiming, let each sync commit its page (at most
    OKR_SHUTDOWN_GRACE_SECONDS), release the connectors, exit 0."""
    import gc
    import signal
    import threading

    from service.main import upgrade
    from service.sync.engine import SyncEngine
    from service.sync.scheduler import Scheduler, load_sync_code

    settings = _settings()
    configure_logging(settings)
    _dump_threads_on_sigusr1()
    _check_keys(settings)
    # A database that does not answer, or an unmigrated one this process may not migrate,
    # stops here in one line; `upgrade` also encrypts secrets stored in plain, as serve does.
    engine = ready_database(settings, migrate=False)
    if settings.migrate_on_start:
        upgrade(settings, engine)
    scheduler = Scheduler(
        SyncEngine(engine, settings), settings.scheduler_tick_seconds, settings.worker_concurrency
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    # As in `serve`: what is loaded by now (the sync code included) lives as long as the
    # process, out of the collector's sight.
    load_sync_code()
    gc.collect()
    gc.freeze()
    scheduler.start()
    typer.echo(f"okr-sync worker running (database: {db.safe_url(settings.database_url)})")
    # Waking every second runs the handlers above even if the kernel hands the signal to
    # another thread: an untimed wait would then never see it.
    while not stop.wait(1.0):
        pass
    typer.echo("okr-sync worker stopping: letting running syncs commit their page", err=True)
    scheduler.stop(settings.shutdown_grace_seconds)
    engine.dispose()
    typer.echo("okr-sync worker stopped", err=True)


class PlainProgress:
    """Progress for a pipe or a log: plain lines on stderr, at most one a second per kind
    (and every kind's first page), then one line per kind when the run ends."""

    def __init__(self, connector_id: int, kinds: list[str]) -> None:
        self.prefix = f"sync connector {connector_id}"
        # A kind's clock starts when the previous one's last page was committed.
        self.mark = time.monotonic()
        self.started: dict[str, float] = {}
        self.shown: dict[str, float] = {}
        typer.echo(f"{self.prefix}: {', '.join(kinds)}", err=True)

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *_exc: object) -> None:
        return None

    def page(self, kind: str, pages: int, records: int) -> None:
        now = time.monotonic()
        start = self.started.setdefault(kind, self.mark)
        self.mark = now
        if kind in self.shown and now - self.shown[kind] < 1.0:
            return
        self.shown[kind] = now
        rate = records / (now - start) if now > start else 0.0
        typer.echo(
            f"{self.prefix}: {kind} page {pages}, {records} records, {rate:.0f} records/s",
            err=True,
        )

    def finish(self, kinds: dict[str, dict[str, Any]]) -> None:
        for kind, r in kinds.items():
            typer.echo(
                f"{self.prefix}: {kind} done: {r.get('pages', 0)} pages, "
                f"{r.get('fetched', 0)} records ({r.get('inserted', 0)} inserted, "
                f"{r.get('updated', 0)} updated, {r.get('deleted', 0)} deleted)",
                err=True,
            )


class LiveProgress:
    """Progress on a terminal: a live Rich display on stderr, one line per record kind."""

    def __init__(self, connector_id: int, kinds: list[str]) -> None:
        from rich.console import Console
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            SpinnerColumn(finished_text="[green]✓"),
            TextColumn("[bold]{task.description:<15}"),
            TextColumn("{task.fields[pages]:>5} pages"),
            TextColumn("{task.completed:>9,.0f} records"),
            TextColumn("{task.fields[rate]:>7} records/s"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
        )
        self.progress.console.print(f"sync connector {connector_id}")
        self.tasks = {
            kind: self.progress.add_task(kind, start=False, total=None, pages=0, rate="-")
            for kind in kinds
        }
        self.current: str | None = None
        self.started: dict[str, float] = {}
        self.records: dict[str, int] = {}
        self.mark = time.monotonic()

    def _start(self, kind: str) -> None:
        # Kinds sync one after another: a kind's clock starts when the previous one's last
        # page was committed.
        if kind not in self.started:
            self.started[kind] = self.mark
            self.progress.start_task(self.tasks[kind])
        self.current = kind

    def __enter__(self) -> LiveProgress:
        self.progress.start()
        if self.tasks:
            self._start(next(iter(self.tasks)))
        return self

    def __exit__(self, *_exc: object) -> None:
        self.progress.stop()

    def page(self, kind: str, pages: int, records: int) -> None:
        if kind not in self.tasks:
            self.tasks[kind] = self.progress.add_task(kind, total=None, pages=0, rate="-")
        if kind != self.current:
            if self.current is not None:
                # The previous kind is done: its spinner becomes a check mark.
                done = self.records.get(self.current, 0)
                self.progress.update(self.tasks[self.current], total=done, completed=done)
            self._start(kind)
        now = time.monotonic()
        elapsed = now - self.started[kind]
        self.mark = now
        rate = f"{records / elapsed:,.0f}" if elapsed > 0 else "-"
        self.records[kind] = records
        self.progress.update(self.tasks[kind], completed=records, pages=pages, rate=rate)

    def finish(self, kinds: dict[str, dict[str, Any]]) -> None:
        for kind, task_id in self.tasks.items():
            r = kinds.get(kind, {})
            self.progress.update(
                task_id,
                completed=r.get("fetched", 0),
                pages=r.get("pages", 0),
                total=r.get("fetched", 0),
            )


@app.command()
@one_line_errors
def sync(connector_id: Annotated[int, typer.Argument(help="Connector id.")]) -> None:
    """Sync one connector now: progress on stderr, the run as JSON on stdout.

    Exit status: 0 succeeded, 1 the sync failed, 3 no such connector, 4 database not
    reachable or not migrated, 5 the vendor refused the credentials or configuration,
    6 already syncing elsewhere, 130 interrupted.
    """
    import sys

    from service.errors import NotFoundError
    from service.sync.engine import SyncEngine
    from service.sync.models import Connector
    from service.sync.service import enabled_kinds

    settings = _settings()
    _quiet_logging(settings)
    _check_keys(settings)
    engine = ready_database(settings)
    with db.session_scope(engine) as session:
        row = session.get(Connector, connector_id)
        if row is None:
            raise NotFoundError("connector", connector_id)
        kinds = [k.value for k in enabled_kinds(row)]
    live = sys.stderr.isatty()
    display: PlainProgress | LiveProgress = (
        LiveProgress(connector_id, kinds) if live else PlainProgress(connector_id, kinds)
    )
    with display:
        run = SyncEngine(engine, settings, on_page=display.page).run(connector_id)
        display.finish((run.details or {}).get("kinds", {}))
    typer.echo(json.dumps(run.model_dump(mode="json"), indent=2))
    _exit_for(run)


def _exit_for(run: SyncRun) -> None:
    if run.status == "succeeded":
        return
    cause = f"{run.error_class}: " if run.error_class else ""
    message = _one_line(run.error_message or run.status)
    code = ExitCode.VENDOR if run.error_class in VENDOR_ERROR_CLASSES else ExitCode.FAILED
    fail(f"sync {run.id} of connector {run.connector_id} failed ({cause}{message})", code)


def _quiet_logging(settings: Settings) -> None:
    """A command that reports for itself: only errors from the logs (on stderr), unless
    OKR_LOG_LEVEL=debug asks for everything."""
    configure_logging(settings)
    if settings.log_level != "debug":
        logging.getLogger().setLevel(logging.ERROR)


@app.command()
@one_line_errors
def demo() -> None:
    """Load the Tartempion example (OKRs and a demo CRM) into the database, once."""
    from service.auth.models import TokenCreate
    from service.auth.service import create_token
    from service.clock import utc_now
    from service.demo import SLUG, demo_connector_id, load_tartempion

    settings = _settings()
    _quiet_logging(settings)
    _check_keys(settings)
    engine = ready_database(settings)
    token = None
    with db.session_scope(engine) as session:
        created = load_tartempion(session, utc_now())
        if created is not None:
            _, token = create_token(
                session,
                created.id,
                TokenCreate(name="demo admin", role=Role.admin),
                utc_now(),
                "okr-sync demo",
            )
    with db.session_scope(engine) as session:
        connector_id = demo_connector_id(session)
    if token is None:
        typer.echo(
            f"the {SLUG!r} workspace is already loaded (demo connector {connector_id}); "
            "nothing to do",
            err=True,
        )
    else:
        typer.echo(f"loaded workspace {SLUG!r}; its admin token, shown this once:", err=True)
        typer.echo(token)
    typer.echo(f"sync its demo CRM: okr-sync sync {connector_id}", err=True)


@db_app.command("upgrade")
@one_line_errors
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Apply schema migrations up to REVISION (default: the latest); at the latest, also
    encrypt connector secrets stored in plain."""
    from service.main import upgrade

    settings = _settings()
    engine = db.make_engine(settings.database_url)
    if revision == "head":
        _check_keys(settings)
        upgrade(settings, engine)
    else:
        db.upgrade(engine, revision)
    typer.echo(f"database at {revision}: {db.safe_url(settings.database_url)}")


@secrets_app.command("rotate")
@one_line_errors
def secrets_rotate() -> None:
    """Re-encrypt every connector's secrets with the first key of OKR_SECRET_KEYS.

    Rotation: prepend a new key (`OKR_SECRET_KEYS=NEW,OLD`), restart, run this, then
    remove OLD. Also encrypts secrets stored before encryption existed. Idempotent. Exits
    1 if some connector's secrets no configured key decrypts (they are left unchanged).
    """
    from service.sync import secrets as secret_store

    settings = _settings()
    _check_keys(settings)
    report = secret_store.reseal_stored(ready_database(settings), settings, rotate=True)
    typer.echo(
        f"re-encrypted the secrets of {report.rotated} connector(s) with the first key; "
        f"encrypted {report.sealed} stored in plain"
    )
    if report.unreadable:
        ids = ", ".join(str(i) for i in report.unreadable)
        typer.echo(
            f"cannot decrypt the secrets of connector(s) {ids} with any configured key: "
            "add the key that encrypted them, or set their secrets again",
            err=True,
        )
        raise typer.Exit(1)


@secrets_app.command("new-key")
def secrets_new_key() -> None:
    """Print a new key for OKR_SECRET_KEYS."""
    from service.sync import secrets as secret_store

    typer.echo(secret_store.new_key())


@tokens_app.command("create")
@one_line_errors
def tokens_create(
    name: Annotated[str, typer.Option(help="Who or what uses it, e.g. 'sales dashboard'.")],
    role: Annotated[Role, typer.Option(help="viewer, editor or admin.")] = Role.viewer,
    workspace: Annotated[
        str | None,
        typer.Option(help="Workspace slug; without it, a deployment token (admin only)."),
    ] = None,
    expires_in_days: Annotated[
        int | None, typer.Option(min=1, help="Stop working after this many days.")
    ] = None,
) -> None:
    """Create an API token and print it (the only time it is shown)."""
    from sqlmodel import select

    from service.auth.models import TokenCreate
    from service.auth.service import CLI, act_as, create_token
    from service.clock import utc_now
    from service.workspaces.models import Workspace

    settings = _settings()
    now = utc_now()
    with db.session_scope(ready_database(settings)) as session:
        workspace_id = None
        if workspace is not None:
            found = session.exec(select(Workspace).where(Workspace.slug == workspace)).first()
            if found is None:
                fail(f"no workspace {workspace!r}", ExitCode.NOT_FOUND)
            workspace_id = found.id
        elif role is not Role.admin:
            fail("a deployment token (no --workspace) must be an admin", ExitCode.USAGE)
        act_as(session, CLI, now)
        expires = now + timedelta(days=expires_in_days) if expires_in_days else None
        data = TokenCreate(name=name, role=role, expires_at=expires)
        row, token = create_token(session, workspace_id, data, now, "cli")
        where = f"workspace {workspace!r}" if workspace else "the whole deployment"
        typer.echo(f"token {row.id} ({role.value}, {where}), shown this once:", err=True)
        typer.echo(token)


@tokens_app.command("revoke")
@one_line_errors
def tokens_revoke(token_id: Annotated[int, typer.Argument(help="Token id.")]) -> None:
    """Revoke a token: from now on it answers 401."""
    from service.auth.models import ApiToken
    from service.auth.service import CLI, act_as
    from service.clock import utc_now

    settings = _settings()
    with db.session_scope(ready_database(settings)) as session:
        row = session.get(ApiToken, token_id)
        if row is None:
            fail(f"no token {token_id}", ExitCode.NOT_FOUND)
        act_as(session, CLI, utc_now())
        row.revoked_at = row.revoked_at or utc_now()
    typer.echo(f"token {token_id} revoked")


@app.command("openapi")
@one_line_errors
def openapi(
    out: Annotated[Path | None, typer.Option(help="Write here instead of stdout.")] = None,
) -> None:
    """Print (or write) the OpenAPI document the API serves."""
    from service.main import create_app

    doc = json.dumps(create_app(Settings()).openapi(), indent=2, sort_keys=True) + "\n"
    if out is None:
        typer.echo(doc, nl=False)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(doc)


if __name__ == "__main__":
    app()
