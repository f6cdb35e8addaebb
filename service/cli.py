"""The `okr-sync` command line."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer

from service import db
from service.auth.models import Role
from service.settings import Settings

app = typer.Typer(
    help="okr-sync: OKRs kept live from CRM and NPS survey data.", no_args_is_help=True
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")
tokens_app = typer.Typer(help="API tokens.", no_args_is_help=True)
app.add_typer(tokens_app, name="tokens")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
) -> None:
    """Start the API (docs at /docs) and, unless OKR_ROLE=api, the sync scheduler."""
    import uvicorn

    from service.main import create_app

    settings = Settings()
    if host not in ("0.0.0.0", "::", "") and "*" not in settings.allowed_hosts:
        # The address the server binds to reaches it, so requests may name it as their Host.
        bound = f"[{host}]" if ":" in host else host
        settings = settings.model_copy(update={"allowed_hosts": [*settings.allowed_hosts, bound]})
    typer.echo(
        f"okr-sync on http://{host}:{port}  (docs: /docs, database: {settings.database_url})"
    )
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info")


@app.command()
def worker() -> None:
    """Run scheduled syncs only (no API): the sync-worker role of a scaled deployment."""
    import signal
    import threading

    from service.sync.engine import SyncEngine
    from service.sync.scheduler import Scheduler

    settings = Settings()
    engine = db.make_engine(settings.database_url)
    if settings.migrate_on_start:
        db.upgrade(engine)
    scheduler = Scheduler(SyncEngine(engine, settings), settings.scheduler_tick_seconds)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    scheduler.start()
    typer.echo(f"okr-sync worker running (database: {settings.database_url})")
    stop.wait()
    scheduler.stop()


@app.command()
def sync(connector_id: Annotated[int, typer.Argument(help="Connector id.")]) -> None:
    """Sync one connector now and print the run."""
    from service.sync.engine import SyncEngine

    settings = Settings()
    engine = db.make_engine(settings.database_url)
    run = SyncEngine(engine, settings).run(connector_id)
    typer.echo(json.dumps(run.model_dump(mode="json"), indent=2))
    raise typer.Exit(0 if run.status == "succeeded" else 1)


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Apply schema migrations up to REVISION (default: the latest)."""
    settings = Settings()
    db.upgrade(db.make_engine(settings.database_url), revision)
    typer.echo(f"database at {revision}: {settings.database_url}")


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
