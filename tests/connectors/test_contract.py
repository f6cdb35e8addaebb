"""The contract every connector passes, run against each vendor's local fake."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from connectors.base import Connector, Page, RecordKind, Window
from connectors.errors import AuthError, ConfigError
from tests.connectors.harness import SourceHarness
from tests.harnesses import HARNESS_MODULES, open_harness

EVERYTHING = Window(datetime(1970, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))


@pytest.fixture(params=sorted(HARNESS_MODULES))
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SourceHarness]:
    with open_harness(request.param, tmp_path) as h:
        yield h


def read_all(connector: Connector, kind: RecordKind, window: Window = EVERYTHING) -> list[Page]:
    return list(connector.read(kind, window))


def test_check_accepts_good_credentials(harness: SourceHarness) -> None:
    result = harness.connector().check()
    assert result.ok, result.detail


def test_check_rejects_bad_credentials(harness: SourceHarness) -> None:
    with pytest.raises(AuthError):
        harness.bad_credentials_connector().check()


def test_declares_kinds_it_can_read(harness: SourceHarness) -> None:
    connector = harness.connector()
    assert set(harness.kinds) <= set(connector.kinds)
    unknown = next(k for k in RecordKind if k not in connector.kinds)
    with pytest.raises(ConfigError):
        list(connector.read(unknown, EVERYTHING))


def test_full_read_yields_every_live_record_once(harness: SourceHarness) -> None:
    for kind in harness.kinds:
        harness.seed(kind, 25)
        harness.set_page_size(7)
        pages = read_all(harness.connector(), kind)
        assert len(pages) >= 2, "the fake should have forced several pages"
        records = [r for page in pages for r in page.records]
        live = [r.source_id for r in records if not r.deleted]
        assert len(live) == len(set(live)), "a record was yielded twice"
        assert set(live) == harness.live_ids(kind)
        for record in records:
            assert record.kind is kind
            assert record.created_at.tzinfo is not None
            assert record.modified_at.tzinfo is not None
            assert record.modified_at in EVERYTHING


def test_window_is_half_open_on_modification_time(harness: SourceHarness) -> None:
    kind = harness.kinds[0]
    harness.seed(kind, 12)
    records = [r for p in read_all(harness.connector(), kind) for r in p.records]
    stamps = sorted({r.modified_at for r in records})
    assert len(stamps) >= 2
    pivot = stamps[len(stamps) // 2]
    before = Window(EVERYTHING.start, pivot)
    after = Window(pivot, EVERYTHING.end)
    first = {r.source_id for p in read_all(harness.connector(), kind, before) for r in p.records}
    second = {r.source_id for p in read_all(harness.connector(), kind, after) for r in p.records}
    for page in read_all(harness.connector(), kind, before):
        assert all(r.modified_at < pivot for r in page.records)
    for page in read_all(harness.connector(), kind, after):
        assert all(r.modified_at >= pivot for r in page.records)
    assert first | second == {r.source_id for r in records}
    assert not first & second


def test_resume_from_any_checkpoint_completes_the_window(harness: SourceHarness) -> None:
    kind = harness.kinds[0]
    harness.seed(kind, 20)
    harness.set_page_size(6)
    connector = harness.connector()
    pages = read_all(connector, kind)
    everything = {r.source_id for p in pages for r in p.records}
    assert len(pages) >= 3, "the fake should have served at least three pages"
    for k, page in enumerate(pages[:-1]):
        seen = {r.source_id for p in pages[: k + 1] for r in p.records}
        rest = {
            r.source_id
            for p in connector.read(kind, EVERYTHING, resume=page.checkpoint)
            for r in p.records
        }
        assert seen | rest == everything


def test_resume_after_two_fetched_pages_continues_where_it_stopped(
    harness: SourceHarness,
) -> None:
    """An interrupted read (two pages fetched, then the process dies) resumes from the
    second page's checkpoint: the rest is read, the first page is not read again."""
    kind = harness.kinds[0]
    harness.seed(kind, 20)
    harness.set_page_size(6)
    everything = {r.source_id for p in read_all(harness.connector(), kind) for r in p.records}
    reading = harness.connector().read(kind, EVERYTHING)
    fetched = [next(reading), next(reading)]
    reading.close()  # type: ignore[attr-defined]
    assert len(fetched) == 2
    assert all(page.records for page in fetched), "both pages before the interruption hold records"
    checkpoint = fetched[-1].checkpoint
    assert checkpoint is not None, "a page after the first must offer a resume point"
    first_page = {r.source_id for r in fetched[0].records}
    seen = first_page | {r.source_id for r in fetched[1].records}
    resumed = [
        r.source_id
        for p in harness.connector().read(kind, EVERYTHING, resume=checkpoint)
        for r in p.records
    ]
    assert resumed, "records remain after the second page"
    assert seen | set(resumed) == everything
    # A resume that restarted the window would read the first page again.
    assert first_page - set(resumed), "the resume re-read the whole first page"


def test_equal_timestamps_across_pages_are_all_read(harness: SourceHarness) -> None:
    kind = harness.kinds[0]
    harness.seed(kind, 15)
    harness.stamp_all_equal(kind)
    harness.set_page_size(4)
    records = [r for p in read_all(harness.connector(), kind) for r in p.records]
    assert {r.source_id for r in records if not r.deleted} == harness.live_ids(kind)


def test_mutations_show_up_including_deletes(harness: SourceHarness) -> None:
    for kind in harness.kinds:
        harness.seed(kind, 10)
        connector = harness.connector()
        first = [r for p in read_all(connector, kind) for r in p.records]
        newest = max(r.modified_at for r in first)
        before = harness.live_ids(kind)
        harness.mutate(kind)
        records = [r for p in read_all(harness.connector(), kind) for r in p.records]
        live = {r.source_id for r in records if not r.deleted}
        assert live == harness.live_ids(kind)
        changed = [
            r
            for p in read_all(
                harness.connector(),
                kind,
                Window(newest + timedelta(microseconds=1), EVERYTHING.end),
            )
            for r in p.records
        ]
        assert changed, "a mutation must be visible in an incremental window"
        gone = before - harness.live_ids(kind)
        if connector.reports_deletes:
            # Every kind of a connector that reports deletes yields them, survey answers too.
            deleted = {r.source_id for r in changed if r.deleted}
            assert deleted, f"{kind}: no delete in the incremental window"
            assert gone <= deleted, f"{kind}: deletes not reported: {gone - deleted}"
        else:
            # Deletes are found by reconciliation: the record is simply no longer listed.
            assert gone, f"{kind}: the harness's mutation should delete a record"
            assert not gone & live
