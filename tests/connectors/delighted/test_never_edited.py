"""Never-edited responses (`updated_at: null`): read whether or not Delighted's
`updated_since` lists them, in incremental windows that follow one another."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from connectors.base import RecordKind, Window
from tests.connectors.delighted.harness import DelightedHarness, make_harness


@pytest.fixture(params=[True, False], ids=["listed-by-updated_since", "not-listed"])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DelightedHarness]:
    with make_harness(tmp_path) as h:
        h.fake.never_edited_in_updated_windows = request.param
        yield h


def at(second: int) -> datetime:
    return datetime.fromtimestamp(second, UTC)


def read_ids(harness: DelightedHarness, window: Window) -> list[str]:
    connector = harness.make_connector(per_page=7)
    return [
        r.source_id for p in connector.read(RecordKind.survey_response, window) for r in p.records
    ]


def test_given_never_edited_answers_when_syncing_window_after_window_then_every_one_is_read(
    harness: DelightedHarness,
) -> None:
    fake = harness.fake
    first_start = at(fake.clock)
    for i in range(25):
        fake.tick(i % 3)  # bursts: several answers share a second
        fake.add(updated_at=None)
    fake.tick()
    edited = sorted(fake.responses, key=int)[:3]
    for response_id in edited:
        fake.update(response_id, comment="edited")
    fake.tick()
    boundary = at(fake.clock)
    for _ in range(12):
        fake.tick()
        fake.add(updated_at=None)
    fake.update(edited[0], comment="edited again")
    fake.tick()
    end = at(fake.clock)

    seen = read_ids(harness, Window(first_start, boundary))
    # The next window starts before the previous end, as the sync's overlap does.
    seen += read_ids(harness, Window(boundary - timedelta(seconds=5), end))

    assert set(seen) == set(fake.responses)
    # Each answer's current version is read exactly once per window it belongs to.
    first_window = read_ids(harness, Window(first_start, boundary))
    assert len(first_window) == len(set(first_window))


def test_given_a_crash_in_the_creation_pass_when_resuming_then_it_continues_there(
    harness: DelightedHarness,
) -> None:
    fake = harness.fake
    start = at(fake.clock)
    for _ in range(20):
        fake.tick()
        fake.add(updated_at=None)
    fake.tick()
    window = Window(start, at(fake.clock))
    connector = harness.make_connector(per_page=7)
    pages = list(connector.read(RecordKind.survey_response, window))
    resume = next(p.checkpoint for p in pages if p.checkpoint and "created_since" in p.checkpoint)

    resumed = list(connector.read(RecordKind.survey_response, window, resume))

    resumed_ids = {r.source_id for p in resumed for r in p.records}
    assert resumed_ids
    assert resumed_ids < set(fake.responses)
    assert all(p.checkpoint is not None and "created_since" in p.checkpoint for p in resumed)
