"""Salesforce at scale: QUERY_TIMEOUT window splitting, Bulk initial syncs in monthly
slices, and the delete log (`sObject Get Deleted`), against the fake org over TLS."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from connectors.base import Page, RecordKind, Runtime, Window
from connectors.retry import RetryPolicy
from connectors.salesforce.client import QueryTimeoutError
from tests.connectors.salesforce.harness import SalesforceHarness, make_harness

EVERYTHING = Window(datetime(1970, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
_BOUND = re.compile(r"SystemModstamp >= (\S+) AND SystemModstamp < (\S+)")


@pytest.fixture
def sf(tmp_path: Path) -> Iterator[SalesforceHarness]:
    with make_harness(tmp_path) as harness:
        yield harness


def clocked(sf: SalesforceHarness) -> Runtime:
    """A runtime whose clock is the fake org's (the delete log's reach depends on it)."""
    return Runtime(retry=RetryPolicy(sleep=lambda _s: None), clock=sf.now)


def ids_of(pages: list[Page], *, deleted: bool = False) -> list[str]:
    return [r.source_id for p in pages for r in p.records if r.deleted is deleted]


def bulk_windows(sf: SalesforceHarness) -> list[tuple[datetime, datetime]]:
    """The SystemModstamp range of every Bulk job the fake was asked to create."""
    windows = []
    for entry in sf.fake.log:
        if entry.endpoint == "bulk_create":
            match = _BOUND.search(entry.soql)
            assert match is not None, entry.soql
            windows.append(
                (datetime.fromisoformat(match.group(1)), datetime.fromisoformat(match.group(2)))
            )
    return windows


# ----------------------------------------------------------------------------- QUERY_TIMEOUT


def test_given_query_timeout_on_wide_windows_when_reading_then_halves_until_it_answers(
    sf: SalesforceHarness,
) -> None:
    start = sf.fake.tick()
    ids = [
        sf.fake.insert("Lead", start + timedelta(minutes=i), LastName=f"L{i}") for i in range(60)
    ]
    sf.fake.tick(3700)
    # Wider than 15 minutes of SystemModstamp: QUERY_TIMEOUT, as a large org answers.
    sf.fake.query_timeout_above_seconds = 900
    window = Window(start, start + timedelta(hours=1, seconds=1))

    pages = list(sf.connector(clocked(sf)).read(RecordKind.lead, window))

    assert ids_of(pages) == ids  # every record, once, in SystemModstamp order
    queries = [r for r in sf.fake.log if r.endpoint == "query"]
    # 1 h -> 30 min -> 15 min (first half, answers), then each remaining half.
    assert len(queries) > 4
    checkpoints = [p.checkpoint for p in pages if p.checkpoint is not None]
    assert checkpoints[-1] == {
        "after_ts": pages[-1].records[-1].modified_at.isoformat(),
        "after_id": ids[-1],
    }


def test_given_query_timeout_even_on_the_narrowest_window_then_fails_naming_the_setting(
    sf: SalesforceHarness,
) -> None:
    start = sf.fake.tick()
    sf.fake.insert("Lead", start, LastName="Slow")
    sf.fake.query_timeout_above_seconds = 0  # every query times out
    config = sf.config(query_timeout_min_window_seconds=600)
    window = Window(start, start + timedelta(hours=1))

    with pytest.raises(QueryTimeoutError) as caught:
        list(sf.connector(clocked(sf), config=config).read(RecordKind.lead, window))

    assert caught.value.error_class == "source_timeout"
    assert "query_timeout_min_window_seconds" in caught.value.message
    assert "QUERY_TIMEOUT" in caught.value.message


# ----------------------------------------------------------------------------- Bulk slices


def seed_three_months(sf: SalesforceHarness) -> dict[int, list[str]]:
    """Leads stamped in January, February and April 2026 (March empty), by month."""
    by_month: dict[int, list[str]] = {}
    for month in (1, 2, 4):
        for day in (3, 17):
            at = datetime(2026, month, day, 10, tzinfo=UTC)
            by_month.setdefault(month, []).append(sf.fake.insert("Lead", at, LastName="M"))
    sf.fake.tick(200 * 86400)  # the org's clock after April
    return by_month


def test_given_initial_sync_above_threshold_then_one_bulk_job_per_month_with_checkpoints(
    sf: SalesforceHarness,
) -> None:
    by_month = seed_three_months(sf)
    config = sf.config(bulk_threshold=1)

    pages = list(sf.connector(clocked(sf), config=config).read(RecordKind.lead, EVERYTHING))

    assert sorted(ids_of(pages)) == sorted(i for ids in by_month.values() for i in ids)
    month = [datetime(2026, m, 1, tzinfo=UTC) for m in (2, 3, 4)]
    # From the window's start to the oldest stamp's month end, month by month, and the
    # newest stamp's month to the window's end.
    assert bulk_windows(sf) == [
        (EVERYTHING.start, month[0]),
        (month[0], month[1]),
        (month[1], month[2]),
        (month[2], EVERYTHING.end),
    ]
    assert [p.checkpoint for p in pages] == [
        {"bulk_done_before": end.isoformat()} for end in [*month, EVERYTHING.end]
    ]


def test_given_bulk_checkpoint_when_resuming_then_starts_at_the_next_slice(
    sf: SalesforceHarness,
) -> None:
    by_month = seed_three_months(sf)
    config = sf.config(bulk_threshold=1)
    february = datetime(2026, 2, 1, tzinfo=UTC)

    pages = list(
        sf.connector(clocked(sf), config=config).read(
            RecordKind.lead, EVERYTHING, {"bulk_done_before": february.isoformat()}
        )
    )

    assert bulk_windows(sf)[0][0] == february
    assert sf.fake.requests_to("query") == 2  # the stamp bounds; no COUNT() on a resume
    assert sorted(ids_of(pages)) == sorted(by_month[2] + by_month[4])


# ----------------------------------------------------------------------------- delete log


def test_given_records_purged_since_the_last_sync_when_reading_then_delete_log_reports_them(
    sf: SalesforceHarness,
) -> None:
    ids = sf.fake.seed("Lead", 4)
    sf.fake.tick(60)
    since = sf.fake.now()
    sf.fake.tick(60)
    sf.fake.delete("Lead", ids[0])
    sf.fake.purge("Lead", ids[0])  # deleted, then the Recycle Bin emptied
    sf.fake.purge("Lead", ids[1])  # hard-deleted: never in the Recycle Bin
    sf.fake.purge("Lead", ids[2], logged=False)  # gone from the log too: reconciliation's job
    sf.fake.tick(60)

    pages = list(sf.connector(clocked(sf)).read(RecordKind.lead, Window(since, sf.now())))

    assert sorted(ids_of(pages, deleted=True)) == sorted(ids[:2])
    assert ids_of(pages) == []
    (request,) = [r for r in sf.fake.log if r.endpoint == "get_deleted"]
    assert "/sobjects/Lead/deleted/" in request.path


def test_given_window_older_than_the_delete_log_reach_then_asks_only_the_reachable_part(
    sf: SalesforceHarness,
) -> None:
    sf.fake.seed("Lead", 2)
    sf.fake.tick(40 * 86400)
    connector = sf.connector(clocked(sf))

    pages = list(connector.read(RecordKind.lead, Window(EVERYTHING.start, sf.now())))

    # The fake refuses a start beyond 15 days (INVALID_REPLICATION_DATE): the read passed.
    assert len(ids_of(pages)) == 2
    assert sf.fake.requests_to("get_deleted") == 1
