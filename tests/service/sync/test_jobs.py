"""Syncs are jobs: `POST /sync` queues a run (202 + Location) that workers claim from the
database; a worker that stops renewing its lease is taken over and its run resumed; a
stopping worker hands its run back; pause (which stops a running sync at its next page)
and cron schedules."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from service.auth.models import Role
from service.main import create_app
from service.sync.engine import INTERRUPTED, PAUSED, SyncEngine
from service.sync.models import Connector, ConnectorUpdate, RunStatus, SyncRun, SyncState
from service.sync.scheduler import tick
from service.sync.service import update_connector
from tests.conftest import FROZEN_NOW, FrozenClock, bearer, issue_token, make_settings
from tests.connectors.harness import SourceHarness
from tests.factories import API, assert_problem, make_workspace, ok
from tests.harnesses import open_harness
from tests.service.sync.test_engine import (
    SourceSync,
    assert_equals_source,
    make_engine_for,
    store_connector,
)

ACME = {"X-Workspace": "acme"}


def demo_body(**extra: Any) -> dict[str, Any]:
    return {
        "name": "Demo CRM",
        "type": "demo",
        "config": {"seed": 3, "size": 150, "now": FROZEN_NOW.isoformat()},
        "sync_interval_seconds": 900,
    } | extra


def make_demo(client: TestClient, **extra: Any) -> dict[str, Any]:
    make_workspace(client)
    created: dict[str, Any] = ok(
        client.post(f"{API}/connectors", json=demo_body(**extra), headers=ACME), 201
    )
    return created


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def runs_of(engine: Engine, connector_id: int) -> list[SyncRun]:
    with Session(engine) as session:
        return list(
            session.exec(
                select(SyncRun)
                .where(SyncRun.connector_id == connector_id)
                .order_by(col(SyncRun.id))
            ).all()
        )


# ---------------------------------------------------------------------------- the API


def test_given_a_connector_when_a_sync_is_posted_then_202_queues_a_run_polled_to_its_end(
    app: FastAPI, client: TestClient, engine: Engine, clock: FrozenClock
) -> None:
    connector = make_demo(client)
    path = f"{API}/connectors/{connector['id']}"
    assert connector["next_run_at"] is not None, "a new connector syncs as soon as it can"

    queued = client.post(f"{path}/sync", headers=ACME)
    assert queued.status_code == 202, queued.text
    run = queued.json()
    assert run["status"] == "queued"
    assert run["started_at"] is None
    assert run["trigger"] == "manual"
    assert queued.headers["Location"] == f"{API}/runs/{run['id']}"
    again = client.post(f"{path}/sync", headers=ACME)
    assert again.status_code == 202
    assert again.json()["id"] == run["id"], "a queued run is answered, not doubled"
    assert ok(client.get(queued.headers["Location"], headers=ACME))["status"] == "queued"

    assert tick(app.state.sync_engine) == 1
    done = ok(client.get(queued.headers["Location"], headers=ACME))
    assert done["status"] == "succeeded", done
    assert done["inserted"] > 0
    assert done["started_at"] is not None
    assert done["finished_at"] is not None
    assert [r["id"] for r in ok(client.get(f"{path}/runs", headers=ACME))["items"]] == [run["id"]]
    after = ok(client.get(path, headers=ACME))
    assert after["last_run_status"] == "succeeded"
    assert at(after["next_run_at"]) == clock.now + timedelta(seconds=900)

    # Readers of the workspace poll runs; they cannot start one; other workspaces see none.
    viewer = bearer(issue_token(engine, Role.viewer, workspace="acme"))
    assert ok(client.get(f"{API}/runs/{run['id']}", headers=viewer))["status"] == "succeeded"
    assert client.post(f"{path}/sync", headers=viewer).status_code == 403
    make_workspace(client, "other")
    assert_problem(client.get(f"{API}/runs/{run['id']}", headers={"X-Workspace": "other"}), 404)
    assert_problem(client.get(f"{API}/runs/999999", headers=ACME), 404)


def test_given_a_paused_connector_when_a_sync_is_posted_then_409_names_paused(
    app: FastAPI, client: TestClient
) -> None:
    connector = make_demo(client)
    path = f"{API}/connectors/{connector['id']}"
    paused = ok(client.patch(path, json={"paused": True}, headers=ACME))
    assert paused["paused"] is True
    assert paused["next_run_at"] is None
    assert_problem(client.post(f"{path}/sync", headers=ACME), 409, "paused")
    assert tick(app.state.sync_engine) == 0, "a paused connector is not scheduled either"
    assert ok(client.get(f"{path}/runs", headers=ACME))["items"] == []
    resumed = ok(client.patch(path, json={"paused": False}, headers=ACME))
    assert resumed["next_run_at"] is not None
    assert ok(client.post(f"{path}/sync", headers=ACME), 202)["status"] == "queued"


def test_given_cron_schedules_then_invalid_ones_are_422_and_valid_ones_set_next_run_at(
    app: FastAPI, client: TestClient, clock: FrozenClock
) -> None:
    make_workspace(client)
    for bad in ("61 * * * *", "every hour", "* * *", "* * 30 2 *"):
        response = client.post(f"{API}/connectors", json=demo_body(sync_cron=bad), headers=ACME)
        assert_problem(response, 422, "sync_cron")
    connector = ok(
        client.post(f"{API}/connectors", json=demo_body(sync_cron="*/30 * * * *"), headers=ACME),
        201,
    )
    path = f"{API}/connectors/{connector['id']}"
    assert_problem(
        client.patch(path, json={"sync_cron": "0 25 * * *"}, headers=ACME), 422, "sync_cron"
    )
    assert tick(app.state.sync_engine) == 1  # first sync right away
    read = ok(client.get(path, headers=ACME))
    assert read["sync_cron"] == "*/30 * * * *"
    # FROZEN_NOW is 12:00 sharp: the next half hour.
    assert clock.now.minute == 0
    assert at(read["next_run_at"]) == clock.now + timedelta(minutes=30)
    back = ok(client.patch(path, json={"sync_cron": None}, headers=ACME))
    assert back["sync_cron"] is None
    assert at(back["next_run_at"]) == clock.now + timedelta(seconds=900)


def black_hole() -> socket.socket:
    """A vendor host that accepts connections and never answers a byte."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock


