"""The sync engine against every connector's local fake, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from sqlmodel import Session

from connectors.base import RecordKind, Runtime
from connectors.retry import RetryPolicy
from service.sync.engine import SyncAlreadyRunning, SyncEngine
from service.sync.models import (
    Connector,
    RunStatus,
    RunTrigger,
    SyncedRecord,
    SyncRun,
    SyncState,
)
from service.sync.secrets import plain
from service.workspaces.models import Workspace
from tests.conftest import make_settings
from tests.connectors.harness import SourceHarness
from tests.factories import CREATED_AT
from tests.harnesses import HARNESS_MODULES, open_harness


class Crash(Exception):
    """Stands for a process dying between two pages."""


@pytest.fixture(params=sorted(HARNESS_MODULES))
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SourceHarness]:
    with open_harness(request.param, tmp_path) as h:
        yield h


def make_workspace(engine: Engine, slug: str = "acme") -> int:
    with Session(engine) as session:
        ws = Workspace(slug=slug, name=slug.title(), created_at=CREATED_AT)
        session.add(ws)
        session.commit()
        assert ws.id is not None
        return ws.id


def store_connector(engine: Engine, harness: SourceHarness, **overrides: Any) -> int:
    """A connector row configured exactly like the harness's connector."""
    vendor = harness.connector()
    with Session(engine) as session:
        values: dict[str, Any] = {
            "workspace_id": make_workspace(engine),
            "name": f"{harness.name} test",
            "type": vendor.type_name,
            "config": vendor.config.model_dump(mode="json"),
            "secrets": plain(vendor.secrets),
            "kinds": [k.value for k in harness.kinds],
            "created_at": CREATED_AT,
        }
        row = Connector(**(values | overrides))
        session.add(row)
        session.commit()
        assert row.id is not None
        return row.id


class SourceSync(SyncEngine):
    """The engine, with the connector row's config refreshed from the harness before each
    run (the demo's "now" lives in its config, and moves when the harness mutates)."""

    harness: SourceHarness

    def run(self, connector_id: int, trigger: RunTrigger = RunTrigger.manual) -> SyncRun:
        with Session(self.engine) as session:
            row = session.get(Connector, connector_id)
            assert row is not None
            row.config = self.harness.connector().config.model_dump(mode="json")
            session.commit()
        return super().run(connector_id, trigger)


def make_engine_for(
    engine: Engine, database_url: str, harness: SourceHarness, **kwargs: Any
) -> SourceSync:
    def runtime(_row: Connector) -> Runtime:
        base = harness.connector().runtime
        return Runtime(
            retry=RetryPolicy(max_attempts=3, sleep=lambda _s: None),
            timeout_seconds=5,
            ca_bundle=base.ca_bundle,
            page_size=base.page_size,
            clock=harness.now,
            allowed_hosts=base.allowed_hosts,
        )

    settings = make_settings(database_url, sync_overlap_seconds=60, sync_reconcile_seconds=0)
    # The engine's "now" is the source's clock, as in production where both are real time.
    sync = SourceSync(engine, settings, clock=harness.now, runtime_factory=runtime, **kwargs)
    sync.harness = harness
    return sync


def stored_ids(engine: Engine, connector_id: int, kind: RecordKind) -> list[str]:
    """Ids stored as live (not deleted), with repeats if a record were stored twice."""
    with Session(engine) as session:
        rows = session.execute(
            select(SyncedRecord.source_id).where(  # type: ignore[call-overload]
                SyncedRecord.connector_id == connector_id,
                SyncedRecord.kind == kind.value,
                SyncedRecord.deleted.is_(False),  # type: ignore[attr-defined]
            )
        )
        return [r[0] for r in rows]


def assert_equals_source(
    engine: Engine,
    connector_id: int,
    harness: SourceHarness,
    kinds: tuple[RecordKind, ...] | None = None,
) -> None:
    for kind in kinds or harness.kinds:
        ids = stored_ids(engine, connector_id, kind)
        assert len(ids) == len(set(ids)), "a record is stored twice"
        assert set(ids) == harness.live_ids(kind), f"{kind} differs from the source"


def test_given_a_seeded_source_when_full_sync_then_stored_records_equal_the_source(
    engine: Engine, database_url: str, harness: SourceHarness
) -> None:
    for kind in harness.kinds:
        harness.seed(kind, 30)
    harness.set_page_size(8)
    connector_id = store_connector(engine, harness)
    run = make_engine_for(engine, database_url, harness).run(connector_id)
    assert run.status == RunStatus.succeeded, run.error_message
    assert_equals_source(engine, connector_id, harness)
    assert run.inserted == sum(len(harness.live_ids(k)) for k in harness.kinds)
    assert run.fetched >= run.inserted
    assert run.details is not None
    assert all(k["pages"] >= 1 for k in run.details["kinds"].values())


