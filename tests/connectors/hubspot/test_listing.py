"""HubSpot full windows through the list endpoint (parallel id ranges) and incremental
windows through search, against the fake HubSpot over HTTP."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from connectors.base import Page, RecordKind, Runtime, Window
from connectors.errors import SourceDataError
from connectors.retry import RetryPolicy
from tests.connectors.hubspot.harness import (
    HubSpotHarness,
    contact_properties,
    make_harness,
)
from tests.fakes.hubspot import CLOCK_START_MS, Fault, RecordedRequest

FULL = Window(datetime(1970, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
INCREMENTAL = Window(datetime(2010, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))


@pytest.fixture
def hubspot(tmp_path: Path) -> Iterator[HubSpotHarness]:
    with make_harness(tmp_path) as harness:
        yield harness


def seed_contacts(hubspot: HubSpotHarness, n: int) -> None:
    """`n` contacts a second apart, then id gaps (GDPR deletes) and a few archived."""
    stamps = [CLOCK_START_MS + 1000 * (i + 1) for i in range(n)]
    hubspot.fake.add_many("contacts", stamps, contact_properties(1))
    ids = sorted(hubspot.fake.objects["contacts"])
    for object_id in ids[100:400]:  # a hole of three pages in the id space
        hubspot.fake.gdpr_delete("contacts", object_id)
    for object_id in ids[407::97]:
        hubspot.fake.archive("contacts", object_id)


def live_list_requests(hubspot: HubSpotHarness) -> list[RecordedRequest]:
    return [
        r
        for r in hubspot.fake.requests_to("/crm/v3/objects/contacts")
        if r.method == "GET" and dict(r.query).get("archived", "").lower() == "false"
    ]


def test_given_a_full_window_when_reading_then_the_list_endpoint_streams_every_record_once(
    hubspot: HubSpotHarness,
) -> None:
    seed_contacts(hubspot, 2_000)
    # Latency above the governor's spacing of sends (10 s / 184): only overlapping requests
    # can keep up with the limit.
    hubspot.fake.latency_seconds = 0.2
    vendor = hubspot.connector(
        Runtime(retry=RetryPolicy(sleep=lambda _s: None), page_size=50), tier="professional"
    )

    pages = list(vendor.read(RecordKind.contact, FULL))

    live = Counter(r.source_id for p in pages for r in p.records if not r.deleted)
    assert set(live) == hubspot.fake.live_ids("contacts")
    assert max(live.values()) == 1, "a record was read twice"
    archived = {r.source_id for p in pages for r in p.records if r.deleted}
    assert archived == {
        str(o.id) for o in hubspot.fake.objects["contacts"].values() if o.archived_ms
    }
    # 1,700 records at 50 a page: list requests, a single search to size the ranges.
    assert len(live_list_requests(hubspot)) >= 1_700 // 50
    assert len(hubspot.fake.requests_to("/search")) == 1
    assert hubspot.fake.peak_in_flight > 1, "the list pages were read one at a time"
    widest = max(len(p.checkpoint["ranges"]) for p in pages if p.checkpoint.get("phase") == "list")  # type: ignore[union-attr]
    assert widest > 1, "the ids were not split into ranges"


def test_given_an_incremental_window_when_reading_then_only_search_reads_live_records(
    hubspot: HubSpotHarness,
) -> None:
    seed_contacts(hubspot, 500)

    records = [
        r for p in hubspot.connector().read(RecordKind.contact, INCREMENTAL) for r in p.records
    ]

    assert {r.source_id for r in records if not r.deleted} == hubspot.fake.live_ids("contacts")
    assert live_list_requests(hubspot) == []
    assert hubspot.fake.requests_to("/search")


def test_given_a_checkpoint_from_the_middle_of_a_listing_when_resuming_then_nothing_is_missed(
    hubspot: HubSpotHarness,
) -> None:
    seed_contacts(hubspot, 1_500)
    vendor = hubspot.connector(Runtime(retry=RetryPolicy(sleep=lambda _s: None), page_size=20))
    taken: list[Page] = []
    reader = vendor.read(RecordKind.contact, FULL)
    for page in reader:
        taken.append(page)
        if len(taken) == 25:
            break
    reader.close()  # stops the streams, as a crash between two pages would
    checkpoint = taken[-1].checkpoint
    assert checkpoint is not None
    assert checkpoint["phase"] == "list"

    rest = list(vendor.read(RecordKind.contact, FULL, checkpoint))

    before = {r.source_id for p in taken for r in p.records if not r.deleted}
    after = Counter(r.source_id for p in rest for r in p.records if not r.deleted)
    assert before | set(after) == hubspot.fake.live_ids("contacts")
    assert max(after.values()) == 1


def test_given_a_list_cursor_that_repeats_when_listing_then_the_read_stops(
    hubspot: HubSpotHarness,
) -> None:
    seed_contacts(hubspot, 600)

    def paged_live_list(request: RecordedRequest) -> bool:
        query = dict(request.query)
        return (
            request.method == "GET"
            and bool(query.get("after"))
            and (query.get("archived", "").lower() == "false")
        )

    hubspot.fake.inject(Fault(when=paged_live_list, repeat_after=True, times=None))
    vendor = hubspot.connector(Runtime(retry=RetryPolicy(sleep=lambda _s: None), page_size=20))

    with pytest.raises(SourceDataError, match="repeated paging cursor"):
        list(vendor.read(RecordKind.contact, FULL))


def test_given_list_cursors_that_are_not_ids_when_listing_then_the_read_stays_sequential(
    hubspot: HubSpotHarness,
) -> None:
    seed_contacts(hubspot, 800)
    hubspot.fake.opaque_cursors = True
    vendor = hubspot.connector(Runtime(retry=RetryPolicy(sleep=lambda _s: None), page_size=50))

    pages = list(vendor.read(RecordKind.contact, FULL))

    live = Counter(r.source_id for p in pages for r in p.records if not r.deleted)
    assert set(live) == hubspot.fake.live_ids("contacts")
    assert max(live.values()) == 1
    # No id ranges: no search to size them, one range followed cursor by cursor.
    assert hubspot.fake.requests_to("/search") == []
    assert all(len(p.checkpoint["ranges"]) <= 1 for p in pages if p.checkpoint["phase"] == "list")  # type: ignore[index]


def test_given_an_id_listing_when_reading_ids_then_only_hs_object_id_is_asked_for(
    hubspot: HubSpotHarness,
) -> None:
    seed_contacts(hubspot, 1_000)
    hubspot.fake.corrupt(
        "contacts", sorted(hubspot.fake.objects["contacts"])[-1], "createdate", "?"
    )
    vendor = hubspot.connector(Runtime(retry=RetryPolicy(sleep=lambda _s: None)))

    batches = list(vendor.read_ids(RecordKind.contact))

    listed = Counter(source_id for batch in batches for source_id in batch)
    assert set(listed) == hubspot.live_ids(RecordKind.contact)
    assert max(listed.values()) == 1
    requests = live_list_requests(hubspot)
    assert requests
    assert {tuple(v for k, v in r.query if k == "properties") for r in requests} == {
        ("hs_object_id",)
    }
    # A full read asks for every property it normalises.
    list(vendor.read(RecordKind.contact, FULL))
    asked = [
        {name for k, v in r.query if k == "properties" for name in v.split(",")}
        for r in live_list_requests(hubspot)[len(requests) :]
    ]
    assert asked
    assert all({"hs_object_id", "lifecyclestage", "email"} <= names for names in asked)