def test_given_a_silent_vendor_then_post_sync_answers_at_once_and_shutdown_hands_the_run_back(
    database_url: str, engine: Engine, clock: FrozenClock
) -> None:
    vendor_timeout = 20.0
    settings = make_settings(
        database_url,
        role="all",
        scheduler_tick_seconds=0.2,
        connector_timeout_seconds=vendor_timeout,
        connector_max_attempts=1,
        shutdown_grace_seconds=1,
    )
    app = create_app(settings, engine, clock=clock)
    hole = black_hole()
    port = hole.getsockname()[1]
    body = {
        "name": "Silent HubSpot",
        "type": "hubspot",
        "config": {"base_url": f"http://127.0.0.1:{port}"},
        "secrets": {"access_token": "pat-na1-0b1e2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"},
        "kinds": ["contact"],
        "enabled": False,  # no scheduled sync: the posted one is the only one
    }
    latencies: list[float] = []
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            client.headers.update(bearer(issue_token(engine)))
            make_workspace(client)
            connector = ok(client.post(f"{API}/connectors", json=body, headers=ACME), 201)
            path = f"{API}/connectors/{connector['id']}"
            started = time.perf_counter()
            first = client.post(f"{path}/sync", headers=ACME)
            latencies.append(time.perf_counter() - started)
            assert first.status_code == 202, first.text
            # The scheduler thread claims it and waits on the silent vendor ...
            deadline = time.monotonic() + 10
            while ok(client.get(first.headers["Location"], headers=ACME))["status"] == "queued":
                assert time.monotonic() < deadline, "no worker claimed the run"
                time.sleep(0.05)
            # ... and posting again still answers at once, with the running run.
            for _ in range(5):
                started = time.perf_counter()
                again = client.post(f"{path}/sync", headers=ACME)
                latencies.append(time.perf_counter() - started)
                assert again.status_code == 202
                assert again.json()["id"] == first.json()["id"]
                assert again.json()["status"] == "running"
        # Leaving the client shut the app down: the stuck run was handed back.
    finally:
        hole.close()
    print(f"POST /sync latencies (s): {[round(x, 4) for x in latencies]}")
    assert max(latencies) < vendor_timeout
    dead, resume = runs_of(engine, connector["id"])
    assert (dead.status, dead.error_class) == (RunStatus.failed, INTERRUPTED)
    assert dead.resumed_by_run_id == resume.id
    assert resume.status == RunStatus.queued
    with Session(engine) as session:
        row = session.get(Connector, connector["id"])
        assert row is not None
        assert row.lease_owner is None
        assert row.lease_until is None
        assert row.next_run_at is not None, "the resume is due at once"


