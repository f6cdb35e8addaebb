"""The demo's optional earlier years, which give the ambition check its baseline."""

from __future__ import annotations

from datetime import UTC, datetime

from connectors.base import RecordKind, Runtime, Window
from connectors.demo.connector import DemoConfig, DemoConnector, DemoSecrets

NOW = datetime(2026, 6, 1, tzinfo=UTC)
EVERYTHING = Window(datetime(1970, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))


def leads(history_years: int) -> list[str]:
    connector = DemoConnector(
        DemoConfig(seed=3, size=400, now=NOW, history_years=history_years),
        DemoSecrets(),
        Runtime(page_size=97),
    )
    return [r.source_id for p in connector.read(RecordKind.lead, EVERYTHING) for r in p.records]


def test_given_one_year_of_history_when_read_then_last_year_comes_first_and_smaller() -> None:
    this_year = leads(0)
    both = leads(1)
    assert set(this_year) < set(both)
    last_year = [i for i in both if i not in set(this_year)]
    assert last_year, "the previous year's leads are served too"
    assert all(i.startswith("00Q25") for i in last_year)
    assert all(i.startswith("00Q26") for i in this_year)
    # A growing company: last year (a full year) has fewer leads than the whole of this one.
    assert len(last_year) < 400
    assert len(both) == len(set(both)), "no id is served twice"
