"""Scheduled syncs: due connectors run once per interval (or cron time), never twice at
once; missed times after downtime run once; paused connectors wait."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, func, select
from sqlmodel import Session

from service.sync.engine import SyncEngine
from service.sync.models import Connector, SyncRun
from service.sync.scheduler import tick
from service.sync.service import replan
from service.workspaces.models import Workspace
from tests.conftest import FrozenClock, make_settings
from tests.service.test_serve_e2e import REPO

NOW = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)


def make_demo_connector(
    engine: Engine, *, enabled: bool = True, interval: int = 600, cron: str | None = None
) -> int:
    with Session(engine) as session:
        ws = Workspace(slug="demo", name="Demo", created_at=NOW)
        session.add(ws)
        session.flush()
        assert ws.id is not None
        row = Connector(
            workspace_id=ws.id,
            name="demo",
            type="demo",
            config={"seed": 1, "size": 200, "now": NOW.isoformat()},
            secrets={},
            enabled=enabled,
            sync_interval_seconds=interval,
            sync_cron=cron,
            created_at=NOW,
            # As `service.sync.service.create_connector` plans a new connector.
            next_run_at=NOW if enabled else None,
        )
        session.add(row)
        session.commit()
        assert row.id is not None
        return row.id


def next_run_at(engine: Engine, connector_id: int) -> datetime | None:
    with Session(engine) as session:
        row = session.get(Connector, connector_id)
        assert row is not None
        return row.next_run_at


def run_count(engine: Engine) -> int:
    with Session(engine) as session:
        return int(session.execute(select(func.count()).select_from(SyncRun)).scalar_one())


def test_given_a_new_connector_when_the_scheduler_ticks_then_it_syncs_once_per_interval(
    engine: Engine, database_url: str
) -> None:
    connector_id = make_demo_connector(engine, interval=600)
    clock = FrozenClock(NOW)
    sync = SyncEngine(engine, make_settings(database_url), clock=clock)
    assert tick(sync) == 1
    assert next_run_at(engine, connector_id) == NOW + timedelta(seconds=600)
    assert tick(sync) == 0, "not due again before its interval"
    clock.now = NOW + timedelta(seconds=599)
    assert tick(sync) == 0
    clock.now = NOW + timedelta(seconds=600)
    assert tick(sync) == 1
    assert run_count(engine) == 2


def test_given_a_disabled_connector_when_the_scheduler_ticks_then_it_is_left_alone(
    engine: Engine, database_url: str
) -> None:
    make_demo_connector(engine, enabled=False)
    sync = SyncEngine(engine, make_settings(database_url), clock=FrozenClock(NOW))
    assert tick(sync) == 0
    assert run_count(engine) == 0


def test_given_two_workers_when_they_tick_together_then_the_connector_syncs_once(
    engine: Engine, database_url: str
) -> None:
    make_demo_connector(engine)
    workers = [
        SyncEngine(engine, make_settings(database_url), clock=FrozenClock(NOW)) for _ in range(2)
    ]
    assert workers[0].worker_id != workers[1].worker_id
    barrier = threading.Barrier(2)
    made: list[int] = []

    def work(sync: SyncEngine) -> None:
        barrier.wait()
        made.append(tick(sync))

    threads = [threading.Thread(target=work, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(made) == [0, 1]
    assert run_count(engine) == 1


def test_given_a_long_downtime_when_the_scheduler_comes_back_then_missed_times_run_once(
    engine: Engine, database_url: str
) -> None:
    connector_id = make_demo_connector(engine, interval=600)
    clock = FrozenClock(NOW)
    sync = SyncEngine(engine, make_settings(database_url), clock=clock)
    assert tick(sync) == 1
    clock.now = NOW + timedelta(hours=5)  # 30 intervals missed
    assert tick(sync) == 1
    assert tick(sync) == 0, "the missed times are not caught up one by one"
    assert next_run_at(engine, connector_id) == clock.now + timedelta(seconds=600)
    assert run_count(engine) == 2


def test_given_a_cron_schedule_when_the_scheduler_ticks_then_it_runs_at_the_cron_times(
    engine: Engine, database_url: str
) -> None:
    connector_id = make_demo_connector(engine, cron="0 */2 * * *")
    clock = FrozenClock(NOW + timedelta(minutes=7))  # 08:07
    sync = SyncEngine(engine, make_settings(database_url), clock=clock)
    assert tick(sync) == 1  # a new connector syncs first, then on its schedule
    assert next_run_at(engine, connector_id) == datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
    clock.now = datetime(2026, 6, 1, 9, 59, 59, tzinfo=UTC)
    assert tick(sync) == 0
    clock.now = datetime(2026, 6, 1, 10, 0, 1, tzinfo=UTC)
    assert tick(sync) == 1
    assert next_run_at(engine, connector_id) == datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def test_given_a_paused_connector_when_the_scheduler_ticks_then_nothing_runs_until_unpaused(
    engine: Engine, database_url: str
) -> None:
    connector_id = make_demo_connector(engine)
    with Session(engine) as session:
        row = session.get(Connector, connector_id)
        assert row is not None
        row.paused = True
        replan(session, row, NOW)
        session.commit()
    assert next_run_at(engine, connector_id) is None
    sync = SyncEngine(engine, make_settings(database_url), clock=FrozenClock(NOW))
    assert tick(sync) == 0
    with Session(engine) as session:
        row = session.get(Connector, connector_id)
        assert row is not None
        row.paused = False
        replan(session, row, NOW)
        session.commit()
    assert tick(sync) == 1


def test_given_a_fresh_process_when_the_scheduler_starts_then_sync_code_loads_first() -> None:
    """The vendor SDKs and the evaluation code are imported by `start`, not by the first
    sync (which held a lease and took a core for a tenth of a second or more doing it)."""
    script = textwrap.dedent(
        """
        import sys
        import threading
        import time
        from service.sync.scheduler import Scheduler

        class NoWork:
            stopping = threading.Event()
            def claim(self, limit):
                assert 'connectors.salesforce.connector' in sys.modules, 'salesforce at claim'
                assert 'connectors.hubspot.connector' in sys.modules, 'hubspot at claim'
                assert 'service.mappings.service' in sys.modules, 'mappings at claim'
                print('claimed with everything loaded', flush=True)
                return []

        lazy = [m for m in ('connectors.salesforce.connector', 'connectors.hubspot.connector',
                            'service.mappings.service') if m in sys.modules]
        assert not lazy, lazy
        scheduler = Scheduler(NoWork(), 0.05)
        scheduler.start()
        time.sleep(0.3)
        scheduler.stop(1)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, check=False
    )
    assert out.returncode == 0, out.stderr
    assert "claimed with everything loaded" in out.stdout
