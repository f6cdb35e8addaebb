"""Vendor scale through the sync engine: deletes that leave no row (Salesforce purges via
the delete log and id reconciliation, Delighted deletes) disappear from stored records and
from the key results reading them; a crashed Bulk initial sync resumes at its last whole
monthly slice; a window answered QUERY_TIMEOUT is synced in halves. Against the vendors'
local fakes, on SQLite or PostgreSQL."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from sqlalchemy import Engine, select
from sqlmodel import Session

from connectors.base import Connector as VendorConnector
from connectors.base import RecordKind, Runtime
from connectors.retry import RetryPolicy
from service.mappings.service import bind
from service.mappings.spec import parse_spec
from service.okr.models import KeyResult, Unit
from service.sync.engine import SyncEngine
from service.sync.models import Connector, RunStatus, SyncedRecord, SyncRun
from service.sync.secrets import plain
from service.workspaces.models import Workspace
from tests.conftest import make_settings
from tests.connectors.delighted.harness import DelightedHarness
from tests.connectors.delighted.harness import make_harness as delighted_harness
from tests.connectors.salesforce.harness import SalesforceHarness
from tests.connectors.salesforce.harness import make_harness as salesforce_harness
from tests.service.mappings.factories import make_key_result, make_workspace

_BULK_START = re.compile(r"SystemModstamp >= (\S+)")


class Crash(Exception):
    """Stands for a process dying between two pages."""


@pytest.fixture
def sf(tmp_path: Path) -> Iterator[SalesforceHarness]:
    with salesforce_harness(tmp_path) as harness:
        yield harness


@pytest.fixture
def delighted(tmp_path: Path) -> Iterator[DelightedHarness]:
    with delighted_harness(tmp_path) as harness:
        yield harness


def add_connector(engine: Engine, vendor: VendorConnector, kinds: list[str]) -> tuple[int, int]:
    """A workspace and a connector row configured like `vendor`; their ids."""
    with Session(engine) as session:
        ws = make_workspace(session)
        row = Connector(
            workspace_id=ws.id,  # type: ignore[arg-type]
            name=f"{vendor.type_name} test",
            type=vendor.type_name,
            config=vendor.config.model_dump(mode="json"),
            secrets=plain(vendor.secrets),
            kinds=kinds,
            created_at=datetime(2026, 1, 1, tzinfo=UTC),
        )
        session.add(row)
        session.commit()
        assert ws.id is not None
        assert row.id is not None
        return ws.id, row.id


def sync_engine(
    engine: Engine,
    database_url: str,
    vendor: VendorConnector,
    now: Callable[[], datetime],
    *,
    reconcile_seconds: int = 86400,
    after_commit: Callable[[str, int], None] | None = None,
    budget: int | None = None,
) -> SyncEngine:
    """The engine with `now` as its clock and `vendor`'s TLS/host settings."""

    def runtime(_row: Connector) -> Runtime:
        return Runtime(
            retry=RetryPolicy(max_attempts=2, sleep=lambda _s: None, request_budget=budget),
            timeout_seconds=5,
            ca_bundle=vendor.runtime.ca_bundle,
            clock=now,
            allowed_hosts=vendor.runtime.allowed_hosts,
        )

    settings = make_settings(
        database_url, sync_overlap_seconds=60, sync_reconcile_seconds=reconcile_seconds
    )
    return SyncEngine(
        engine, settings, clock=now, runtime_factory=runtime, after_commit=after_commit
    )


def live_ids(engine: Engine, connector_id: int, kind: RecordKind) -> set[str]:
    with Session(engine) as session:
        rows = session.execute(
            select(SyncedRecord.source_id).where(  # type: ignore[call-overload]
                SyncedRecord.connector_id == connector_id,
                SyncedRecord.kind == kind.value,
                SyncedRecord.deleted.is_(False),  # type: ignore[attr-defined]
            )
        )
        return {r[0] for r in rows}


def bind_key_result(
    engine: Engine, ws_id: int, spec: dict[str, Any], unit: Unit, now: datetime
) -> int:
    """A key result bound to `spec` at `now` (the source's clock, like the syncs after it)."""
    with Session(engine, expire_on_commit=False) as session:
        ws = session.get(Workspace, ws_id)
        assert ws is not None
        kr = make_key_result(session, ws, unit=unit)
        bind(session, ws, kr, parse_spec(spec), now)
        session.commit()
        assert kr.id is not None
        return kr.id


def kr_value(engine: Engine, kr_id: int) -> float | None:
    with Session(engine) as session:
        kr = session.get(KeyResult, kr_id)
        assert kr is not None
        return kr.value


