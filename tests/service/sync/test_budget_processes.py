"""Two `okr-sync worker` processes syncing connectors of one HubSpot portal at once stay
together within the portal's limits (the fake's own window counts and 429s judge), each
with its own governor, through the database's shared budget. SQLite or PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlmodel import Session

from connectors.base import RecordKind
from service.clock import utc_now
from service.sync.models import Connector, RunStatus
from tests.connectors.hubspot.harness import HubSpotHarness, contact_properties, make_harness
from tests.fakes.hubspot import CLOCK_START_MS
from tests.service.sync.test_engine import assert_equals_source
from tests.service.sync.test_worker_processes import runs, store_connectors, wait_for, workers

#: The fake portal's limits, HubSpot's shape made small: 20 requests per rolling second,
#: and search's 5 per second.
LIMIT, INTERVAL_MS, SEARCH_PER_SECOND = 20, 1000, 5
CONTACTS = 400
#: Contacts changed before the incremental runs (10 search pages each).
CHANGED = 100


def succeeded(engine: Engine, ids: list[int], n: int) -> bool:
    done = [r for r in runs(engine) if r.status == RunStatus.succeeded]
    return len(done) == n and {r.connector_id for r in done} == set(ids)


@pytest.fixture
def hubspot(tmp_path: Path) -> Iterator[HubSpotHarness]:
    with make_harness(tmp_path) as harness:
        harness.fake.rate_limit = LIMIT
        harness.fake.rate_interval_ms = INTERVAL_MS
        harness.fake.search_per_second = SEARCH_PER_SECOND
        stamps = [CLOCK_START_MS + 1000 * (i + 1) for i in range(CONTACTS)]
        harness.fake.add_many("contacts", stamps, contact_properties(1))
        harness.set_page_size(10)
        yield harness


def test_given_two_workers_syncing_one_portal_when_at_once_then_the_portal_limit_holds(
    tmp_path: Path, engine: Engine, database_url: str, hubspot: HubSpotHarness
) -> None:
    ids = store_connectors(engine, database_url, hubspot, 2)
    with Session(engine) as session:
        for connector_id in ids:
            row = session.get(Connector, connector_id)
            assert row is not None
            row.config = row.config | {"portal_id": "4242", "tier": "professional"}
            session.add(row)
        session.commit()

    # One run at a time per worker: each connector is synced by a process of its own.
    with workers(tmp_path, database_url, OKR_WORKER_CONCURRENCY="1") as start:
        start()
        start()
        # The initial syncs list every contact (the burst limit's lane).
        wait_for("both initial syncs", lambda: succeeded(engine, ids, 2), 180, tmp_path)
        # Then incremental runs search for the changes: search answers carry no rate
        # headers, so without the shared budget each process searched at the lane's whole
        # 4/s and together they got 429s.
        stamp = int(utc_now().timestamp() * 1000) - 500
        for contact_id in sorted(hubspot.fake.objects["contacts"])[:CHANGED]:
            hubspot.fake.modify("contacts", contact_id, {"firstname": "Changed"}, at_ms=stamp)
        with Session(engine) as session:
            for connector_id in ids:
                row = session.get(Connector, connector_id)
                assert row is not None
                row.next_run_at = utc_now()
                session.add(row)
            session.commit()
        wait_for("both incremental syncs", lambda: succeeded(engine, ids, 4), 180, tmp_path)

    every = runs(engine)
    assert len({r.worker for r in every[:2]}) == 2, "each worker synced one connector"
    # Not vacuous: the two syncs of each round ran at the same time.
    for first, second in (every[:2], every[2:]):
        assert first.started_at is not None
        assert second.started_at is not None
        assert first.finished_at is not None
        assert second.finished_at is not None
        assert max(first.started_at, second.started_at) < min(first.finished_at, second.finished_at)
    for connector_id in ids:
        assert_equals_source(engine, connector_id, hubspot, (RecordKind.contact,))
    fake = hubspot.fake
    print(
        f"\n{len(fake.requests)} requests, {fake.rate_limited} 429s, peak {fake.peak_in_window} "
        f"per {INTERVAL_MS} ms (limit {LIMIT}), search peak {fake.peak_search_in_second}/s"
    )
    assert fake.rate_limited == 0
    assert fake.peak_in_window <= LIMIT
    assert fake.peak_search_in_second <= SEARCH_PER_SECOND
    assert len(fake.requests_to("/search")) >= 2 * CHANGED // 10
    with engine.connect() as conn:
        accounts = conn.execute(text("SELECT DISTINCT account FROM rate_budget")).scalars().all()
    assert len(accounts) == 1
    assert accounts[0].endswith("portal:4242")
