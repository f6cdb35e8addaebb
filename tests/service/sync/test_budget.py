"""The database-backed shared rate budget (`service.sync.budget`): reservations are atomic
across connections, a 429 pause reaches every reserver, and two governors of one HubSpot
portal that share it (what two worker processes are: separate governors, separate
database connections) stay together within the account's limit, judged by the fake
HubSpot's own window counts. Runs on SQLite, or on PostgreSQL with OKR_TEST_DATABASE_URL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, text
from sqlmodel import Session

from connectors import governor as governor_module
from connectors.base import RecordKind, Runtime, Window
from connectors.governor import account_key
from connectors.hubspot import HubSpotConnector
from connectors.hubspot.connector import account_of
from connectors.retry import RetryPolicy
from service import db
from service.sync.budget import PURGE_AFTER_SECONDS, DatabaseBudget
from service.sync.engine import SyncEngine
from service.sync.models import Connector, RateBudget, RunStatus
from tests.conftest import make_settings
from tests.connectors.hubspot.harness import HubSpotHarness, contact_properties, make_harness
from tests.connectors.test_governor import read_together
from tests.factories import API, make_workspace, ok
from tests.fakes.hubspot import CLOCK_START_MS
from tests.service.sync.test_engine import store_connector, stored_ids
from tests.service.sync.test_secrets import body_for, serve

#: The fake account's limit: 20 requests per rolling second (HubSpot's shape, smaller).
LIMIT, INTERVAL_MS = 20, 1000


@pytest.fixture
def engines(database_url: str) -> Iterator[list[Engine]]:
    """Engines of their own (separate pools, separate connections), one per "process"."""
    made = [db.make_engine(database_url) for _ in range(4)]
    yield made
    for engine in made:
        engine.dispose()


def test_given_concurrent_reservers_when_leasing_then_no_two_leases_overlap(
    engines: list[Engine],
) -> None:
    spans: list[tuple[float, float]] = []
    lock = threading.Lock()
    need = 0.01

    def reserve(engine: Engine) -> None:
        budget = DatabaseBudget(engine)
        for _ in range(25):
            lease = budget.lease(
                "hubspot test portal:1", "all", need_seconds=need, horizon_seconds=1e6
            )
            assert lease.start is not None
            with lock:
                spans.append((lease.start, lease.start + need))

    threads = [threading.Thread(target=reserve, args=(e,)) for e in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(spans) == 100
    spans.sort()
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        # Each lease starts where the one before it ends, or later (float rounding aside).
        assert start >= end - 1e-5


def test_given_reservers_pressing_on_a_horizon_when_leasing_then_the_rate_never_exceeds_it(
    engines: list[Engine],
) -> None:
    """Four reservers asking as fast as they can for 0.6 s get at most the schedule's
    worth of cells: the time that passed plus the horizon, never more."""
    spacing, slots, horizon = 0.01, 5, 0.1
    granted: list[float] = []
    nows: list[float] = []
    lock = threading.Lock()

    def reserve(engine: Engine) -> None:
        budget = DatabaseBudget(engine)
        first: float | None = None
        while True:
            lease = budget.lease(
                "hubspot test portal:2",
                "all",
                need_seconds=slots * spacing,
                horizon_seconds=horizon,
            )
            first = lease.now if first is None else first
            with lock:
                nows.append(lease.now)
                if lease.start is not None:
                    granted.append(lease.start)
            if lease.now - first > 0.6:
                return

    threads = [threading.Thread(target=reserve, args=(e,)) for e in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    elapsed = max(nows) - min(nows)
    cells = slots * len(granted)
    assert cells * spacing <= elapsed + horizon + slots * spacing + 1e-3
    # Not vacuous: they asked far more often than they were granted.
    assert len(nows) > len(granted)
    assert max(granted) - max(nows) <= horizon + 1e-3


def test_given_a_pause_when_reserving_then_none_is_granted_until_it_ends(
    engines: list[Engine],
) -> None:
    first, second = DatabaseBudget(engines[0]), DatabaseBudget(engines[1])
    account = "hubspot test portal:3"
    assert (
        first.reserve(account, "all", slots=2, spacing_seconds=0.01, horizon_seconds=1).slots == 2
    )

    second.pause(account, "all", 30.0)

    refused = first.reserve(account, "all", slots=2, spacing_seconds=0.01, horizon_seconds=1)
    assert refused.slots == 0
    assert 29.0 < refused.wait_seconds <= 30.0
    # Another lane of the account is not paused.
    assert first.reserve(account, "search", slots=1, spacing_seconds=0.25, horizon_seconds=1).slots


def test_given_a_schedule_beyond_the_horizon_when_reserving_then_it_says_when_to_ask_again(
    engines: list[Engine],
) -> None:
    budget = DatabaseBudget(engines[0])
    account = "hubspot test portal:4"
    taken = budget.reserve(account, "all", slots=10, spacing_seconds=0.1, horizon_seconds=0.2)
    assert (taken.slots, taken.wait_seconds) == (10, 0.0)

    refused = budget.reserve(account, "all", slots=1, spacing_seconds=0.1, horizon_seconds=0.2)

    assert refused.slots == 0
    # The schedule is taken for a second; asking makes sense again 0.2 s before it ends.
    assert 0.6 < refused.wait_seconds <= 0.8


def test_given_rows_idle_for_a_day_when_purging_then_only_they_go(engines: list[Engine]) -> None:
    budget = DatabaseBudget(engines[0])
    budget.reserve("hubspot test portal:5", "all", slots=1, spacing_seconds=1, horizon_seconds=1)
    with Session(engines[0]) as session:
        old = -2 * PURGE_AFTER_SECONDS  # the epoch's past: long before any "now"
        session.add(RateBudget(account="gone", lane="all", next_free=old, paused_until=old))
        session.commit()

    assert budget.purge() == 1

    with Session(engines[0]) as session:
        left = session.execute(select(RateBudget.account)).scalars().all()
    assert left == ["hubspot test portal:5"]


@pytest.fixture
def hubspot(tmp_path: Path) -> Iterator[HubSpotHarness]:
    with make_harness(tmp_path) as harness:
        harness.fake.rate_limit = LIMIT
        harness.fake.rate_interval_ms = INTERVAL_MS
        stamps = [CLOCK_START_MS + 1000 * (i + 1) for i in range(600)]
        harness.fake.add_many("contacts", stamps, contact_properties(1))
        yield harness


def process_connector(
    hubspot: HubSpotHarness, monkeypatch: pytest.MonkeyPatch, engine: Engine
) -> HubSpotConnector:
    """A connector as a process of its own would build it: with a governor of its own
    (a fresh registry), sharing the budget through a connection pool of its own."""
    monkeypatch.setattr(governor_module, "_REGISTRY", {})
    runtime = Runtime(retry=RetryPolicy(max_attempts=10), page_size=20)
    connector = hubspot.connector(runtime, portal_id="4242", tier="professional")
    connector.governor.share(DatabaseBudget(engine))
    return connector


def test_given_two_processes_of_one_portal_when_reading_at_once_then_the_account_limit_holds(
    hubspot: HubSpotHarness, monkeypatch: pytest.MonkeyPatch, engines: list[Engine]
) -> None:
    first = process_connector(hubspot, monkeypatch, engines[0])
    second = process_connector(hubspot, monkeypatch, engines[1])
    assert first.governor is not second.governor
    assert first.governor.account == second.governor.account

    results = read_together([first, second])

    for records in results:
        assert {r.source_id for r in records} == hubspot.fake.live_ids("contacts")
    assert hubspot.fake.rate_limited == 0
    assert hubspot.fake.peak_in_window <= LIMIT
    # Not vacuous: together they pressed on the limit (each alone would use most of it).
    assert hubspot.fake.peak_in_window > LIMIT // 2
    assert first.governor.admitted > 10
    assert second.governor.admitted > 10


def test_given_two_processes_searching_one_portal_when_reading_at_once_then_search_limit_holds(
    hubspot: HubSpotHarness, monkeypatch: pytest.MonkeyPatch, engines: list[Engine]
) -> None:
    """CRM search answers carry no rate headers, so processes cannot learn each other's
    searches from the vendor: each alone would search at the whole 4/s (HubSpot allows
    5), and two of them got 429s before the budget was shared."""
    hubspot.fake.search_per_second = 5
    first = process_connector(hubspot, monkeypatch, engines[0])
    second = process_connector(hubspot, monkeypatch, engines[1])
    # The last 200 records' window: read by search, not by listing.
    since_ms = CLOCK_START_MS + 1000 * 401
    window = Window(datetime.fromtimestamp(since_ms / 1000, UTC), datetime(2100, 1, 1, tzinfo=UTC))
    expected = {
        str(o.id) for o in hubspot.fake.objects["contacts"].values() if o.updated_ms >= since_ms
    }
    assert len(expected) == 200

    results = read_together([first, second], window)

    for records in results:
        assert {r.source_id for r in records} == expected
    assert hubspot.fake.rate_limited == 0
    assert hubspot.fake.peak_search_in_second <= 5
    assert hubspot.fake.peak_search_in_second >= 3  # together at the lane's 4/s


def test_given_a_hubspot_connector_when_the_engine_syncs_it_then_its_portal_budget_is_shared(
    engine: Engine, database_url: str, hubspot: HubSpotHarness
) -> None:
    config = hubspot.config(portal_id="4343").model_dump(mode="json")
    connector_id = store_connector(engine, hubspot, kinds=["contact"], config=config)

    def runtime(_row: Connector) -> Runtime:
        return Runtime(
            retry=RetryPolicy(max_attempts=10),
            timeout_seconds=5,
            clock=hubspot.now,
            allowed_hosts=hubspot.connector().runtime.allowed_hosts,
        )

    sync = SyncEngine(
        engine, make_settings(database_url), clock=hubspot.now, runtime_factory=runtime
    )
    run = sync.run(connector_id)

    assert run.status == RunStatus.succeeded, run.error_message
    assert set(stored_ids(engine, connector_id, RecordKind.contact)) == hubspot.fake.live_ids(
        "contacts"
    )
    account = account_key(("hubspot", hubspot.served.base_url, "portal:4343"))
    with engine.connect() as conn:
        lanes = conn.execute(
            text("SELECT lane FROM rate_budget WHERE account = :a"), {"a": account}
        ).scalars()
        # Every request's lane, and search's own (incremental windows) when it searched.
        assert "all" in set(lanes)
    assert hubspot.fake.rate_limited == 0


def test_given_a_hubspot_connector_when_checked_over_the_api_then_its_request_is_leased_too(
    engine: Engine, database_url: str, hubspot: HubSpotHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An API process that never synced (a fresh governor registry) still sends a
    check's request in a cell of the portal's shared schedule."""
    monkeypatch.setattr(governor_module, "_REGISTRY", {})
    with serve(engine, database_url, hubspot) as client:
        make_workspace(client)
        vendor = hubspot.connector()
        created = ok(client.post(f"{API}/connectors", json=body_for(vendor, hubspot)), 201)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM rate_budget")).scalar_one() == 0

        check = ok(client.post(f"{API}/connectors/{created['id']}/check"))

    assert check["ok"] is True, check
    assert isinstance(vendor, HubSpotConnector)
    portal = account_of(vendor.config, vendor.secrets)
    account = account_key(("hubspot", vendor.config.base_url, portal))
    with engine.connect() as conn:
        lanes = conn.execute(
            text("SELECT lane FROM rate_budget WHERE account = :a"), {"a": account}
        ).scalars()
        assert set(lanes) == {"all"}, "the check's request took no cell of the shared schedule"
