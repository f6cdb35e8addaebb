"""The fake Salesforce org behaves like Salesforce where the sync's correctness depends on it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from connectors.base import RecordKind, Window
from tests.connectors.salesforce.harness import SalesforceHarness, make_harness


@pytest.fixture
def sf(tmp_path: Path) -> Iterator[SalesforceHarness]:
    with make_harness(tmp_path) as harness:
        yield harness


def test_given_a_late_commit_when_reading_then_it_shows_only_after_commit_with_its_old_stamp(
    sf: SalesforceHarness,
) -> None:
    kept = sf.fake.insert("Lead", Status="Open - Not Contacted", LastName="Kept")
    sf.fake.tick()
    stamped = sf.fake.now()
    sf.fake.update("Lead", kept, committed=False, Status="Working - Contacted")
    late = sf.fake.insert("Lead", committed=False, LastName="Late")
    sf.fake.tick(10)
    window = Window(stamped - timedelta(seconds=60), sf.now())

    def read() -> dict[str, tuple[str | None, object]]:
        pages = sf.connector().read(RecordKind.lead, window)
        return {r.source_id: (r.status, r.modified_at) for p in pages for r in p.records}

    before = read()
    assert set(before) == {kept}
    assert before[kept][0] == "Open - Not Contacted"
    assert sf.live_ids(RecordKind.lead) == {kept}
    assert sorted(sf.fake.commit_pending()) == sorted([kept, late])
    after = read()
    # Visible now, though stamped when the transaction began (behind the clock).
    assert after == {kept: ("Working - Contacted", stamped), late: (None, stamped)}
