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
    typer.echo(
        f"okr-sync on http://{host}:{port}  (docs: /docs, database: {settings.database_url})"
    )
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info")


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
        out.write_text(doc)


if __name__ == "__main__":
    app()
