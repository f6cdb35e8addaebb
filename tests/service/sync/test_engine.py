"""The sync engine against every connector's local fake, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from sqlmodel import Session

from connectors.base import Record, RecordKind, Runtime, Window
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

#: Wider than any source's data.
EVERYTHING = Window(datetime(1970, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
#: Every stored column that carries the source's content (all but ids and bookkeeping).
CONTENT_FIELDS = (
    "created_at",
    "modified_at",
    "close_date",
    "status",
    "stage",
    "is_closed",
    "is_won",
    "amount_e4",
    "currency",
    "lead_source",
    "owner",
    "deal_type",
    "score",
    "email",
    "raw",
)


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


def harness_runtime(harness: SourceHarness) -> Callable[[Connector], Runtime]:
    """The engine's runtime factory for connectors on `harness`'s fake: its clock, TLS and
    hosts, three quick attempts per request."""

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

    return runtime


def make_engine_for(
    engine: Engine,
    database_url: str,
    harness: SourceHarness,
    reconcile_seconds: int = 0,
    **kwargs: Any,
) -> SourceSync:
    runtime = harness_runtime(harness)
    settings = make_settings(
        database_url, sync_overlap_seconds=60, sync_reconcile_seconds=reconcile_seconds
    )
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


def stored_content(
    engine: Engine, connector_id: int, kind: RecordKind
) -> dict[str, dict[str, Any]]:
    """Content of the live stored records of `kind`, by source id."""
    with Session(engine) as session:
        rows = session.scalars(
            select(SyncedRecord).where(  # type: ignore[call-overload]
                SyncedRecord.connector_id == connector_id,
                SyncedRecord.kind == kind.value,
                SyncedRecord.deleted.is_(False),  # type: ignore[attr-defined]
            )
        )
        return {r.source_id: {f: getattr(r, f) for f in CONTENT_FIELDS} for r in rows}


def record_content(record: Record) -> dict[str, Any]:
    """What the engine must store for `record`, computed here, not with the engine's code."""
    content = {f: getattr(record, f) for f in CONTENT_FIELDS if f not in ("amount_e4", "raw")}
    amount_e4 = None
    if record.amount is not None:
        scaled = record.amount * 10_000
        assert scaled == scaled.to_integral_value(), "test data amounts have 4 decimals at most"
        amount_e4 = int(scaled)
    # The raw fields as JSON gives them back (the column is JSON).
    raw = json.loads(json.dumps(dict(record.raw)))
    return content | {"amount_e4": amount_e4, "raw": raw}


def source_content(harness: SourceHarness, kind: RecordKind) -> dict[str, dict[str, Any]]:
    """Ground truth: every live record's content, from a fresh full read of the source."""
    newest: dict[str, Record] = {}
    for page in harness.connector().read(kind, EVERYTHING):
        for record in page.records:
            seen = newest.get(record.source_id)
            if seen is None or record.modified_at >= seen.modified_at:
                newest[record.source_id] = record
    return {i: record_content(r) for i, r in newest.items() if not r.deleted}


def assert_equals_source(
    engine: Engine,
    connector_id: int,
    harness: SourceHarness,
    kinds: tuple[RecordKind, ...] | None = None,
) -> None:
    """Stored live records equal the source's: same ids, every field and `raw` equal."""
    for kind in kinds or harness.kinds:
        ids = stored_ids(engine, connector_id, kind)
        assert len(ids) == len(set(ids)), "a record is stored twice"
        assert set(ids) == harness.live_ids(kind), f"{kind} differs from the source"
        stored = stored_content(engine, connector_id, kind)
        source = source_content(harness, kind)
        assert set(source) == harness.live_ids(kind), "the harness's truth disagrees with a read"
        for source_id, expected in source.items():
            differing = {
                f: (stored[source_id][f], value)
                for f, value in expected.items()
                if stored[source_id][f] != value
            }
            assert not differing, f"{kind} {source_id}: stored != source: {differing}"


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
    assert run.details is not None
    assert run.details["kinds"][kind.value]["pages"] >= 2, "a real resume needs pages behind it"
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