def succeeded(run: SyncRun) -> SyncRun:
    assert run.status == RunStatus.succeeded, run.error_message
    return run


# ----------------------------------------------------------------------------- Salesforce


def test_given_lead_purged_without_a_trace_when_reconciled_then_it_leaves_records_and_key_result(
    engine: Engine, database_url: str, sf: SalesforceHarness
) -> None:
    ids = sf.fake.seed("Lead", 6)
    vendor = sf.connector()
    ws_id, connector_id = add_connector(engine, vendor, ["lead"])
    sync = sync_engine(engine, database_url, vendor, sf.now, reconcile_seconds=3600)
    succeeded(sync.run(connector_id))
    kr_id = bind_key_result(
        engine,
        ws_id,
        {"type": "count", "connector_id": connector_id, "kind": "lead"},
        Unit.count,
        sf.now(),
    )
    assert kr_value(engine, kr_id) == 6

    sf.fake.tick(60)
    # Hard-deleted and gone from the delete log too: no row, no tombstone, no log entry.
    sf.fake.purge("Lead", ids[0], logged=False)
    sf.fake.tick(60)
    succeeded(sync.run(connector_id))
    # Not due yet (interval 1 h): nothing tells the engine the lead is gone.
    assert ids[0] in live_ids(engine, connector_id, RecordKind.lead)

    sf.fake.tick(3600)
    logged = len(sf.fake.log)
    run = succeeded(sync.run(connector_id))

    assert live_ids(engine, connector_id, RecordKind.lead) == sf.fake.live_ids("Lead")
    assert ids[0] not in sf.fake.live_ids("Lead")
    assert run.deleted == 1
    assert kr_value(engine, kr_id) == 5
    # The reconciliation selected ids alone, under no window (/query: live records only).
    listings = [
        entry.path
        for entry in sf.fake.log[logged:]
        if entry.endpoint == "query"
        and parse_qs(entry.query)["q"] == ["SELECT Id FROM Lead ORDER BY Id"]
    ]
    assert len(listings) == 1
    assert listings[0].rstrip("/").endswith("/query")


def test_given_lead_deleted_and_purged_when_next_sync_reads_the_delete_log_then_it_leaves(
    engine: Engine, database_url: str, sf: SalesforceHarness
) -> None:
    ids = sf.fake.seed("Opportunity", 5)
    sf.fake.update("Opportunity", ids[0], StageName="Closed Won", IsClosed=True, IsWon=True)
    # Reconciliation switched off for this connector: only the delete log can tell.
    vendor = sf.connector(config=sf.config(reconcile=False))
    ws_id, connector_id = add_connector(engine, vendor, ["opportunity"])
    sync = sync_engine(engine, database_url, vendor, sf.now, reconcile_seconds=0)
    succeeded(sync.run(connector_id))
    spec = {
        "type": "count",
        "connector_id": connector_id,
        "kind": "opportunity",
        "filters": [{"field": "is_won", "op": "eq", "value": True}],
    }
    kr_id = bind_key_result(engine, ws_id, spec, Unit.count, sf.now())
    won = {i for i in sf.fake.live_ids("Opportunity") if sf.fake.record("Opportunity", i)["IsWon"]}
    assert kr_value(engine, kr_id) == len(won)

    sf.fake.tick(60)
    sf.fake.delete("Opportunity", ids[0])
    sf.fake.purge("Opportunity", ids[0])  # the Recycle Bin emptied before the next sync
    sf.fake.tick(60)
    run = succeeded(sync.run(connector_id))

    assert live_ids(engine, connector_id, RecordKind.opportunity) == sf.fake.live_ids("Opportunity")
    assert run.deleted == 1
    assert sf.fake.requests_to("get_deleted") == 2
    assert kr_value(engine, kr_id) == len(won) - 1