# ---------------------------------------------------------------------------- workers


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[SourceHarness]:
    with open_harness("demo", tmp_path) as h:
        yield h


def later(harness: SourceHarness, seconds: float) -> Any:
    return lambda: harness.now() + timedelta(seconds=seconds)


def test_given_a_worker_that_stops_renewing_its_lease_then_another_takes_over_and_resumes(
    engine: Engine, database_url: str, demo: SourceHarness
) -> None:
    kind = demo.kinds[0]
    demo.seed(kind, 40)
    demo.set_page_size(6)
    connector_id = store_connector(engine, demo, kinds=[kind.value], next_run_at=demo.now())
    lease = make_settings(database_url).sync_lease_seconds
    taken: list[SyncRun | None] = []

    def other_worker(clock_offset: float) -> SourceSync:
        worker = make_engine_for(engine, database_url, demo)
        worker.clock = later(demo, clock_offset)
        return worker

    def frozen_after_page_2(_kind: str, page: int) -> None:
        # The first worker stalls here (a GC pause, a network partition) past its lease.
        if page == 2:
            assert other_worker(lease - 1).claim(10) == [], "the lease is still valid"
            second = other_worker(lease + 1)
            assert second.claim(10) == [connector_id]
            taken.append(second.work(connector_id))

    first = make_engine_for(engine, database_url, demo, after_commit=frozen_after_page_2)
    stalled = first.run(connector_id)

    (resumed,) = taken
    assert resumed is not None
    assert resumed.status == RunStatus.succeeded, resumed.error_message
    assert resumed.details is not None
    assert resumed.details["kinds"][kind.value]["resumed"] is True
    # The stalled worker's run was closed by the one that took over, not by itself.
    assert (stalled.status, stalled.error_class) == (RunStatus.failed, INTERRUPTED)
    assert stalled.resumed_by_run_id == resumed.id
    assert [r.status for r in runs_of(engine, connector_id)] == [
        RunStatus.failed,
        RunStatus.succeeded,
    ]
    assert_equals_source(engine, connector_id, demo, (kind,))


def test_given_a_stopping_worker_then_its_run_commits_the_page_hands_back_and_resumes(
    engine: Engine, database_url: str, demo: SourceHarness
) -> None:
    kind = demo.kinds[0]
    demo.seed(kind, 40)
    demo.set_page_size(6)
    connector_id = store_connector(engine, demo, kinds=[kind.value], next_run_at=demo.now())
    pages: list[int] = []

    def stop_at_page_2(_kind: str, page: int) -> None:
        pages.append(page)
        if page == 2:
            stopping.stopping.set()

    stopping = make_engine_for(engine, database_url, demo, after_commit=stop_at_page_2)
    assert tick(stopping) == 1
    assert pages == [1, 2], "no page after the stop"
    interrupted, queued = runs_of(engine, connector_id)
    assert (interrupted.status, interrupted.error_class) == (RunStatus.failed, INTERRUPTED)
    assert interrupted.resumed_by_run_id == queued.id
    assert queued.status == RunStatus.queued
    with Session(engine) as session:
        row = session.get(Connector, connector_id)
        assert row is not None
        assert row.lease_owner is None, "the lease is released"

    assert tick(make_engine_for(engine, database_url, demo)) == 1
    final = runs_of(engine, connector_id)[-1]
    assert final.id == queued.id
    assert final.status == RunStatus.succeeded, final.error_message
    assert final.details is not None
    assert final.details["kinds"][kind.value]["resumed"] is True
    assert_equals_source(engine, connector_id, demo, (kind,))


