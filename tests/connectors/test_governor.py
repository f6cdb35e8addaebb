"""The per-account rate governor: connectors of one HubSpot account together stay under the
account's limit, judged by the fake HubSpot's own window counts and 429s."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from connectors.base import Record, RecordKind, Runtime, Window
from connectors.governor import Governor, Lane
from connectors.hubspot import HubSpotConnector
from connectors.retry import RetryPolicy
from tests.connectors.hubspot.harness import HubSpotHarness, contact_properties, make_harness
from tests.fakes.hubspot import CLOCK_START_MS

FULL = Window(datetime(1970, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
#: The fake account's limit: 20 requests per rolling second (HubSpot's shape, smaller).
LIMIT, INTERVAL_MS = 20, 1000


@pytest.fixture
def hubspot(tmp_path: Path) -> Iterator[HubSpotHarness]:
    with make_harness(tmp_path) as harness:
        harness.fake.rate_limit = LIMIT
        harness.fake.rate_interval_ms = INTERVAL_MS
        stamps = [CLOCK_START_MS + 1000 * (i + 1) for i in range(1_200)]
        harness.fake.add_many("contacts", stamps, contact_properties(1))
        yield harness


def read_together(connectors: list[HubSpotConnector], window: Window = FULL) -> list[list[Record]]:
    """Reads of contacts in `window` (all) by every connector at once, one thread each."""
    results: list[list[Record]] = [[] for _ in connectors]
    errors: list[BaseException] = []

    def read(i: int) -> None:
        try:
            for page in connectors[i].read(RecordKind.contact, window):
                results[i].extend(page.records)
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=read, args=(i,)) for i in range(len(connectors))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


def connector(hubspot: HubSpotHarness, portal_id: str) -> HubSpotConnector:
    # Retry-After is honoured for real: a 429 costs the run its wait, as in production.
    runtime = Runtime(retry=RetryPolicy(max_attempts=10), page_size=20)
    return hubspot.connector(runtime, portal_id=portal_id, tier="professional")


def test_given_two_connectors_of_one_portal_when_reading_at_once_then_the_account_limit_holds(
    hubspot: HubSpotHarness,
) -> None:
    first, second = connector(hubspot, "4242"), connector(hubspot, "4242")
    assert first.governor is second.governor

    results = read_together([first, second])

    for records in results:
        assert {r.source_id for r in records} == hubspot.fake.live_ids("contacts")
    assert hubspot.fake.rate_limited == 0
    assert hubspot.fake.peak_in_window <= LIMIT
    # Not vacuous: together they pressed on the limit (each alone would use most of it).
    assert hubspot.fake.peak_in_window > LIMIT // 2
    # The governor learnt the limit from the headers (the tier says 190 per 10 s).
    assert first.governor.lanes["all"].limit == LIMIT
    assert first.governor.lanes["all"].interval_seconds == INTERVAL_MS / 1000


def test_given_other_apps_using_the_account_when_remaining_drops_then_our_share_shrinks() -> None:
    now = [100.0]
    governor = Governor({"all": Lane("all", 100, 10.0)}, monotonic=lambda: now[0])
    for _ in range(10):
        governor.acquire("all")
        governor.release()
        now[0] += 0.2  # past the even spacing of 10 s / 97
    # The vendor counts 60 requests in its window; ten were ours.
    governor.observe("all", limit=100, interval_seconds=10.0, remaining=40)

    lane = governor.lanes["all"]
    assert lane.external == 50
    assert lane.allowed() == 100 - 3 - 50
    # Sends are now spaced by the smaller share: 10 s / 47.
    now[0] += 1.0
    assert lane.wait_seconds(now[0]) == 0
    governor.acquire("all")
    governor.release()
    assert lane.wait_seconds(now[0]) == pytest.approx(10.0 / 47)
    # Once the others stop (the vendor's count shows only ours), the share is whole again.
    governor.observe("all", limit=100, interval_seconds=10.0, remaining=89)
    assert lane.external == 0
