"""The `okr-sync` command line."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from service import db
from service.auth.models import Role
from service.observability import configure_logging
from service.settings import Settings

app = typer.Typer(
    help="okr-sync: OKRs kept live from CRM and NPS survey data.", no_args_is_help=True
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")
tokens_app = typer.Typer(help="API tokens.", no_args_is_help=True)
app.add_typer(tokens_app, name="tokens")
secrets_app = typer.Typer(help="Encryption of connector secrets at rest.", no_args_is_help=True)
app.add_typer(secrets_app, name="secrets")


def _check_keys(settings: Settings) -> None:
    """Stop with the reason (exit 2) when no key can encrypt connector secrets."""
    from service.sync import secrets as secret_store

    try:
        secret_store.keyring(settings)
    except secret_store.SecretKeyError as exc:
        typer.echo(f"okr-sync: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
) -> None:
    """Start the API (docs at /docs) and, unless OKR_ROLE=api, the sync scheduler."""
    import signal
    from collections.abc import Iterator
    from contextlib import contextmanager

    import uvicorn

    from service.main import create_app
    from service.progress.stream import end_streams

    settings = Settings()
    _check_keys(settings)
    if host not in ("0.0.0.0", "::", "") and "*" not in settings.allowed_hosts:
        # The address the server binds to reaches it, so requests may name it as their Host.
        bound = f"[{host}]" if ":" in host else host
        settings = settings.model_copy(update={"allowed_hosts": [*settings.allowed_hosts, bound]})
    database = db.safe_url(settings.database_url)
    typer.echo(f"okr-sync on http://{host}:{port}  (docs: /docs, database: {database})")
    configure_logging(settings)
    api = create_app(settings)

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            super().handle_exit(sig, frame)
            # Event streams never end by themselves: end them, or the shutdown waits for
            # them until the grace period runs out.
            end_streams(api)

        @contextmanager
        def capture_signals(self) -> Iterator[None]:
            with super().capture_signals():
                yield
                # uvicorn raises a captured SIGTERM again once it has shut down, so a
                # clean stop would end as "killed by SIGTERM" (exit 143): it asked for
                # this shutdown, which is done, so the process exits 0.
                self._captured_signals = [
                    sig for sig in self._captured_signals if sig != signal.SIGTERM
                ]

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
    try:
        server.run()
    except KeyboardInterrupt:  # a second Ctrl-C
        pass
    if not server.started:
        raise typer.Exit(3)


@app.command()
def worker() -> None:
    """Run syncs only (no API): queued, scheduled and interrupted ones, OKR_WORKER_CONCURRENCY
    at a time. SIGTERM/SIGINT: stop claiming, let each sync commit its page (at most
    OKR_SHUTDOWN_GRACE_SECONDS), release the connectors, exit 0."""
    import signal
    import threading

    from service.main import upgrade
    from service.sync.engine import SyncEngine
    from service.sync.scheduler import Scheduler

    settings = Settings()
    configure_logging(settings)
    _check_keys(settings)
    engine = db.make_engine(settings.database_url)
    if settings.migrate_on_start:
        upgrade(settings, engine)
    scheduler = Scheduler(
        SyncEngine(engine, settings), settings.scheduler_tick_seconds, settings.worker_concurrency
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    scheduler.start()
    typer.echo(f"okr-sync worker running (database: {db.safe_url(settings.database_url)})")
    stop.wait()
    typer.echo("okr-sync worker stopping: letting running syncs commit their page", err=True)
    scheduler.stop(settings.shutdown_grace_seconds)
    engine.dispose()
    typer.echo("okr-sync worker stopped", err=True)


@app.command()
def sync(connector_id: Annotated[int, typer.Argument(help="Connector id.")]) -> None:
    """Sync one connector now and print the run."""
    from service.sync.engine import SyncEngine

    settings = Settings()
    _check_keys(settings)
    engine = db.make_engine(settings.database_url)
    run = SyncEngine(engine, settings).run(connector_id)
    typer.echo(json.dumps(run.model_dump(mode="json"), indent=2))
    raise typer.Exit(0 if run.status == "succeeded" else 1)


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Apply schema migrations up to REVISION (default: the latest); at the latest, also
    encrypt connector secrets stored in plain."""
    from service.main import upgrade

    settings = Settings()
    engine = db.make_engine(settings.database_url)
    if revision == "head":
        _check_keys(settings)
        upgrade(settings, engine)
    else:
        db.upgrade(engine, revision)
    typer.echo(f"database at {revision}: {db.safe_url(settings.database_url)}")


@secrets_app.command("rotate")
def secrets_rotate() -> None:
    """Re-encrypt every connector's secrets with the first key of OKR_SECRET_KEYS.

    Rotation: prepend a new key (`OKR_SECRET_KEYS=NEW,OLD`), restart, run this, then
    remove OLD. Also encrypts secrets stored before encryption existed. Idempotent. Exits
    1 if some connector's secrets no configured key decrypts (they are left unchanged).
    """
    from service.sync import secrets as secret_store

    settings = Settings()
    _check_keys(settings)
    report = secret_store.reseal_stored(
        db.make_engine(settings.database_url), settings, rotate=True
    )
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

    settings = Settings()
    now = utc_now()
    with db.session_scope(db.make_engine(settings.database_url)) as session:
        workspace_id = None
        if workspace is not None:
            found = session.exec(select(Workspace).where(Workspace.slug == workspace)).first()
            if found is None:
                typer.echo(f"no workspace {workspace!r}", err=True)
                raise typer.Exit(2)
            workspace_id = found.id
        elif role is not Role.admin:
            typer.echo("a deployment token (no --workspace) must be an admin", err=True)
            raise typer.Exit(2)
        act_as(session, CLI, now)
        expires = now + timedelta(days=expires_in_days) if expires_in_days else None
        data = TokenCreate(name=name, role=role, expires_at=expires)
        row, token = create_token(session, workspace_id, data, now, "cli")
        where = f"workspace {workspace!r}" if workspace else "the whole deployment"
        typer.echo(f"token {row.id} ({role.value}, {where}), shown this once:", err=True)
        typer.echo(token)


@tokens_app.command("revoke")
def tokens_revoke(token_id: Annotated[int, typer.Argument(help="Token id.")]) -> None:
    """Revoke a token: from now on it answers 401."""
    from service.auth.models import ApiToken
    from service.auth.service import CLI, act_as
    from service.clock import utc_now

    settings = Settings()
    with db.session_scope(db.make_engine(settings.database_url)) as session:
        row = session.get(ApiToken, token_id)
        if row is None:
            typer.echo(f"no token {token_id}", err=True)
            raise typer.Exit(2)
        act_as(session, CLI, utc_now())
        row.revoked_at = row.revoked_at or utc_now()
    typer.echo(f"token {token_id} revoked")


@app.command("openapi")
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
