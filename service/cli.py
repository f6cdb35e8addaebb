"""The `okr-sync` command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from service import db
from service.settings import Settings

app = typer.Typer(
    help="okr-sync: OKRs kept live from CRM and NPS survey data.", no_args_is_help=True
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")


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