#: Content fields each harness's `edit` changes, per (connector, kind); others: modified_at
#: and raw (every version of a demo record differs in raw at least).
EDITED_FIELDS: dict[tuple[str, RecordKind], set[str]] = {
    ("salesforce", RecordKind.lead): {"modified_at", "status", "lead_source", "email", "raw"},
    ("salesforce", RecordKind.opportunity): {
        "modified_at",
        "stage",
        "is_closed",
        "is_won",
        "amount_e4",
        "raw",
    },
    ("hubspot", RecordKind.contact): {"modified_at", "status", "stage", "email", "raw"},
    ("hubspot", RecordKind.deal): {
        "modified_at",
        "stage",
        "is_closed",
        "is_won",
        "amount_e4",
        "raw",
    },
    ("hubspot", RecordKind.survey_response): {"modified_at", "score", "raw"},
    ("delighted", RecordKind.survey_response): {"modified_at", "score", "raw"},
}


def test_given_records_edited_at_the_source_when_syncing_incrementally_then_each_change_is_stored(
    engine: Engine, database_url: str, harness: SourceHarness
) -> None:
    for kind in harness.kinds:
        harness.seed(kind, 12)
    connector_id = store_connector(engine, harness)
    sync = make_engine_for(engine, database_url, harness)
    assert sync.run(connector_id).status == RunStatus.succeeded
    assert_equals_source(engine, connector_id, harness)
    edited = {kind: harness.edit(kind) for kind in harness.kinds}
    before = {
        kind: stored_content(engine, connector_id, kind)[source_id]
        for kind, source_id in edited.items()
    }
    run = sync.run(connector_id)
    assert run.status == RunStatus.succeeded, run.error_message
    assert run.updated >= len(edited)
    assert_equals_source(engine, connector_id, harness)
    for kind, source_id in edited.items():
        after = stored_content(engine, connector_id, kind)[source_id]
        changed = {f for f in CONTENT_FIELDS if after[f] != before[kind][f]}
        wanted = EDITED_FIELDS.get((harness.name, kind), {"modified_at", "raw"})
        assert wanted <= changed, f"{kind} {source_id}: not carried: {wanted - changed}"


@pytest.fixture
def hubspot(tmp_path: Path) -> Iterator[SourceHarness]:
    with open_harness("hubspot", tmp_path) as h:
        yield h


def test_given_search_index_lag_when_records_show_up_after_a_sync_then_the_overlap_reads_them(
    engine: Engine, database_url: str, hubspot: SourceHarness
) -> None:
    fake = hubspot.fake  # type: ignore[attr-defined]
    kind = RecordKind.deal
    hubspot.seed(kind, 8)
    fake.search_lag_ms = 5_000
    connector_id = store_connector(engine, hubspot, kinds=[kind.value])
    # No id reconciliation after the first run: its full listing (which does not lag)
    # would find the late records that this test shows the overlap finds.
    sync = make_engine_for(engine, database_url, hubspot, reconcile_seconds=86_400)
    assert sync.run(connector_id).status == RunStatus.succeeded
    assert_equals_source(engine, connector_id, hubspot)
    # Modified / created now, searchable only 5 s later: the next sync (1 s later) misses them.
    edited = hubspot.edit(kind)
    late = hubspot.add(kind)  # type: ignore[attr-defined]
    missed = sync.run(connector_id)
    assert missed.status == RunStatus.succeeded, missed.error_message
    stored = stored_content(engine, connector_id, kind)
    assert late not in stored, "premise: the new deal was not searchable yet"
    assert stored[edited]["stage"] != "closedwon", "premise: the edit was not searchable yet"
    assert missed.details is not None
    window_end = missed.details["kinds"][kind.value]["window_end"]
    assert (
        fake.objects["deals"][int(late)].updated_ms
        < datetime.fromisoformat(window_end).timestamp() * 1000
    ), "premise: the late deal is stamped behind the watermark"
    fake.tick(10_000)  # the search index catches up
    caught_up = sync.run(connector_id)
    assert caught_up.status == RunStatus.succeeded, caught_up.error_message
    assert caught_up.inserted == 1
    assert caught_up.updated == 1
    stored = stored_content(engine, connector_id, kind)
    assert stored[edited]["stage"] == "closedwon"
    assert (stored[edited]["is_closed"], stored[edited]["is_won"]) == (True, True)
    assert (
        stored[late]["raw"]["dealname"] == fake.objects["deals"][int(late)].properties["dealname"]
    )
    assert_equals_source(engine, connector_id, hubspot)


