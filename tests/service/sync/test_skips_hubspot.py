"""A HubSpot page with one record the connector cannot normalise, through the sync engine
into the database: the other records are stored, the run succeeds and reports the skipped
record with its id and reason, on the full (list) window and on incremental (search) ones."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from connectors.base import RecordKind
from service.sync.engine import SyncEngine
from service.sync.models import RunStatus
from tests.conftest import make_settings
from tests.connectors.hubspot.harness import HubSpotHarness, make_harness
from tests.service.sync.test_engine import harness_runtime, store_connector, stored_ids


@pytest.fixture
def hubspot(tmp_path: Path) -> Iterator[HubSpotHarness]:
    with make_harness(tmp_path) as harness:
        yield harness


def test_given_one_unreadable_deal_per_window_when_syncing_then_the_rest_is_stored_and_skips_reported(  # noqa: E501
    engine: Engine, database_url: str, hubspot: HubSpotHarness
) -> None:
    hubspot.seed(RecordKind.deal, 5)
    bad = sorted(int(i) for i in hubspot.live_ids(RecordKind.deal))[1]
    hubspot.fake.corrupt("deals", bad, "amount", "1.000,50")
    connector_id = store_connector(
        engine, hubspot, kinds=["deal"], config=hubspot.config().model_dump(mode="json")
    )
    runtime = harness_runtime(hubspot)

    settings = make_settings(database_url, sync_overlap_seconds=60, sync_reconcile_seconds=86_400)
    sync = SyncEngine(engine, settings, clock=hubspot.now, runtime_factory=runtime)

    # First run: the whole history through the list endpoint. The clock then moves past the
    # next run's overlap, so that run reads only what changes after this one.
    hubspot.fake.tick(120_000)
    run = sync.run(connector_id)

    assert run.status == RunStatus.succeeded, run.error_message
    assert set(stored_ids(engine, connector_id, RecordKind.deal)) == (
        hubspot.live_ids(RecordKind.deal) - {str(bad)}
    )
    report = run.details["kinds"]["deal"]
    assert report["skipped"] == 1
    assert report["skipped_records"] == [
        {"id": str(bad), "reason": f"HubSpot deal {bad}: amount is not a number: '1.000,50'"}
    ]

    # Incremental run (search): a new deal with a bad close date next to a good one.
    worse = int(hubspot.add(RecordKind.deal))
    hubspot.fake.corrupt("deals", worse, "closedate", "end of quarter")
    good = hubspot.add(RecordKind.deal)

    run = sync.run(connector_id)

    assert run.status == RunStatus.succeeded, run.error_message
    stored = set(stored_ids(engine, connector_id, RecordKind.deal))
    assert good in stored
    assert str(worse) not in stored
    report = run.details["kinds"]["deal"]
    assert report["skipped"] == 1
    assert report["skipped_records"][0]["id"] == str(worse)
    assert "closedate is not a timestamp" in report["skipped_records"][0]["reason"]
