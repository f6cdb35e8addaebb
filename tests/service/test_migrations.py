"""Alembic: an empty database upgrades to head, and the models match the migrations
(autogenerate finds nothing to add). Runs on SQLite, or on PostgreSQL when
OKR_TEST_DATABASE_URL is set (in a database of its own, created empty)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, make_url, text
from sqlmodel import SQLModel

import service.models  # noqa: F401 - registers every table on SQLModel.metadata
from service import db
from service.settings import Settings
from tests.conftest import PG_URL


@pytest.fixture
def empty_engine(tmp_path: Path) -> Iterator[Engine]:
    """An engine on a database with no table at all."""
    if not PG_URL:
        engine = db.make_engine(f"sqlite:///{tmp_path / 'empty.db'}")
        yield engine
        engine.dispose()
        return
    url = make_url(Settings(database_url=PG_URL).database_url)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    name = f"{url.database}_migrations_{worker}_{uuid.uuid4().hex[:8]}"
    admin = db.make_engine(
        url.set(database="postgres").render_as_string(hide_password=False),
        isolation_level="AUTOCOMMIT",
    )
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine = db.make_engine(url.set(database=name).render_as_string(hide_password=False))
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _head() -> str:
    head = ScriptDirectory.from_config(
        db.alembic_config(db.make_engine("sqlite://"))
    ).get_current_head()
    assert head is not None
    return head


def _revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def _differences(engine: Engine) -> list[object]:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, SQLModel.metadata))


def test_given_an_empty_database_when_upgraded_then_it_reaches_head_with_every_table(
    empty_engine: Engine,
) -> None:
    assert inspect(empty_engine).get_table_names() == []
    db.upgrade(empty_engine)
    assert _revision(empty_engine) == _head()
    tables = set(inspect(empty_engine).get_table_names())
    assert set(SQLModel.metadata.tables) <= tables
    db.upgrade(empty_engine)  # idempotent
    assert _revision(empty_engine) == _head()


def test_given_a_database_at_head_when_compared_with_the_models_then_nothing_differs(
    empty_engine: Engine,
) -> None:
    db.upgrade(empty_engine)
    differences = _differences(empty_engine)
    assert differences == [], (
        "the models and the migrations disagree; add a migration "
        "(alembic revision --autogenerate) for:\n" + "\n".join(map(str, differences))
    )


def test_given_the_test_database_when_compared_with_the_models_then_nothing_differs(
    engine: Engine,
) -> None:
    assert _revision(engine) == _head()
    assert _differences(engine) == []


def test_given_a_database_at_head_when_downgraded_to_base_and_back_then_it_upgrades_again(
    empty_engine: Engine,
) -> None:
    db.upgrade(empty_engine)
    command.downgrade(db.alembic_config(empty_engine), "base")
    assert _revision(empty_engine) is None
    assert set(inspect(empty_engine).get_table_names()) <= {"alembic_version"}
    db.upgrade(empty_engine)
    assert _revision(empty_engine) == _head()
    assert _differences(empty_engine) == []


def test_given_runs_left_running_by_the_old_version_when_upgraded_then_they_end_interrupted(
    empty_engine: Engine,
) -> None:
    """0006 (sync jobs): a run a crashed worker of the previous version left `running`
    would never finish: it ends `failed`/`interrupted`, leases are dropped, enabled
    connectors are due once, and what hangs off the connectors is kept."""
    db.upgrade(empty_engine, "0005")
    with empty_engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO workspace (id, slug, name, timezone, created_at, on_track_margin, "
                "at_risk_margin) VALUES (1, 'acme', 'Acme', 'UTC', '2026-01-01 00:00:00', "
                "0.1, 0.25)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO connector (id, workspace_id, name, type, config, kinds, secrets, "
                "sync_interval_seconds, enabled, created_at, lease_owner, lease_until) VALUES "
                "(1, 1, 'crm', 'demo', '{}', NULL, '{}', 900, :yes, '2026-01-01 00:00:00', "
                "'old-host:1', '2026-01-01 00:15:00')"
            ),
            {"yes": True},
        )
        conn.execute(
            text(
                "INSERT INTO sync_run (id, workspace_id, connector_id, trigger, status, "
                "started_at, fetched, inserted, updated, deleted, requests, retries) VALUES "
                "(1, 1, 1, 'schedule', 'running', '2026-01-01 00:00:00', 0, 0, 0, 0, 0, 0)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO sync_state (connector_id, kind, watermark, updated_at) VALUES "
                "(1, 'lead', '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
            )
        )
    db.upgrade(empty_engine)
    with empty_engine.connect() as conn:
        run = conn.execute(
            text("SELECT status, error_class, queued_at FROM sync_run WHERE id = 1")
        ).one()
        connector = conn.execute(
            text("SELECT lease_owner, next_run_at, paused FROM connector WHERE id = 1")
        ).one()
        checkpoints = conn.execute(text("SELECT count(*) FROM sync_state")).scalar_one()
    # On SQLite, a batch copy of `connector` would have cascade-deleted these.
    assert checkpoints == 1
    assert (run.status, run.error_class) == ("failed", "interrupted")
    assert run.queued_at is not None
    assert connector.lease_owner is None
    assert connector.next_run_at is not None
    assert not connector.paused
