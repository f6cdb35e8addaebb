"""`okr-sync worker` processes for real: two of them on PostgreSQL share 20 due connectors,
one is killed with SIGKILL mid-sync and the other takes its runs over; SIGTERM stops a
worker cleanly (its run commits its page and is handed back)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from sqlmodel import Session, col

from connectors.base import RecordKind
from service.clock import utc_now
from service.sync import secrets as secret_store
from service.sync.engine import INTERRUPTED
from service.sync.models import Connector, RunStatus, SyncedRecord, SyncRun, SyncState
from service.workspaces.models import Workspace
from tests.conftest import PG_URL, TEST_SECRET_KEY, make_settings, suite_wall_clock
from tests.connectors.hubspot.harness import GOOD_TOKEN, HubSpotHarness, make_harness
from tests.connectors.salesforce.harness import SalesforceHarness
from tests.fakes.hubspot import Fault, on_path
from tests.harnesses import open_harness
from tests.service.sync.test_engine import assert_equals_source
from tests.service.test_serve_e2e import REPO, _command

LEASE_SECONDS = 5
TICK_SECONDS = 0.5
CONTACTS = 30
PAGE_SIZE = 5
#: Each vendor page takes this long: a sync lasts seconds, so a kill lands mid-sync.
PAGE_DELAY_SECONDS = 0.3


@pytest.fixture
def hubspot(tmp_path: Path) -> Iterator[HubSpotHarness]:
    with make_harness(tmp_path) as h:
        h.seed(RecordKind.contact, CONTACTS)
        h.set_page_size(PAGE_SIZE)
        h.fake.inject(Fault(when=on_path("/crm/"), delay=PAGE_DELAY_SECONDS, times=None))
        yield h


def store_connectors(
    engine: Engine, database_url: str, vendor: HubSpotHarness | str, n: int
) -> list[int]:
    """`n` HubSpot connectors on the fake (or a base URL), all due now, as the API would
    store them."""
    base_url = vendor if isinstance(vendor, str) else vendor.served.base_url
    settings = make_settings(database_url)
    now = utc_now()
    with Session(engine) as session:
        ws = Workspace(slug="acme", name="Acme", created_at=now)
        session.add(ws)
        session.flush()
        assert ws.id is not None
        rows = [
            Connector(
                workspace_id=ws.id,
                name=f"HubSpot {i}",
                type="hubspot",
                config={"base_url": base_url},
                secrets=secret_store.seal({"access_token": GOOD_TOKEN}, settings),
                kinds=["contact"],
                sync_interval_seconds=3600,
                created_at=now,
                next_run_at=now,
            )
            for i in range(n)
        ]
        session.add_all(rows)
        session.commit()
        return [r.id for r in rows if r.id is not None]


def worker_env(database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OKR_")}
    env.update(
        {
            "OKR_DATABASE_URL": database_url,
            "OKR_SECRET_KEYS": TEST_SECRET_KEY,
            "OKR_MIGRATE_ON_START": "false",
            "OKR_SYNC_LEASE_SECONDS": str(LEASE_SECONDS),
            "OKR_SCHEDULER_TICK_SECONDS": str(TICK_SECONDS),
            "OKR_WORKER_CONCURRENCY": "2",
            # The connectors share one fake account (one token): these tests are about
            # takeover and shutdown, not the account cap (test_account_cap.py), so it
            # must not queue them behind each other.
            "OKR_SYNC_MAX_PER_ACCOUNT": "100",
            "OKR_CONNECTOR_ALLOWED_HOSTS": "127.0.0.1",
            "OKR_LOG_FORMAT": "text",
            "PYTHONPATH": str(REPO),
        }
        | extra
    )
    return env


@contextmanager
def workers(tmp_path: Path, database_url: str, **extra: str) -> Iterator[Any]:
    """Start `okr-sync worker` processes on demand (`start()`); kill what is left."""
    env = worker_env(database_url, **extra)
    started: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        log = (tmp_path / f"worker-{len(started)}.log").open("wb")
        process = subprocess.Popen(  # noqa: S603 - our own console script
            [*_command(suite_wall_clock()), "worker"],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        started.append(process)
        return process

    try:
        yield start
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)


def wait_for(what: str, condition: Any, timeout: float, tmp_path: Path) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.1)
    logs = "\n".join(p.read_text() for p in sorted(tmp_path.glob("worker-*.log")))
    pytest.fail(f"{what}: not within {timeout} s\n{logs[-5000:]}")


def stopped(process: subprocess.Popen[bytes], timeout: float, log: Path) -> int:
    """The exit code of `process` once it ends; if it has not within `timeout`, fail with
    its log, where SIGUSR1 (faulthandler) has first written where each thread waits."""
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGUSR1)
        time.sleep(2)
        process.kill()
        process.wait(timeout=30)
        pytest.fail(f"not stopped within {timeout} s\n{log.read_text()[-20000:]}")


def resumed_by_a_new_worker(
    tmp_path: Path, engine: Engine, database_url: str, **extra: str
) -> SyncRun:
    """Start a worker, wait until the newest run has succeeded, and return that run."""
    with workers(tmp_path, database_url, **extra) as start:
        start()
        wait_for(
            "the resumed run",
            lambda: runs(engine)[-1].status == RunStatus.succeeded,
            120,
            tmp_path,
        )
    return runs(engine)[-1]


def runs(engine: Engine) -> list[SyncRun]:
    with Session(engine) as session:
        return list(session.execute(select(SyncRun).order_by(col(SyncRun.id))).scalars())


def mid_sync(engine: Engine) -> list[SyncRun]:
    """Running runs with at least one page committed (a checkpoint to resume from)."""
    with Session(engine) as session:
        return list(
            session.execute(
                select(SyncRun)
                .join(SyncState, col(SyncState.connector_id) == SyncRun.connector_id)
                .where(
                    SyncRun.status == RunStatus.running,
                    col(SyncState.resume).is_not(None),
                )
            ).scalars()
        )


@pytest.mark.skipif(
    not (PG_URL or "").startswith("postgres"),
    reason="two worker processes claiming concurrently: needs OKR_TEST_DATABASE_URL on PostgreSQL",
)
def test_given_two_workers_when_one_is_killed_mid_sync_then_the_other_takes_over_within_a_lease(
    tmp_path: Path, engine: Engine, database_url: str, hubspot: HubSpotHarness
) -> None:
    ids = store_connectors(engine, database_url, hubspot, 20)
    with workers(tmp_path, database_url) as start:
        doomed = start()
        victims = wait_for(
            "a run of the first worker mid-sync", lambda: mid_sync(engine), 120, tmp_path
        )
        survivor = start()
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(timeout=30)
        killed_at = utc_now()
        dead_worker = victims[0].worker

        def all_done() -> bool:
            rows = runs(engine)
            succeeded = {r.connector_id for r in rows if r.status == RunStatus.succeeded}
            active = [r for r in rows if r.status in (RunStatus.queued, RunStatus.running)]
            return succeeded == set(ids) and not active

        wait_for("every connector synced", all_done, 180, tmp_path)
        stopping = time.monotonic()
        survivor.send_signal(signal.SIGTERM)
        assert stopped(survivor, 60, tmp_path / "worker-1.log") == 0
        stop_seconds = time.monotonic() - stopping

    hubspot.fake.faults.clear()
    every = runs(engine)
    dead = [r for r in every if r.worker == dead_worker and r.status == RunStatus.failed]
    assert dead, "the killed worker's run(s) stayed running"
    by_id = {r.id: r for r in every}
    takeovers: list[float] = []
    for run in dead:
        assert run.error_class == INTERRUPTED, run
        assert run.resumed_by_run_id is not None
        resume = by_id[run.resumed_by_run_id]
        assert resume.status == RunStatus.succeeded
        assert resume.worker != dead_worker
        assert resume.details is not None
        assert resume.details["kinds"]["contact"]["resumed"]
        assert resume.started_at is not None
        takeovers.append((resume.started_at - killed_at).total_seconds())
    # Each connector synced once for its due time: one success, plus a failed run for
    # each killed one (which its success resumed).
    for connector_id in ids:
        mine = [r for r in every if r.connector_id == connector_id]
        assert [r.status for r in mine if r.status == RunStatus.succeeded] == [
            RunStatus.succeeded
        ], mine
        assert all(r in dead for r in mine if r.status != RunStatus.succeeded), mine
        assert_equals_source(engine, connector_id, hubspot, (RecordKind.contact,))
    with Session(engine) as session:
        stored = session.execute(select(func.count()).select_from(SyncedRecord)).scalar_one()
    assert stored == 20 * CONTACTS, "no duplicates, nothing missing"
    print(
        f"\ntakeover after SIGKILL: {[round(t, 2) for t in takeovers]} s "
        f"(lease {LEASE_SECONDS} s, tick {TICK_SECONDS} s); "
        f"SIGTERM to exit of the idle survivor: {stop_seconds:.2f} s"
    )
    assert max(takeovers) < LEASE_SECONDS + TICK_SECONDS + 30  # "< 90 s" in the issue


def test_given_a_worker_mid_sync_when_sigterm_then_it_hands_the_run_back_and_exits_0(
    tmp_path: Path, engine: Engine, database_url: str, hubspot: HubSpotHarness
) -> None:
    (connector_id,) = store_connectors(engine, database_url, hubspot, 1)
    with workers(tmp_path, database_url) as start:
        worker = start()
        wait_for("the run mid-sync", lambda: mid_sync(engine), 120, tmp_path)
        stopping = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        code = stopped(worker, 60, tmp_path / "worker-0.log")
        stop_seconds = time.monotonic() - stopping
    print(f"\nSIGTERM to exit mid-sync: {stop_seconds:.2f} s")
    assert code == 0, (tmp_path / "worker-0.log").read_text()
    interrupted, queued = runs(engine)
    assert (interrupted.status, interrupted.error_class) == (RunStatus.failed, INTERRUPTED)
    assert interrupted.resumed_by_run_id == queued.id
    assert queued.status == RunStatus.queued
    with Session(engine) as session:
        row = session.get(Connector, connector_id)
        assert row is not None
        assert row.lease_owner is None, "the lease is released"
        state = session.get(SyncState, (connector_id, "contact"))
        assert state is not None
        assert state.resume is not None, "the last page's checkpoint"
    # The next worker resumes it from there.
    resumed = resumed_by_a_new_worker(tmp_path, engine, database_url)
    hubspot.fake.faults.clear()
    assert resumed.details is not None
    assert resumed.details["kinds"]["contact"]["resumed"]
    assert_equals_source(engine, connector_id, hubspot, (RecordKind.contact,))


def test_given_serve_syncing_from_a_silent_vendor_when_sigterm_then_it_hands_back_and_exits_0(
    tmp_path: Path, engine: Engine, database_url: str
) -> None:
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(16)
    silent = f"http://127.0.0.1:{hole.getsockname()[1]}"
    try:
        (connector_id,) = store_connectors(engine, database_url, silent, 1)
        env = worker_env(
            database_url,
            OKR_LOAD_DEMO="false",
            OKR_SHUTDOWN_GRACE_SECONDS="1",
            OKR_CONNECTOR_MAX_ATTEMPTS="1",
        )
        log = tmp_path / "serve.log"
        with log.open("wb") as out:
            server = subprocess.Popen(  # noqa: S603 - our own console script
                [*_command(suite_wall_clock()), "serve", "--port", "0"],
                cwd=tmp_path,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_for(
                "the scheduler's run",
                lambda: [r for r in runs(engine) if r.status == RunStatus.running],
                120,
                tmp_path,
            )
            stopping = time.monotonic()
            server.send_signal(signal.SIGTERM)
            code = stopped(server, 60, log)
            took = time.monotonic() - stopping
            print(f"\nserve SIGTERM with a sync stuck on its vendor: {took:.2f} s")
        finally:
            if server.poll() is None:
                server.kill()
                server.wait(timeout=30)
    finally:
        hole.close()
    assert code == 0, log.read_text()
    interrupted, queued = runs(engine)
    assert (interrupted.status, interrupted.error_class) == (RunStatus.failed, INTERRUPTED)
    assert interrupted.resumed_by_run_id == queued.id
    with Session(engine) as session:
        row = session.get(Connector, connector_id)
        assert row is not None
        assert row.lease_owner is None


def test_given_a_running_worker_when_sigusr1_then_it_writes_its_threads_stacks_and_goes_on(
    tmp_path: Path, engine: Engine, database_url: str, hubspot: HubSpotHarness
) -> None:
    store_connectors(engine, database_url, hubspot, 1)
    log = tmp_path / "worker-0.log"
    with workers(tmp_path, database_url) as start:
        worker = start()
        wait_for("the run mid-sync", lambda: mid_sync(engine), 120, tmp_path)
        worker.send_signal(signal.SIGUSR1)
        wait_for("the thread dump", lambda: "scheduler.py" in log.read_text(), 30, tmp_path)
        assert worker.poll() is None, "SIGUSR1 does not stop the worker"
        text = log.read_text()
        # One stack per thread: the main thread, the scheduler's loop, the sync's.
        assert text.count("Thread 0x") + text.count("Current thread 0x") >= 3
        assert " in _loop" in text
        assert " in main" in text or "cli.py" in text
        worker.send_signal(signal.SIGTERM)
        assert stopped(worker, 60, log) == 0


def reader_processes(pid: int) -> list[int]:
    """Children of process `pid` (the worker's reader processes), from /proc."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return found


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads children from /proc")
def test_given_a_worker_reading_salesforce_in_a_reader_process_when_sigterm_then_both_stop(
    tmp_path: Path, engine: Engine, database_url: str
) -> None:
    (tmp_path / "sf").mkdir()
    with open_harness("salesforce", tmp_path / "sf") as sf:
        assert isinstance(sf, SalesforceHarness)
        sf.seed(RecordKind.lead, 2000)
        # 10 pages of 200, each answered 0.3 s late: the initial sync lasts seconds.
        sf.fake.slow(PAGE_DELAY_SECONDS, endpoint="queryMore", times=1000)
        settings = make_settings(database_url)
        with Session(engine) as session:
            ws = Workspace(slug="acme", name="Acme", created_at=utc_now())
            session.add(ws)
            session.flush()
            assert ws.id is not None
            row = Connector(
                workspace_id=ws.id,
                name="Salesforce",
                type="salesforce",
                config={"login_url": sf.served.base_url, "page_size": 200},
                secrets=secret_store.seal(secret_store.plain(sf.secrets()), settings),
                kinds=["lead"],
                sync_interval_seconds=3600,
                created_at=utc_now(),
                next_run_at=utc_now(),
            )
            session.add(row)
            session.commit()
            connector_id = row.id
        assert connector_id is not None
        ca = {"OKR_CONNECTOR_CA_BUNDLE": str(sf.served.ca_bundle)}
        with workers(tmp_path, database_url, **ca) as start:
            worker = start()
            wait_for("the run mid-sync", lambda: mid_sync(engine), 120, tmp_path)
            readers = wait_for(
                "the reader process", lambda: reader_processes(worker.pid), 30, tmp_path
            )
            worker.send_signal(signal.SIGTERM)
            code = stopped(worker, 60, tmp_path / "worker-0.log")
        assert code == 0, (tmp_path / "worker-0.log").read_text()
        for pid in readers:
            assert not Path(f"/proc/{pid}").exists(), "the reader process outlived its worker"
        interrupted, queued = runs(engine)
        assert (interrupted.status, interrupted.error_class) == (RunStatus.failed, INTERRUPTED)
        assert interrupted.details is not None
        assert interrupted.details["kinds"]["lead"]["reader"] == "process"
        assert queued.status == RunStatus.queued

        resumed = resumed_by_a_new_worker(tmp_path, engine, database_url, **ca)
        assert resumed.details is not None
        assert resumed.details["kinds"]["lead"]["resumed"]
        sf.fake.faults.clear()
        assert_equals_source(engine, connector_id, sf, (RecordKind.lead,))
