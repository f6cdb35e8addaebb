"""The per-account rate governor: connectors of one HubSpot account together stay under the
account's limit, judged by the fake HubSpot's own window counts and 429s."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from connectors.base import Record, RecordKind, Runtime, Window
from connectors.governor import Governor, Grant, Lane
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


class MemoryBudget:
    """`SharedBudget` in memory, on the real monotonic clock: the database's semantics
    (tests/service/sync/test_budget.py runs the database's own) for governors of one
    process standing in for processes."""

    def __init__(self, *, fail: bool = False) -> None:
        self.fail = fail
        self.calls = 0
        self._lock = threading.Lock()
        self._next_free: dict[tuple[str, str], float] = {}
        self._paused: dict[tuple[str, str], float] = {}

    def reserve(
        self,
        account: str,
        lane: str,
        *,
        slots: int,
        spacing_seconds: float,
        horizon_seconds: float,
    ) -> Grant:
        with self._lock:
            self.calls += 1
            if self.fail:
                raise ConnectionError("the store is down")
            now = time.monotonic()
            paused = self._paused.get((account, lane), 0.0)
            if paused > now:
                return Grant(0, paused - now)
            start = max(self._next_free.get((account, lane), now), now)
            if start - now > horizon_seconds:
                return Grant(0, start - now - horizon_seconds)
            self._next_free[(account, lane)] = start + slots * spacing_seconds
            return Grant(slots, start - now)

    def pause(self, account: str, lane: str, seconds: float) -> None:
        with self._lock:
            key = (account, lane)
            self._paused[key] = max(self._paused.get(key, 0.0), time.monotonic() + seconds)


def shared_governor(budget: MemoryBudget, limit: int = 100) -> Governor:
    governor = Governor({"all": Lane("all", limit, 1.0)})
    governor.observe("all", limit=limit, interval_seconds=1.0, remaining=None)  # calibrated
    governor.share(budget, "test account")
    return governor


def acquire_many(governor: Governor, threads: int, each: int) -> list[float]:
    """Send times (monotonic) of `threads` x `each` requests through `governor`."""
    sent: list[float] = []
    lock = threading.Lock()

    def send() -> None:
        for _ in range(each):
            governor.acquire("all")
            with lock:
                sent.append(time.monotonic())
            governor.release()

    workers = [threading.Thread(target=send) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sorted(sent)


def test_given_two_governors_sharing_a_budget_when_both_send_then_together_they_keep_the_rate() -> (
    None
):
    budget = MemoryBudget()
    first, second = shared_governor(budget), shared_governor(budget)

    sent: list[float] = []
    threads = [
        threading.Thread(target=lambda g=g: sent.extend(acquire_many(g, 3, 12)))
        for g in (first, second)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    sent.sort()
    allowed = first.lanes["all"].allowed()  # 97 per second
    assert len(sent) == 72
    # 72 requests at 97/s take about 0.73 s: together, not each at the whole rate.
    assert sent[-1] - sent[0] >= 71 / allowed * 0.9
    # Leased a few cells per round trip, not one per request.
    assert budget.calls < 72


def test_given_a_429_seen_by_one_governor_when_another_sends_then_it_waits_for_the_pause() -> None:
    budget = MemoryBudget()
    first, second = shared_governor(budget), shared_governor(budget)

    first.throttled("all", 0.4)
    started = time.monotonic()
    second.acquire("all")
    second.release()

    assert time.monotonic() - started >= 0.35


def test_given_the_shared_store_failing_when_sending_then_the_process_throttles_alone() -> None:
    budget = MemoryBudget(fail=True)
    governor = shared_governor(budget, limit=50)

    sent = acquire_many(governor, 2, 5)

    assert len(sent) == 10
    assert budget.calls >= 1
    assert governor.admitted == 10
