"""HubSpot id reconciliation through the sync engine: a GDPR-deleted contact (which leaves
no archived copy) disappears from the stored records and from the key result."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from connectors.base import RecordKind
from service.mappings.service import bind
from service.mappings.spec import parse_spec
from service.okr.models import KeyResult
from service.sync.engine import SyncEngine
from service.sync.models import Connector, RunStatus, SyncedRecord
from service.workspaces.models import Workspace
from tests.conftest import make_settings
from tests.connectors.hubspot.harness import HubSpotHarness, make_harness
from tests.service.mappings.factories import make_key_result
from tests.service.sync.test_engine import harness_runtime, store_connector, stored_ids


@pytest.fixture
def hubspot(tmp_path: Path) -> Iterator[HubSpotHarness]:
    with make_harness(tmp_path) as harness:
        yield harness


def test_given_a_gdpr_deleted_contact_when_reconciliation_is_due_then_it_leaves_records_and_kr(
    engine: Engine, database_url: str, hubspot: HubSpotHarness
) -> None:
    hubspot.seed(RecordKind.contact, 6)
    config = hubspot.config(reconcile_interval_seconds=3_600).model_dump(mode="json")
    connector_id = store_connector(engine, hubspot, kinds=["contact"], config=config)
    runtime = harness_runtime(hubspot)

    # The service's default would reconcile on every run: the connector's own hour wins.
    settings = make_settings(database_url, sync_reconcile_seconds=0)
    sync = SyncEngine(engine, settings, clock=hubspot.now, runtime_factory=runtime)
    assert sync.run(connector_id).status == RunStatus.succeeded
    with Session(engine) as session:
        row = session.get(Connector, connector_id)
        assert row is not None
        ws = session.get(Workspace, row.workspace_id)
        assert ws is not None
        kr = make_key_result(session, ws, start=date(2023, 1, 1), end=date(2030, 1, 1))
        spec = parse_spec({"type": "count", "connector_id": connector_id, "kind": "contact"})
        bind(session, ws, kr, spec, hubspot.now())
        assert kr.value == 6
        session.commit()
        kr_id = kr.id
    assert len(stored_ids(engine, connector_id, RecordKind.contact)) == 6

    gone = sorted(hubspot.fake.live_ids("contacts"))[2]
    hubspot.fake.gdpr_delete("contacts", int(gone))
    # Within the hour: an incremental run cannot see a delete that left no trace.
    assert sync.run(connector_id).status == RunStatus.succeeded
    assert gone in stored_ids(engine, connector_id, RecordKind.contact)

    hubspot.fake.tick(3_600_000)
    before = len(hubspot.fake.requests)
    run = sync.run(connector_id)

    assert run.status == RunStatus.succeeded, run.error_message
    stored = stored_ids(engine, connector_id, RecordKind.contact)
    assert gone not in stored
    assert set(stored) == hubspot.fake.live_ids("contacts")
    # The reconciliation listed ids only: every live list request asked for hs_object_id
    # alone (the incremental window before it went through search).
    listings = [
        r
        for r in hubspot.fake.requests[before:]
        if r.method == "GET" and dict(r.query).get("archived", "").lower() == "false"
    ]
    assert listings
    assert all([v for k, v in r.query if k == "properties"] == ["hs_object_id"] for r in listings)
    with Session(engine) as session:
        kr_after = session.get(KeyResult, kr_id)
        assert kr_after is not None
        assert kr_after.value == 5


def test_given_a_tombstone_of_a_live_contact_when_ids_are_reconciled_then_it_is_live_again(
    engine: Engine, database_url: str, hubspot: HubSpotHarness
) -> None:
    hubspot.seed(RecordKind.contact, 4)
    config = hubspot.config(reconcile_interval_seconds=3_600).model_dump(mode="json")
    connector_id = store_connector(engine, hubspot, kinds=["contact"], config=config)
    runtime = harness_runtime(hubspot)

    sync = SyncEngine(
        engine, make_settings(database_url), clock=hubspot.now, runtime_factory=runtime
    )
    assert sync.run(connector_id).status == RunStatus.succeeded
    # A tombstone the listing contradicts (say, an earlier listing that missed the contact):
    # reading ids alone stores no record, so the listing itself must bring it back.
    wrong = sorted(hubspot.fake.live_ids("contacts"))[1]
    with Session(engine) as session:
        record = session.exec(
            select(SyncedRecord).where(
                SyncedRecord.connector_id == connector_id, SyncedRecord.source_id == wrong
            )
        ).one()
        record.deleted = True
        session.commit()
    assert wrong not in stored_ids(engine, connector_id, RecordKind.contact)

    hubspot.fake.tick(3_600_000)
    run = sync.run(connector_id)

    assert run.status == RunStatus.succeeded, run.error_message
    assert set(stored_ids(engine, connector_id, RecordKind.contact)) == hubspot.fake.live_ids(
        "contacts"
    )
    assert run.details["kinds"]["contact"]["updated"] == 1