def test_given_a_synced_source_when_records_change_then_incremental_sync_applies_them(
    engine: Engine, database_url: str, harness: SourceHarness
) -> None:
    for kind in harness.kinds:
        harness.seed(kind, 20)
    connector_id = store_connector(engine, harness)
    sync = make_engine_for(engine, database_url, harness)
    assert sync.run(connector_id).status == RunStatus.succeeded
    for kind in harness.kinds:
        harness.mutate(kind)
    second = sync.run(connector_id)
    assert second.status == RunStatus.succeeded, second.error_message
    assert_equals_source(engine, connector_id, harness)
    assert second.inserted + second.updated + second.deleted > 0
    # The window starts at the previous end minus the overlap, not at the beginning.
    assert second.details is not None
    for kind in harness.kinds:
        window = second.details["kinds"][kind.value]
        assert window["window_start"] > "2000"
    third = sync.run(connector_id)
    assert (third.inserted, third.updated, third.deleted) == (0, 0, 0)
    assert_equals_source(engine, connector_id, harness)


def test_given_a_crash_after_page_k_when_the_next_run_resumes_then_nothing_is_lost_or_doubled(
    engine: Engine, database_url: str, harness: SourceHarness
) -> None:
    kind = harness.kinds[0]
    harness.seed(kind, 40)
    harness.set_page_size(6)
    connector_id = store_connector(engine, harness, kinds=[kind.value])

    def crash_on_page_3(_kind: str, page: int) -> None:
        if page == 3:
            raise Crash("killed between pages")

    crashed = make_engine_for(engine, database_url, harness, after_commit=crash_on_page_3)
    run = crashed.run(connector_id)
    assert run.status == RunStatus.failed
    assert run.error_class == "internal"
    partial = stored_ids(engine, connector_id, kind)
    assert 0 < len(partial) < len(harness.live_ids(kind))
    with Session(engine) as session:
        state = session.get(SyncState, (connector_id, kind.value))
        assert state is not None
        assert state.window_end is not None, "the interrupted window is kept for resuming"
    resumed = make_engine_for(engine, database_url, harness).run(connector_id)
    assert resumed.status == RunStatus.succeeded, resumed.error_message
    assert resumed.details is not None
    assert resumed.details["kinds"][kind.value]["resumed"] is True
    assert_equals_source(engine, connector_id, harness, (kind,))


def test_given_equal_timestamps_across_pages_when_syncing_then_none_is_missed(
    engine: Engine, database_url: str, harness: SourceHarness
) -> None:
    kind = harness.kinds[0]
    harness.seed(kind, 17)
    harness.stamp_all_equal(kind)
    harness.set_page_size(5)
    connector_id = store_connector(engine, harness, kinds=[kind.value])
    run = make_engine_for(engine, database_url, harness).run(connector_id)
    assert run.status == RunStatus.succeeded, run.error_message
    assert_equals_source(engine, connector_id, harness, (kind,))


def test_given_a_failing_page_when_the_run_fails_then_records_stay_as_last_committed(
    engine: Engine, database_url: str, harness: SourceHarness
) -> None:
    kind = harness.kinds[0]
    harness.seed(kind, 24)
    harness.set_page_size(5)
    connector_id = store_connector(engine, harness, kinds=[kind.value])
    committed: list[int] = []

    def crash_on_page_2(_kind: str, page: int) -> None:
        committed.append(page)
        if page == 2:
            raise Crash("boom")

    run = make_engine_for(engine, database_url, harness, after_commit=crash_on_page_2).run(
        connector_id
    )
    assert run.status == RunStatus.failed
    with Session(engine) as session:
        count = session.execute(
            select(func.count()).where(SyncedRecord.connector_id == connector_id)  # type: ignore[arg-type]
        ).scalar_one()
    # Exactly the records of the two committed pages are stored (no half page).
    assert committed == [1, 2]
    assert count == run.fetched
    assert 0 < count < 24


def test_given_a_held_lease_when_a_second_worker_syncs_then_it_is_refused(
    engine: Engine, database_url: str, harness: SourceHarness
) -> None:
    kind = harness.kinds[0]
    harness.seed(kind, 12)
    harness.set_page_size(4)
    connector_id = store_connector(engine, harness, kinds=[kind.value])
    other = make_engine_for(engine, database_url, harness)
    refused: list[BaseException] = []

    def second_worker_tries(_kind: str, page: int) -> None:
        if page == 1:
            try:
                other.run(connector_id)
            except SyncAlreadyRunning as exc:
                refused.append(exc)

    run = make_engine_for(engine, database_url, harness, after_commit=second_worker_tries).run(
        connector_id
    )
    assert run.status == RunStatus.succeeded
    assert len(refused) == 1
    assert_equals_source(engine, connector_id, harness, (kind,))
    # The lease is released afterwards: a later run goes through.
    assert other.run(connector_id).status == RunStatus.succeeded


