"""Salesforce id listing for reconciliation (`read_ids`): SOQL selecting `Id` alone under the
configured filters, over REST or one Bulk API 2.0 job, live records only."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from connectors.base import RecordKind, Runtime
from connectors.retry import RetryPolicy
from tests.connectors.salesforce.harness import SalesforceHarness, make_harness


@pytest.fixture
def sf(tmp_path: Path) -> Iterator[SalesforceHarness]:
    with make_harness(tmp_path) as harness:
        yield harness


def runtime() -> Runtime:
    return Runtime(retry=RetryPolicy(sleep=lambda _s: None))


def listed(batches: Iterator[list[str]] | None) -> Counter[str]:
    assert batches is not None
    return Counter(source_id for batch in batches for source_id in batch)


def rest_soql(sf: SalesforceHarness) -> list[tuple[str, str]]:
    """(endpoint path's last part, SOQL) of every REST query the fake received."""
    return [
        (entry.path.rstrip("/").rsplit("/", 1)[-1], parse_qs(entry.query)["q"][0])
        for entry in sf.fake.log
        if entry.endpoint == "query"
    ]


def test_given_live_deleted_and_purged_leads_when_listing_ids_over_rest_then_only_ids_of_live_ones(
    sf: SalesforceHarness,
) -> None:
    ids = sf.fake.seed("Lead", 7)
    sf.fake.delete("Lead", ids[0])  # in the Recycle Bin: not live
    sf.fake.purge("Lead", ids[1], logged=False)
    sf.fake.page_size = 2  # several queryMore batches

    counts = listed(sf.connector(runtime()).read_ids(RecordKind.lead))

    assert set(counts) == sf.fake.live_ids("Lead") == set(ids[2:])
    assert max(counts.values()) == 1
    queries = rest_soql(sf)
    assert queries[0] == ("queryAll", "SELECT COUNT() FROM Lead WHERE IsDeleted = false")
    assert queries[1] == ("query", "SELECT Id FROM Lead ORDER BY Id")
    assert sf.fake.requests_to("queryMore") >= 2
    assert sf.fake.requests_to("bulk_create") == 0


def test_given_an_expired_cursor_when_listing_ids_then_the_listing_goes_on_after_the_last_id(
    sf: SalesforceHarness,
) -> None:
    sf.fake.seed("Lead", 6)
    sf.fake.page_size = 2
    connector = sf.connector(runtime())
    batches = connector.read_ids(RecordKind.lead)
    assert batches is not None
    first = next(batches)
    sf.fake.expire_cursors()

    rest = [source_id for batch in batches for source_id in batch]

    assert sorted(first + rest) == sorted(sf.fake.live_ids("Lead"))
    assert len(first + rest) == 6
    resumed = rest_soql(sf)[-1][1]
    assert resumed == f"SELECT Id FROM Lead WHERE Id > '{first[-1]}' ORDER BY Id"


def test_given_filters_and_a_bulk_threshold_when_listing_ids_then_one_bulk_job_selects_ids(
    sf: SalesforceHarness,
) -> None:
    ids = sf.fake.seed("Lead", 5)
    sf.fake.update("Lead", ids[0], LeadSource="Partner")
    sf.fake.update("Lead", ids[1], LeadSource="Partner")
    sf.fake.delete("Lead", ids[1])
    config = sf.config(bulk_threshold=0, filters={"lead": {"LeadSource": "Partner"}})

    counts = listed(sf.connector(runtime(), config=config).read_ids(RecordKind.lead))

    assert set(counts) == {ids[0]}
    (job,) = [entry for entry in sf.fake.log if entry.endpoint == "bulk_create"]
    assert job.soql == "SELECT Id FROM Lead WHERE LeadSource = 'Partner'"
    assert rest_soql(sf) == [
        ("queryAll", "SELECT COUNT() FROM Lead WHERE IsDeleted = false AND LeadSource = 'Partner'")
    ]


def test_given_rest_timing_out_when_listing_ids_then_a_bulk_job_lists_them(
    sf: SalesforceHarness,
) -> None:
    sf.fake.seed("Opportunity", 4)
    sf.fake.query_timeout_above_seconds = 0  # every REST listing times out
    config = sf.config(bulk_threshold=None)

    counts = listed(sf.connector(runtime(), config=config).read_ids(RecordKind.opportunity))

    assert set(counts) == sf.fake.live_ids("Opportunity")
    (job,) = [entry for entry in sf.fake.log if entry.endpoint == "bulk_create"]
    assert job.soql == "SELECT Id FROM Opportunity"
