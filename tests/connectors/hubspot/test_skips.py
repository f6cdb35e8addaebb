"""One HubSpot record that cannot be normalised is skipped and reported with its id and
reason; the rest of its page is read, on the list (full window) and search (incremental)
paths alike. A page that cannot be read at all still fails the read."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from connectors.base import Page, RecordKind, Window
from connectors.errors import SourceDataError
from tests.connectors.hubspot.harness import OBJECT_TYPES, HubSpotHarness, make_harness
from tests.fakes.hubspot import Fault, on_path

#: Starts after FULL_LISTING_BEFORE: read through search.
INCREMENTAL = Window(datetime(2010, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
#: Starts before FULL_LISTING_BEFORE: read through the list endpoint.
FULL = Window(datetime(1970, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
PATHS = {"search": INCREMENTAL, "list": FULL}

#: Per kind: a property served unreadable, its value, and what the reason names.
BAD_FIELDS = {
    RecordKind.contact: ("createdate", "yesterday", "createdate is not a timestamp"),
    RecordKind.deal: ("amount", "1.000,50", "amount is not a number"),
    RecordKind.survey_response: ("hs_value", "42", "not a whole score from 0 to 10"),
}


@pytest.fixture
def hubspot(tmp_path: Path) -> Iterator[HubSpotHarness]:
    with make_harness(tmp_path) as harness:
        yield harness


def read(hubspot: HubSpotHarness, kind: RecordKind, window: Window) -> list[Page]:
    connector = hubspot.connector()
    try:
        return list(connector.read(kind, window))
    finally:
        connector.close()


@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize("kind", sorted(BAD_FIELDS))
def test_given_one_unreadable_field_when_reading_then_the_record_is_skipped_and_the_rest_read(
    hubspot: HubSpotHarness, kind: RecordKind, path: str
) -> None:
    hubspot.seed(kind, 5)
    object_type = OBJECT_TYPES[kind]
    bad = sorted(int(i) for i in hubspot.live_ids(kind))[2]
    name, value, reason = BAD_FIELDS[kind]
    hubspot.fake.corrupt(object_type, bad, name, value)

    pages = read(hubspot, kind, PATHS[path])

    read_ids = {r.source_id for p in pages for r in p.records}
    assert read_ids == hubspot.live_ids(kind) - {str(bad)}
    skipped = [s for p in pages for s in p.skipped]
    assert [s.source_id for s in skipped] == [str(bad)]
    assert reason in skipped[0].reason
    assert str(bad) in skipped[0].reason


@pytest.mark.parametrize("path", sorted(PATHS))
def test_given_an_unreadable_modified_stamp_when_reading_then_the_record_is_reported_once(
    hubspot: HubSpotHarness, path: str
) -> None:
    hubspot.seed(RecordKind.contact, 6)
    hubspot.set_page_size(2)  # the bad record's page is not the last: paging goes on
    bad = sorted(int(i) for i in hubspot.live_ids(RecordKind.contact))[1]
    hubspot.fake.corrupt("contacts", bad, "lastmodifieddate", "soon")

    pages = read(hubspot, RecordKind.contact, PATHS[path])

    read_ids = {r.source_id for p in pages for r in p.records}
    assert read_ids == hubspot.live_ids(RecordKind.contact) - {str(bad)}
    skipped = [s for p in pages for s in p.skipped]
    assert [s.source_id for s in skipped] == [str(bad)]
    assert "lastmodifieddate is not a timestamp" in skipped[0].reason


def test_given_a_result_without_properties_when_searching_then_it_is_skipped(
    hubspot: HubSpotHarness,
) -> None:
    good = {
        "id": "8",
        "properties": {"lastmodifieddate": "2024-01-01T10:00:00.000Z"},
        "createdAt": "2024-01-01T09:00:00.000Z",
    }
    body = {"total": 2, "results": [{"id": "7"}, good]}
    hubspot.fake.inject(Fault(when=on_path("/search"), status=200, body=body))

    pages = read(hubspot, RecordKind.contact, INCREMENTAL)

    assert [r.source_id for p in pages for r in p.records] == ["8"]
    skipped = [s for p in pages for s in p.skipped]
    assert [(s.source_id, s.reason) for s in skipped] == [
        ("7", "HubSpot contacts 7 has no properties object")
    ]


def test_given_an_archived_record_with_an_unreadable_field_when_reading_then_it_is_skipped(
    hubspot: HubSpotHarness,
) -> None:
    hubspot.seed(RecordKind.deal, 4)
    first, second = sorted(int(i) for i in hubspot.live_ids(RecordKind.deal))[:2]
    hubspot.fake.archive("deals", first)
    hubspot.fake.archive("deals", second)
    hubspot.fake.corrupt("deals", second, "amount", "lots")

    pages = read(hubspot, RecordKind.deal, INCREMENTAL)

    deleted = [r.source_id for p in pages for r in p.records if r.deleted]
    assert deleted == [str(first)]
    assert [s.source_id for p in pages for s in p.skipped] == [str(second)]


@pytest.mark.parametrize("path", sorted(PATHS))
def test_given_a_result_without_a_usable_id_when_reading_then_the_page_fails(
    hubspot: HubSpotHarness, path: str
) -> None:
    hubspot.seed(RecordKind.contact, 2)
    body = {"total": 1, "results": [{"id": "seven", "properties": {}}]}
    where = "/search" if path == "search" else "/crm/v3/objects/contacts"
    hubspot.fake.inject(Fault(when=on_path(where), status=200, body=body))

    with pytest.raises(SourceDataError, match="malformed id"):
        read(hubspot, RecordKind.contact, PATHS[path])
