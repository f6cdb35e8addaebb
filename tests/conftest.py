"""Shared fixtures: a clean database per test (SQLite, or PostgreSQL when
OKR_TEST_DATABASE_URL is set), the app over httpx, and a frozen clock."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import time_machine
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import URL, Engine, make_url, text
from sqlmodel import Session, select

from service import db
from service.auth.models import Role, TokenCreate
from service.auth.service import create_token
from service.main import create_app
from service.settings import Settings
from service.workspaces.models import Workspace
from tests.fakes.server import ALLOWED_HOSTS

PG_URL = os.environ.get("OKR_TEST_DATABASE_URL")
#: The moment tests freeze "now" at, unless they choose another.
FROZEN_NOW = datetime(2026, 7, 2, 12, 0, tzinfo=UTC)


#: Environment variable carrying `--wall-clock` to subprocesses the tests start.
WALL_CLOCK_ENV = "OKR_TEST_WALL_CLOCK"


def suite_wall_clock() -> str | None:
    """Where a subprocess's wall clock must start for it to agree with this process's:
    the suite's moved clock as it reads now (it has been ticking since `--wall-clock` put
    it there, minutes ago by the time a test starts a worker), or None when not moved.
    Starting subprocesses at the original instant put them minutes behind the test, so
    rows the test stamped "now" were in their future."""
    if not os.environ.get(WALL_CLOCK_ENV):
        return None
    return datetime.now(UTC).isoformat()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--wall-clock",
        default=os.environ.get(WALL_CLOCK_ENV),
        help="Run the suite with the wall clock moved to this ISO 8601 instant (it keeps "
        "ticking), to prove nothing depends on today's date.",
    )


def pytest_configure(config: pytest.Config) -> None:
    destination = config.getoption("--wall-clock")
    if destination:
        moment = datetime.fromisoformat(destination)
        if moment.tzinfo is None:
            raise pytest.UsageError("--wall-clock needs a time zone offset")
        time_machine.travel(moment, tick=True).start()
        # Subprocesses (the served app) move their clock too: see tests/wallclock.py.
        os.environ[WALL_CLOCK_ENV] = destination


def _worker() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


def _admin_engine(url: URL) -> Engine:
    return db.make_engine(
        url.set(database="postgres").render_as_string(hide_password=False),
        isolation_level="AUTOCOMMIT",
    )


def _pg_database(base_url: str) -> URL:
    """A database of our own for this test process, created empty.

    The name carries the process id, so test runs sharing a server (a developer's and
    CI's, or several sessions) never drop each other's databases.
    """
    url = make_url(Settings(database_url=base_url).database_url)
    name = f"{url.database}_okr_{_worker()}_{os.getpid()}"
    admin = _admin_engine(url)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return url.set(database=name)


@pytest.fixture(scope="session")
def _migrated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a migrated, empty database (a template file for SQLite)."""
    if PG_URL:
        url = _pg_database(PG_URL)
        rendered = url.render_as_string(hide_password=False)
        engine = db.make_engine(rendered)
        db.upgrade(engine)
        engine.dispose()
        yield rendered
        admin = _admin_engine(url)
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))
        admin.dispose()
    else:
        path = tmp_path_factory.mktemp("db") / "template.db"
        engine = db.make_engine(f"sqlite:///{path}")
        db.upgrade(engine)
        engine.dispose()
        yield str(path)


def _truncate_all(engine: Engine) -> None:
    with engine.begin() as conn:
        tables = [
            r[0]
            for r in conn.execute(
                text(
                    "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
                    "AND tablename <> 'alembic_version'"
                )
            )
        ]
        if tables:
            quoted = ", ".join(f'"{t}"' for t in tables)
            conn.execute(text(f"TRUNCATE {quoted} RESTART IDENTITY CASCADE"))


@pytest.fixture
def database_url(_migrated: str, tmp_path: Path) -> str:
    """A clean, migrated database for this test."""
    if PG_URL:
        engine = db.make_engine(_migrated)
        _truncate_all(engine)
        engine.dispose()
        return _migrated
    path = tmp_path / "okr.db"
    shutil.copyfile(_migrated, path)
    return f"sqlite:///{path}"


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = db.make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    with Session(engine, expire_on_commit=False) as s:
        yield s


#: The key tests encrypt connector secrets with (a fixed one: tests never rely on a key file).
TEST_SECRET_KEY = "ZmDfcTF7_60GrrY167zsiPd67pEvs0aGOv2oS1MXFcA="


def make_settings(database_url: str, **overrides: object) -> Settings:
    """Settings for tests: no demo, no startup migration (the template is migrated),
    connectors allowed to reach the fakes on loopback, an explicit secret key."""
    values: dict[str, object] = {
        "database_url": database_url,
        "secret_keys": TEST_SECRET_KEY,
        "migrate_on_start": False,
        "load_demo": False,
        "role": "api",
        # The Host header Starlette's TestClient sends.
        "allowed_hosts": ["testserver"],
        "connector_allowed_hosts": ALLOWED_HOSTS,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


class FrozenClock:
    """A clock tests can move."""

    def __init__(self, now: datetime = FROZEN_NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def app(database_url: str, engine: Engine, clock: FrozenClock) -> FastAPI:
    return create_app(make_settings(database_url), engine, clock=clock)


def issue_token(
    engine: Engine,
    role: Role = Role.admin,
    workspace: str | None = None,
    name: str = "tests",
) -> str:
    """A token, created as the CLI does: deployment-wide unless `workspace` (a slug)."""
    with Session(engine) as session:
        workspace_id = None
        if workspace is not None:
            found = session.exec(select(Workspace).where(Workspace.slug == workspace)).first()
            assert found is not None, workspace
            workspace_id = found.id
        _, token = create_token(
            session, workspace_id, TokenCreate(name=name, role=role), FROZEN_NOW, "tests"
        )
        session.commit()
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def client(app: FastAPI, engine: Engine) -> Iterator[TestClient]:
    """A client acting with a deployment admin token (creates workspaces, picks one with
    `X-Workspace`); tests of roles and isolation make their own tokens."""
    with TestClient(app, raise_server_exceptions=False) as c:
        c.headers.update(bearer(issue_token(engine)))
        yield c