@pytest.fixture(params=sorted(set(HARNESS_MODULES) - {"demo"}))
def vendor_harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SourceHarness]:
    """Harnesses of connectors that have secrets (the demo has none)."""
    with open_harness(request.param, tmp_path) as h:
        yield h


def test_given_an_error_quoting_a_secret_when_the_run_fails_then_the_secret_is_redacted(
    engine: Engine, database_url: str, vendor_harness: SourceHarness
) -> None:
    from connectors.errors import AuthError

    harness = vendor_harness
    connector_id = store_connector(engine, harness)
    vendor = harness.connector()
    secret_values = [str(v) for v in plain(vendor.secrets).values() if v]
    assert secret_values
    leaked = secret_values[0]

    def leak(_kind: str, _page: int) -> None:
        raise AuthError(f"login refused for token {leaked}")

    for kind in harness.kinds:
        harness.seed(kind, 3)
    run = make_engine_for(engine, database_url, harness, after_commit=leak).run(connector_id)
    assert run.status == RunStatus.failed
    assert run.error_class == "auth"
    assert run.error_message is not None
    assert leaked not in run.error_message
    assert "***" in run.error_message


@pytest.fixture
def salesforce(tmp_path: Path) -> Iterator[SourceHarness]:
    with open_harness("salesforce", tmp_path) as h:
        yield h


def test_given_a_malformed_vendor_page_when_syncing_then_the_run_fails_and_records_stay_intact(
    engine: Engine, database_url: str, salesforce: SourceHarness
) -> None:
    kind = RecordKind.lead
    salesforce.seed(kind, 30)
    salesforce.set_page_size(10)
    connector_id = store_connector(engine, salesforce, kinds=[kind.value])
    sync = make_engine_for(engine, database_url, salesforce)
    assert sync.run(connector_id).status == RunStatus.succeeded
    with Session(engine) as session:
        before = {
            r.source_id: (r.modified_at, r.status, r.raw)
            for r in session.scalars(select(SyncedRecord))
        }
    salesforce.mutate(kind)
    # The next read's first batch comes back truncated.
    truncated = b'{"totalSize": 30, "done": false, "records": [{"Id"'
    salesforce.fake.malformed(truncated, endpoint="query")  # type: ignore[attr-defined]
    run = sync.run(connector_id)
    assert run.status == RunStatus.failed
    assert run.error_class == "source_data"
    with Session(engine) as session:
        after = {
            r.source_id: (r.modified_at, r.status, r.raw)
            for r in session.scalars(select(SyncedRecord))
        }
    assert after == before, "a malformed page must not change stored records"
    # Once the vendor answers properly again, the next run catches up exactly.
    assert sync.run(connector_id).status == RunStatus.succeeded
    assert_equals_source(engine, connector_id, salesforce, (kind,))


def test_given_a_request_budget_when_spent_then_the_run_stops_and_the_next_one_resumes(
    engine: Engine, database_url: str, salesforce: SourceHarness
) -> None:
    kind = RecordKind.lead
    salesforce.seed(kind, 50)
    salesforce.set_page_size(10)
    config = salesforce.connector().config.model_dump(mode="json") | {"request_budget": 3}
    connector_id = store_connector(engine, salesforce, kinds=[kind.value], config=config)

    def runtime(row: Connector) -> Runtime:
        from service.sync.engine import runtime_for

        budgeted = runtime_for(row, make_settings(database_url), salesforce.now)
        budgeted.ca_bundle = salesforce.connector().runtime.ca_bundle
        return budgeted

    settings = make_settings(database_url)
    sync = SyncEngine(engine, settings, clock=salesforce.now, runtime_factory=runtime)
    run = sync.run(connector_id)
    assert run.status == RunStatus.failed
    assert run.error_class == "request_budget_exceeded"
    assert run.requests == 3
    assert run.details is not None
    assert run.details["quota"] == {"used": 3, "limit": 3}
    partial = stored_ids(engine, connector_id, kind)
    assert 0 < len(partial) < 50
    runs = 1
    while sync.run(connector_id).status == RunStatus.failed:
        runs += 1
        assert runs < 20, "each budgeted run must make progress"
    assert_equals_source(engine, connector_id, salesforce, (kind,))