def test_given_a_commit_behind_the_watermark_when_the_next_sync_runs_then_the_overlap_reads_it(
    engine: Engine, database_url: str, salesforce: SourceHarness
) -> None:
    fake = salesforce.fake  # type: ignore[attr-defined]
    kind = RecordKind.opportunity
    salesforce.seed(kind, 10)
    connector_id = store_connector(engine, salesforce, kinds=[kind.value])
    sync = make_engine_for(engine, database_url, salesforce)
    assert sync.run(connector_id).status == RunStatus.succeeded
    assert_equals_source(engine, connector_id, salesforce)
    # A long transaction: its changes are stamped now but committed after the next sync.
    fake.tick()
    stamped = fake.now()
    target = next(
        i
        for i in sorted(fake.live_ids("Opportunity"))
        if not fake.record("Opportunity", i)["IsClosed"]
    )
    fake.update(
        "Opportunity",
        target,
        committed=False,
        StageName="Closed Won",
        IsClosed=True,
        IsWon=True,
        Amount=424242.42,
    )
    late = fake.insert(
        "Opportunity", committed=False, Name="Late deal", StageName="Prospecting", Amount=1000.5
    )
    fake.tick(5)
    missed = sync.run(connector_id)
    assert missed.status == RunStatus.succeeded, missed.error_message
    assert missed.details is not None
    window_end = datetime.fromisoformat(missed.details["kinds"][kind.value]["window_end"])
    assert stamped < window_end, "premise: the transaction's stamp is behind this sync's end"
    stored = stored_content(engine, connector_id, kind)
    assert late not in stored
    assert stored[target]["is_won"] is False
    assert sorted(fake.commit_pending()) == sorted([target, late])
    fake.tick()
    caught_up = sync.run(connector_id)
    assert caught_up.status == RunStatus.succeeded, caught_up.error_message
    assert (caught_up.inserted, caught_up.updated) == (1, 1)
    stored = stored_content(engine, connector_id, kind)
    assert stored[target]["stage"] == "Closed Won"
    assert (stored[target]["is_closed"], stored[target]["is_won"]) == (True, True)
    assert stored[target]["amount_e4"] == 4_242_424_200
    assert stored[target]["modified_at"] == stamped
    assert stored[late]["raw"]["Name"] == "Late deal"
    assert stored[late]["amount_e4"] == 10_005_000
    assert_equals_source(engine, connector_id, salesforce)


def test_given_a_comment_with_a_nul_character_when_syncing_then_every_record_is_stored_cleaned(
    engine: Engine, database_url: str, tmp_path: Path
) -> None:
    """PostgreSQL refuses U+0000 in text and jsonb: one such answer used to fail its page,
    valid answers included, on every run. It is removed, counted, and the page stored."""
    with open_harness("delighted", tmp_path) as harness:
        harness.seed(RecordKind.survey_response, 6)
        dirty = min(harness.live_ids(RecordKind.survey_response), key=int)
        harness.fake.tick()  # type: ignore[attr-defined]
        harness.fake.update(  # type: ignore[attr-defined]
            dirty, comment="Great\x00 tool", person_properties={"Plan\x00": "Pro\x00"}
        )
        connector_id = store_connector(engine, harness)
        run = make_engine_for(engine, database_url, harness).run(connector_id)
        assert run.status == RunStatus.succeeded, run.error_message
        ids = stored_ids(engine, connector_id, RecordKind.survey_response)
        assert sorted(ids) == sorted(harness.live_ids(RecordKind.survey_response))
        assert run.details is not None
        assert run.details["kinds"]["survey_response"]["cleaned"] == 1
        raw = stored_content(engine, connector_id, RecordKind.survey_response)[dirty]["raw"]
        assert raw["comment"] == "Great tool"
        assert raw["person_properties"]["Plan"] == "Pro"
        assert "\x00" not in json.dumps(raw)


def test_given_an_answer_that_cannot_be_normalised_when_syncing_then_it_is_skipped_and_reported(
    engine: Engine, database_url: str, tmp_path: Path
) -> None:
    with open_harness("delighted", tmp_path) as harness:
        harness.seed(RecordKind.survey_response, 6)
        bad = min(harness.live_ids(RecordKind.survey_response), key=int)
        harness.fake.tick()  # type: ignore[attr-defined]
        harness.fake.update(bad, score=11)  # type: ignore[attr-defined]
        connector_id = store_connector(engine, harness)
        run = make_engine_for(engine, database_url, harness).run(connector_id)
        assert run.status == RunStatus.succeeded, run.error_message
        stored = stored_ids(engine, connector_id, RecordKind.survey_response)
        assert sorted(stored) == sorted(harness.live_ids(RecordKind.survey_response) - {bad})
        assert run.details is not None
        report = run.details["kinds"]["survey_response"]
        assert report["skipped"] >= 1
        assert {r["id"] for r in report["skipped_records"]} == {bad}
        assert "score" in report["skipped_records"][0]["reason"]