def test_given_bulk_initial_sync_crashing_after_a_slice_when_rerun_then_resumes_at_the_next(
    engine: Engine, database_url: str, sf: SalesforceHarness
) -> None:
    by_month: dict[int, list[str]] = {}
    for month in (1, 2, 3, 4):
        for day in (2, 20):
            at = datetime(2026, month, day, 8, tzinfo=UTC)
            by_month.setdefault(month, []).append(sf.fake.insert("Lead", at, LastName="B"))
    sf.fake.tick(150 * 86400)
    # Reconciliation off: its full read would add Bulk jobs of its own to the log.
    vendor = sf.connector(config=sf.config(bulk_threshold=1, reconcile=False))
    _ws, connector_id = add_connector(engine, vendor, ["lead"])

    def crash_after_second_slice(kind: str, pages: int) -> None:
        if pages == 2:
            raise Crash("the worker died")

    crashing = sync_engine(
        engine, database_url, vendor, sf.now, after_commit=crash_after_second_slice
    )
    first = crashing.run(connector_id)
    assert first.status == RunStatus.failed
    assert live_ids(engine, connector_id, RecordKind.lead) == set(by_month[1] + by_month[2])
    logged = len(sf.fake.log)

    rerun = succeeded(sync_engine(engine, database_url, vendor, sf.now).run(connector_id))

    starts = [
        _BULK_START.search(entry.soql).group(1)  # type: ignore[union-attr]
        for entry in sf.fake.log[logged:]
        if entry.endpoint == "bulk_create"
    ]
    # Slices 1 (to February) and 2 (February) were committed: the rerun starts at March.
    assert starts == ["2026-03-01T00:00:00+00:00", "2026-04-01T00:00:00+00:00"]
    assert rerun.details is not None
    assert rerun.details["kinds"]["lead"]["resumed"] is True
    assert live_ids(engine, connector_id, RecordKind.lead) == sf.fake.live_ids("Lead")


def test_given_query_timeout_on_an_incremental_window_when_syncing_then_every_record_is_stored(
    engine: Engine, database_url: str, sf: SalesforceHarness
) -> None:
    sf.fake.seed("Lead", 10)
    vendor = sf.connector()
    _ws, connector_id = add_connector(engine, vendor, ["lead"])
    sync = sync_engine(engine, database_url, vendor, sf.now)
    succeeded(sync.run(connector_id))
    start = sf.fake.tick(60)
    for i in range(40):
        sf.fake.insert("Lead", start + timedelta(minutes=i), LastName=f"T{i}")
    sf.fake.tick(41 * 60)
    sf.fake.query_timeout_above_seconds = 600  # 10 minutes of SystemModstamp at most
    queries_before = sf.fake.requests_to("query")

    run = succeeded(sync.run(connector_id))

    assert run.inserted == 40
    assert live_ids(engine, connector_id, RecordKind.lead) == sf.fake.live_ids("Lead")
    # One query would do without timeouts: the window timed out, then was read in parts.
    assert sf.fake.requests_to("query") - queries_before > 4


def test_given_a_budget_too_small_for_a_full_listing_then_the_sync_succeeds_and_says_so(
    engine: Engine, database_url: str, sf: SalesforceHarness
) -> None:
    ids = sf.fake.seed("Lead", 5)
    vendor = sf.connector()
    _ws, connector_id = add_connector(engine, vendor, ["lead"])
    # 4 requests: login, COUNT(), the query and the delete log of a first sync; an
    # incremental run needs 3, leaving 1 for a listing that needs 3 more.
    sync = sync_engine(engine, database_url, vendor, sf.now, reconcile_seconds=0, budget=4)
    first = succeeded(sync.run(connector_id))
    assert first.requests == 4
    sf.fake.tick(60)
    sf.fake.purge("Lead", ids[0], logged=False)
    sf.fake.tick(60)

    run = succeeded(sync.run(connector_id))

    assert run.details is not None
    assert "request budget of 4" in run.details["kinds"]["lead"]["reconcile_incomplete"]
    # Not found this time: the listing did not finish (the run's details say why).
    assert ids[0] in live_ids(engine, connector_id, RecordKind.lead)


# ----------------------------------------------------------------------------- Delighted


def test_given_delighted_answer_deleted_when_reconciled_by_default_then_nps_no_longer_counts_it(
    engine: Engine, database_url: str, delighted: DelightedHarness
) -> None:
    fake = delighted.fake
    for score in (10, 9, 2, 10):
        fake.tick()
        fake.add(score=score, updated_at=None)
    detractor = next(i for i, r in fake.responses.items() if r["score"] == 2)
    vendor = delighted.make_connector()
    assert vendor.config.reconcile is True  # on by default
    ws_id, connector_id = add_connector(engine, vendor, ["survey_response"])
    sync = sync_engine(engine, database_url, vendor, delighted.now, reconcile_seconds=0)
    succeeded(sync.run(connector_id))
    kr_id = bind_key_result(
        engine, ws_id, {"type": "nps", "connector_id": connector_id}, Unit.score, delighted.now()
    )
    assert kr_value(engine, kr_id) == 50  # 3 promoters, 1 detractor of 4

    fake.tick()
    fake.delete(detractor)
    fake.tick()
    run = succeeded(sync.run(connector_id))

    assert live_ids(engine, connector_id, RecordKind.survey_response) == set(fake.responses)
    assert run.deleted == 1
    assert kr_value(engine, kr_id) == 100