def set_paused(
    engine: Engine, database_url: str, connector_id: int, paused: bool, now: datetime
) -> Connector:
    """Pause or unpause as `PATCH /connectors/{id}` does."""
    settings = make_settings(database_url)
    with Session(engine, expire_on_commit=False) as session:
        row = session.get(Connector, connector_id)
        assert row is not None
        update_connector(session, row, ConnectorUpdate(paused=paused), settings, now)
        session.commit()
        return row


def test_given_a_running_sync_when_its_connector_is_paused_then_it_stops_at_the_next_page(
    engine: Engine, database_url: str, demo: SourceHarness
) -> None:
    kind = demo.kinds[0]
    demo.seed(kind, 40)
    demo.set_page_size(6)
    connector_id = store_connector(engine, demo, kinds=[kind.value], next_run_at=demo.now())
    pages: list[int] = []

    def pause_during_page_2(_kind: str, page: int) -> None:
        pages.append(page)
        if page == 1:
            # An operator pauses while the worker reads page 2 from the vendor.
            set_paused(engine, database_url, connector_id, True, demo.now())

    worker = make_engine_for(engine, database_url, demo, after_commit=pause_during_page_2)
    assert tick(worker) == 1
    assert pages == [1, 2], "page 2 was being stored: it commits, then the run stops"
    paused, waiting = runs_of(engine, connector_id)
    assert (paused.status, paused.error_class) == (RunStatus.failed, PAUSED)
    assert paused.error_message is not None
    assert "paused" in paused.error_message
    assert paused.fetched == 12
    assert paused.resumed_by_run_id == waiting.id
    assert waiting.status == RunStatus.queued
    with Session(engine) as session:
        row = session.get(Connector, connector_id)
        assert row is not None
        assert (row.lease_owner, row.next_run_at) == (None, None), "released, nothing planned"
        assert row.last_run_status == RunStatus.failed
        state = session.get(SyncState, (connector_id, kind.value))
        assert state is not None
        assert state.resume is not None, "the checkpoint of page 2 is kept"
        assert state.watermark is None, "the window is not finished"
    assert tick(make_engine_for(engine, database_url, demo)) == 0, "paused: the run waits"

    unpaused = set_paused(engine, database_url, connector_id, False, demo.now())
    assert unpaused.next_run_at == demo.now(), "the waiting run is due at once"
    pages.clear()
    resumer = make_engine_for(
        engine, database_url, demo, after_commit=lambda _kind, page: pages.append(page)
    )
    assert tick(resumer) == 1
    final = runs_of(engine, connector_id)[-1]
    assert final.id == waiting.id
    assert final.status == RunStatus.succeeded, final.error_message
    assert final.details is not None
    assert final.details["kinds"][kind.value]["resumed"] is True
    assert final.fetched == 40 - 12, "continued after page 2, nothing read twice"
    assert len(pages) == 5
    assert_equals_source(engine, connector_id, demo, (kind,))


def test_given_many_due_connectors_then_each_claim_takes_at_most_its_free_slots(
    engine: Engine, database_url: str, demo: SourceHarness
) -> None:
    first = store_connector(engine, demo, next_run_at=demo.now())
    with Session(engine) as session:
        row = session.get(Connector, first)
        assert row is not None
        for n in range(4):
            session.add(
                Connector(
                    workspace_id=row.workspace_id,
                    name=f"demo {n}",
                    type=row.type,
                    config=row.config,
                    secrets=row.secrets,
                    created_at=row.created_at,
                    next_run_at=demo.now(),
                )
            )
        session.commit()
        ids = sorted(c.id for c in session.exec(select(Connector)).all() if c.id is not None)
    settings = make_settings(database_url)
    one = SyncEngine(engine, settings, clock=demo.now)
    other = SyncEngine(engine, settings, clock=demo.now)
    mine = one.claim(2)
    assert len(mine) == 2
    theirs = other.claim(10)
    assert sorted(mine + theirs) == ids, "every due connector claimed once"
    assert one.claim(10) == [], "leased ones are not claimed again"
    assert other.claim(10) == []
