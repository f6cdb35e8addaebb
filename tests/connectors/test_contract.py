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
    for k, page in enumerate(pages[:-1]):
        seen = {r.source_id for p in pages[: k + 1] for r in p.records}
        rest = {
            r.source_id
            for p in connector.read(kind, EVERYTHING, resume=page.checkpoint)
            for r in p.records
        }
        assert seen | rest == everything


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
        first = [r for p in read_all(harness.connector(), kind) for r in p.records]
        newest = max(r.modified_at for r in first)
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
        assert any(r.deleted for r in records) or kind is RecordKind.survey_response
