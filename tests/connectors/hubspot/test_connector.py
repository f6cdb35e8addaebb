"""HubSpot connector behaviour against the fake HubSpot API, through the real SDK over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from connectors.base import Page, Record, RecordKind, Runtime, Window
from connectors.errors import (
    AuthError,
    ConfigError,
    ConnectorError,
    QuotaExceededError,
    RateLimitedError,
    RequestBudgetExceededError,
    RetriableError,
    SourceDataError,
)
from connectors.hubspot import HubSpotConfig, HubSpotConnector, HubSpotSecrets
from connectors.retry import RetryPolicy
from tests.connectors.hubspot.harness import (
    BAD_TOKEN,
    GOOD_TOKEN,
    HubSpotHarness,
    deal_properties,
    feedback_properties,
    make_harness,
)
from tests.fakes.hubspot import (
    CLOCK_START_MS,
    Fault,
    daily_limit_fault,
    iso_ms,
    on_path,
    pipeline,
    rate_limit_fault,
)
from tests.fakes.server import ALLOWED_HOSTS

#: Starts after FULL_LISTING_BEFORE: these tests read through search (the incremental path).
EVERYTHING = Window(datetime(2010, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))


@pytest.fixture
def hubspot(tmp_path: Path) -> Iterator[HubSpotHarness]:
    with make_harness(tmp_path) as harness:
        yield harness


# ---------------------------------------------------------------------- factories


def recording_policy(**overrides: Any) -> tuple[RetryPolicy, list[float]]:
    """A retry policy whose sleeps are recorded instead of slept."""
    sleeps: list[float] = []
    policy = RetryPolicy(sleep=sleeps.append, **overrides)
    return policy, sleeps


def runtime_with(policy: RetryPolicy, **overrides: Any) -> Runtime:
    return Runtime(retry=policy, allowed_hosts=ALLOWED_HOSTS, **overrides)


def read_pages(
    connector: HubSpotConnector,
    kind: RecordKind,
    window: Window = EVERYTHING,
    resume: dict[str, Any] | None = None,
) -> list[Page]:
    return list(connector.read(kind, window, resume))


def read_records(
    connector: HubSpotConnector, kind: RecordKind, window: Window = EVERYTHING
) -> list[Record]:
    return [r for p in read_pages(connector, kind, window) for r in p.records]


def ms_to_datetime(ms: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)


def search_bodies(hubspot: HubSpotHarness) -> list[dict[str, Any]]:
    return [r.body for r in hubspot.fake.requests_to("/search")]


# ---------------------------------------------------------------------- request shape


def test_given_contacts_when_reading_then_search_filters_gte_start_lt_end_sorted_ascending(
    hubspot: HubSpotHarness,
) -> None:
    hubspot.seed(RecordKind.contact, 3)
    window = Window(datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 2, 1, tzinfo=UTC))

    read_records(hubspot.connector(), RecordKind.contact, window)

    body = search_bodies(hubspot)[0]
    assert body["limit"] == 200
    assert body["sorts"] == [{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}]
    assert body["filterGroups"] == [
        {
            "filters": [
                {
                    "propertyName": "lastmodifieddate",
                    "operator": "GTE",
                    "value": str(CLOCK_START_MS),
                },
                {"propertyName": "lastmodifieddate", "operator": "LT", "value": "1706745600000"},
            ]
        }
    ]
    assert "after" not in body
    assert {"email", "lifecyclestage", "hs_lead_status", "hubspot_owner_id"} <= set(
        body["properties"]
    )


def test_given_deals_and_custom_fields_when_reading_then_hs_lastmodifieddate_and_custom_properties_are_used(  # noqa: E501
    hubspot: HubSpotHarness,
) -> None:
    hubspot.seed(RecordKind.deal, 2)
    connector = hubspot.connector(custom_fields={RecordKind.deal: {"region__c": "string"}})

    read_records(connector, RecordKind.deal)

    body = search_bodies(hubspot)[0]
    assert body["sorts"][0]["propertyName"] == "hs_lastmodifieddate"
    assert {f["propertyName"] for f in body["filterGroups"][0]["filters"]} == {
        "hs_lastmodifieddate"
    }
    assert "region__c" in body["properties"]
    assert "region__c" in HubSpotConnector.raw_fields(connector.config, RecordKind.deal)


def test_given_a_small_runtime_page_size_when_reading_then_limit_follows_it(
    hubspot: HubSpotHarness,
) -> None:
    hubspot.seed(RecordKind.contact, 5)
    records = read_records(hubspot.connector(Runtime(page_size=2)), RecordKind.contact)
    assert len(records) == 5
    assert {b["limit"] for b in search_bodies(hubspot)} == {2}


# ---------------------------------------------------------------------- windows and cursors


def test_given_sub_millisecond_window_bounds_when_reading_then_window_is_exact(
    hubspot: HubSpotHarness,
) -> None:
    hubspot.fake.add("contacts", {}, modified_ms=CLOCK_START_MS + 5)
    hubspot.fake.add("contacts", {}, modified_ms=CLOCK_START_MS + 6)
    pivot = ms_to_datetime(CLOCK_START_MS + 5) + timedelta(microseconds=1)

    before = read_records(hubspot.connector(), RecordKind.contact, Window(EVERYTHING.start, pivot))
    after = read_records(hubspot.connector(), RecordKind.contact, Window(pivot, EVERYTHING.end))

    assert [r.modified_at for r in before] == [ms_to_datetime(CLOCK_START_MS + 5)]
    assert [r.modified_at for r in after] == [ms_to_datetime(CLOCK_START_MS + 6)]


def test_given_25000_contacts_when_reading_under_the_real_10000_cap_then_every_record_is_read(
    hubspot: HubSpotHarness,
) -> None:
    # Spread over time with some shared milliseconds, as bulk imports produce.
    stamps = [CLOCK_START_MS + (i // 3) * 7 for i in range(25_000)]
    hubspot.fake.add_many("contacts", stamps)

    records = read_records(hubspot.connector(), RecordKind.contact)

    ids = [r.source_id for r in records]
    assert len(ids) == len(set(ids)) == 25_000
    assert set(ids) == hubspot.live_ids(RecordKind.contact)
    assert all("after" not in b for b in search_bodies(hubspot)), "keyset never pages by offset"


def test_given_more_than_10000_records_in_one_millisecond_when_reading_then_all_are_read_by_id(
    hubspot: HubSpotHarness,
) -> None:
    hubspot.fake.add_many("contacts", [CLOCK_START_MS] * 10_001)
    hubspot.fake.add_many("contacts", [CLOCK_START_MS + 1, CLOCK_START_MS + 2])

    records = read_records(hubspot.connector(), RecordKind.contact)

    ids = [r.source_id for r in records]
    assert len(ids) == len(set(ids)) == 10_003
    tie_queries = [
        b for b in search_bodies(hubspot) if b["sorts"][0]["propertyName"] == "hs_object_id"
    ]
    assert tie_queries, "the crowded millisecond must be walked in id order"


def test_given_a_lowered_cap_and_crowded_milliseconds_when_reading_then_nothing_is_truncated(
    hubspot: HubSpotHarness,
) -> None:
    hubspot.fake.results_cap = 50
    hubspot.set_page_size(20)
    stamps = [CLOCK_START_MS + (i // 70) for i in range(300)]  # 70 records per millisecond
    hubspot.fake.add_many("deals", stamps)

    records = read_records(hubspot.connector(), RecordKind.deal)

    assert sorted(r.source_id for r in records) == sorted(hubspot.live_ids(RecordKind.deal))
    assert len(records) == 300


def test_given_a_record_modified_between_pages_when_reading_then_no_other_record_is_skipped(
    hubspot: HubSpotHarness,
) -> None:
    hubspot.seed(RecordKind.contact, 30)
    hubspot.set_page_size(10)
    original = hubspot.live_ids(RecordKind.contact)
    window = Window(EVERYTHING.start, ms_to_datetime(hubspot.fake.tick(0) + 1))
    pages = hubspot.connector().read(RecordKind.contact, window)

    seen = {r.source_id for r in next(pages).records}
    first = min(seen, key=int)
    hubspot.fake.modify("contacts", int(first), {"hs_lead_status": "CONNECTED"})  # leaves window
    seen |= {r.source_id for p in pages for r in p.records}

    assert seen == original


def test_given_a_checkpoint_inside_a_crowded_millisecond_when_resuming_then_the_rest_is_read(
    hubspot: HubSpotHarness,
) -> None:
    hubspot.seed(RecordKind.contact, 12)
    hubspot.stamp_all_equal(RecordKind.contact)
    hubspot.seed(RecordKind.contact, 3)
    hubspot.set_page_size(4)
    connector = hubspot.connector()
    pages = read_pages(connector, RecordKind.contact)
    everything = {r.source_id for p in pages for r in p.records}
    assert any("tie_after_id" in (p.checkpoint or {}) for p in pages)

    for k, page in enumerate(pages[:-1]):
        seen = {r.source_id for p in pages[: k + 1] for r in p.records}
        rest = {
            r.source_id
            for p in read_pages(connector, RecordKind.contact, resume=dict(page.checkpoint or {}))
            for r in p.records
        }
        assert seen | rest == everything


def test_given_a_malformed_checkpoint_when_resuming_then_config_error(
    hubspot: HubSpotHarness,
) -> None:
    with pytest.raises(ConfigError):
        read_pages(hubspot.connector(), RecordKind.contact, resume={"phase": "modified"})
    with pytest.raises(ConfigError):
        read_pages(hubspot.connector(), RecordKind.contact, resume={"cursor": "x"})


# ---------------------------------------------------------------------- deletes


def test_given_archived_records_when_reading_then_those_archived_in_window_are_deleted_records(
    hubspot: HubSpotHarness,
) -> None:
    hubspot.seed(RecordKind.contact, 4)
    first, second = sorted(int(i) for i in hubspot.live_ids(RecordKind.contact))[:2]
    hubspot.fake.archive("contacts", first)
    boundary_ms = hubspot.fake.tick()
    hubspot.fake.archive("contacts", second)
    window = Window(ms_to_datetime(boundary_ms), EVERYTHING.end)

    records = read_records(hubspot.connector(), RecordKind.contact, window)

    deleted = [r for r in records if r.deleted]
    assert [r.source_id for r in deleted] == [str(second)]
    assert deleted[0].modified_at in window
    assert deleted[0].raw.get("email")
    listed = hubspot.fake.requests_to("/crm/v3/objects/contacts")
    assert any(("archived", "True") in r.query or ("archived", "true") in r.query for r in listed)


def test_given_a_list_page_repeating_its_after_cursor_when_reading_deletes_then_source_data_error(
    hubspot: HubSpotHarness,
) -> None:
    hubspot.seed(RecordKind.contact, 6)
    for object_id in sorted(int(i) for i in hubspot.live_ids(RecordKind.contact)):
        hubspot.fake.archive("contacts", object_id)
    hubspot.set_page_size(2)

    def second_list_page(request: Any) -> bool:
        return request.method == "GET" and "after" in dict(request.query)

    hubspot.fake.inject(Fault(when=second_list_page, repeat_after=True))

    with pytest.raises(SourceDataError, match="repeated paging cursor"):
        read_pages(hubspot.connector(), RecordKind.contact)


def test_given_search_replaying_the_same_page_when_reading_then_source_data_error_not_a_loop(
    hubspot: HubSpotHarness,
) -> None:
    hubspot.seed(RecordKind.contact, 10)
    hubspot.set_page_size(3)

    def later_searches(request: Any) -> bool:
        return request.path.endswith("/search") and len(hubspot.fake.requests_to("/search")) > 1

    hubspot.fake.inject(Fault(when=later_searches, replay=True, times=None))

    with pytest.raises(SourceDataError, match="cursor"):
        read_pages(hubspot.connector(), RecordKind.contact)
    assert len(hubspot.fake.requests_to("/search")) <= 4, "stopped after a few requests"


# ---------------------------------------------------------------------- normalising


def test_given_a_contact_when_reading_then_fields_are_normalised(hubspot: HubSpotHarness) -> None:
    hubspot.fake.add(
        "contacts",
        {
            "email": "ada@example.com",
            "lifecyclestage": "salesqualifiedlead",
            "hs_lead_status": "OPEN_DEAL",
            "hs_analytics_source": "REFERRALS",
            "hubspot_owner_id": "77",
        },
        created_ms=CLOCK_START_MS - 60_000,
        modified_ms=CLOCK_START_MS + 5,
    )

    (record,) = read_records(hubspot.connector(), RecordKind.contact)

    assert record.kind is RecordKind.contact
    assert (record.status, record.stage, record.lead_source, record.owner, record.email) == (
        "OPEN_DEAL",
        "salesqualifiedlead",
        "REFERRALS",
        "77",
        "ada@example.com",
    )
    assert record.created_at == ms_to_datetime(CLOCK_START_MS - 60_000)
    assert record.modified_at == ms_to_datetime(CLOCK_START_MS + 5)
    assert record.raw["hs_analytics_source"] == "REFERRALS"
    assert record.deleted is False


def test_given_deals_when_reading_then_amount_currency_close_date_and_type_are_normalised(
    hubspot: HubSpotHarness,
) -> None:
    plain = hubspot.fake.add(
        "deals", {**deal_properties(1, stage="closedwon"), "amount": "1234.56"}
    )
    foreign = hubspot.fake.add(
        "deals",
        {
            **deal_properties(2),
            "deal_currency_code": "USD",
            "closedate": "2024-03-31T23:30:00-02:00",
            "amount": "",
        },
    )

    records = {r.source_id: r for r in read_records(hubspot.connector(), RecordKind.deal)}

    first, second = records[str(plain.id)], records[str(foreign.id)]
    assert first.amount == Decimal("1234.56")
    assert first.currency == "EUR"
    assert first.close_date == date(2024, 3, 31)
    assert first.deal_type == "newbusiness"
    assert first.stage == "closedwon"
    assert first.lead_source == "ORGANIC_SEARCH"
    assert first.owner == "501"
    assert (first.is_closed, first.is_won) == (True, True)
    assert second.amount is None
    assert second.currency == "USD"
    assert second.close_date == date(2024, 4, 1), "close date is the UTC date"


def test_given_a_configured_currency_and_source_property_when_reading_deals_then_they_are_used(
    hubspot: HubSpotHarness,
) -> None:
    hubspot.fake.define_property("deals", "deal_source")
    hubspot.fake.add("deals", {**deal_properties(1), "deal_source": "PARTNER"})
    connector = hubspot.connector(default_currency="GBP", deal_source_property="deal_source")

    (record,) = read_records(connector, RecordKind.deal)

    assert record.currency == "GBP"
    assert record.lead_source == "PARTNER"
    assert "deal_source" in search_bodies(hubspot)[0]["properties"]


def test_given_a_custom_pipeline_when_reading_deals_then_stage_metadata_decides_closed_and_won(
    hubspot: HubSpotHarness,
) -> None:
    hubspot.fake.deal_pipelines.append(
        pipeline(
            "renewals",
            "Renewals",
            [
                ("90001", "Negotiating", False, "0.5"),
                ("90002", "Renewed", True, "1.0"),
                ("90003", "Churned", True, "0.0"),
            ],
        )
    )
    # The calculated properties disagree on purpose: the pipeline is the authority.
    ids = {}
    for stage in ("90001", "90002", "90003"):
        props = {
            **deal_properties(1, stage=stage, pipeline="renewals"),
            "hs_is_closed_won": "false",
            "hs_is_closed": "false",
        }
        ids[stage] = str(hubspot.fake.add("deals", props).id)
    unknown = hubspot.fake.add(
        "deals",
        {
            **deal_properties(2, stage="deleted-stage"),
            "hs_is_closed_won": "true",
            "hs_is_closed": "true",
        },
    )
    connector = hubspot.connector()

    records = {r.source_id: r for r in read_records(connector, RecordKind.deal)}
    read_records(connector, RecordKind.deal)

    outcome = {stage: (records[i].is_closed, records[i].is_won) for stage, i in ids.items()}
    assert outcome == {"90001": (False, False), "90002": (True, True), "90003": (True, False)}
    fallback = records[str(unknown.id)]
    assert (fallback.is_closed, fallback.is_won) == (True, True)
    assert len(hubspot.fake.requests_to("/pipelines/deals")) == 1, "pipelines read once"


def test_given_feedback_submissions_when_reading_then_survey_responses_carry_score_and_type(
    hubspot: HubSpotHarness,
) -> None:
    submitted = CLOCK_START_MS - 3_600_000
    hubspot.fake.add(
        "feedback_submissions",
        {**feedback_properties(9, submitted), "hs_response_group": "PROMOTER"},
    )

    (record,) = read_records(hubspot.connector(), RecordKind.survey_response)

    assert record.kind is RecordKind.survey_response
    assert record.score == 9
    assert record.status == "NPS"
    assert record.created_at == ms_to_datetime(submitted)
    assert record.raw["hs_response_group"] == "PROMOTER"
    assert record.raw["hs_survey_channel"] == "EMAIL"


def test_given_a_score_outside_0_to_10_when_reading_then_the_record_is_skipped_by_id(
    hubspot: HubSpotHarness,
) -> None:
    bad = hubspot.fake.add(
        "feedback_submissions", {**feedback_properties(1, CLOCK_START_MS), "hs_value": "42"}
    )
    pages = read_pages(hubspot.connector(), RecordKind.survey_response)
    assert [r for p in pages for r in p.records] == []
    assert [s.source_id for p in pages for s in p.skipped] == [str(bad.id)]


def test_given_a_portal_id_when_asking_for_record_urls_then_hubspot_app_links_are_built(
    hubspot: HubSpotHarness,
) -> None:
    assert hubspot.connector().record_url(RecordKind.contact, "51") is None
    connector = hubspot.connector(portal_id="1234567")
    assert connector.record_url(RecordKind.contact, "51") == (
        "https://app.hubspot.com/contacts/1234567/record/0-1/51"
    )
    assert connector.record_url(RecordKind.deal, "9") == (
        "https://app.hubspot.com/contacts/1234567/record/0-3/9"
    )


# ---------------------------------------------------------------------- errors and retries


def test_given_429_with_retry_after_when_reading_then_the_policy_waits_that_long(
    hubspot: HubSpotHarness,
) -> None:
    hubspot.seed(RecordKind.contact, 3)
    hubspot.fake.inject(rate_limit_fault(on_path("/search"), retry_after="3"))
    policy, sleeps = recording_policy()

    records = read_records(hubspot.connector(runtime_with(policy)), RecordKind.contact)

    assert len(records) == 3
    assert sleeps == [3.0]


def test_given_429_without_retry_after_when_reading_then_the_policy_waits_one_interval(
    hubspot: HubSpotHarness,
) -> None:
    hubspot.seed(RecordKind.contact, 3)
    hubspot.fake.inject(rate_limit_fault(on_path("/search"), interval_ms=10_000))
    policy, sleeps = recording_policy()

    records = read_records(hubspot.connector(runtime_with(policy)), RecordKind.contact)

    assert len(records) == 3
    assert sleeps == [10.0]


def test_given_persistent_429_when_reading_then_rate_limited_error_after_max_attempts(
    hubspot: HubSpotHarness,
) -> None:
    hubspot.fake.inject(rate_limit_fault(on_path("/search"), retry_after="1", times=None))
    policy, sleeps = recording_policy(max_attempts=3)

    with pytest.raises(RateLimitedError):
        read_records(hubspot.connector(runtime_with(policy)), RecordKind.contact)
    assert sleeps == [1.0, 1.0]


def test_given_the_daily_limit_429_when_reading_then_quota_exceeded_without_retry(
    hubspot: HubSpotHarness,
) -> None:
    hubspot.fake.inject(daily_limit_fault(on_path("/search")))
    policy, sleeps = recording_policy()

    with pytest.raises(QuotaExceededError) as caught:
        read_records(hubspot.connector(runtime_with(policy)), RecordKind.contact)

    assert not isinstance(caught.value, RateLimitedError)
    assert (caught.value.used, caught.value.limit) == (250_000, 250_000)
    assert sleeps == []
    assert len(hubspot.fake.requests_to("/search")) == 1


def test_given_5xx_then_success_when_reading_then_the_read_completes_after_backoff(
    hubspot: HubSpotHarness,
) -> None:
    hubspot.seed(RecordKind.contact, 3)
    hubspot.fake.inject(
        Fault(
            when=on_path("/search"),
            status=502,
            body={"status": "error", "message": "Bad gateway"},
            times=2,
        )
    )
    policy, sleeps = recording_policy()

    records = read_records(hubspot.connector(runtime_with(policy)), RecordKind.contact)

    assert len(records) == 3
    assert len(sleeps) == 2
    assert policy.retries == 2


def test_given_a_slow_api_when_reading_then_each_request_times_out_and_retriable_error_is_raised(
    hubspot: HubSpotHarness,
) -> None:
    hubspot.fake.inject(Fault(when=on_path("/search"), delay=1.5, times=None))
    policy, sleeps = recording_policy(max_attempts=3)
    connector = hubspot.connector(runtime_with(policy, timeout_seconds=0.2))

    with pytest.raises(RetriableError, match="timed out") as caught:
        read_records(connector, RecordKind.contact)

    assert not isinstance(caught.value, RateLimitedError)
    assert policy.requests_made == 3
    assert len(sleeps) == 2


def test_given_a_closed_port_when_checking_then_retriable_error(tmp_path: Path) -> None:
    config = HubSpotConfig(base_url="http://127.0.0.1:9")
    policy, _ = recording_policy(max_attempts=2)
    connector = HubSpotConnector(
        config, HubSpotSecrets(access_token=GOOD_TOKEN), runtime_with(policy, timeout_seconds=2)
    )
    with pytest.raises(RetriableError):
        connector.check()


def test_given_a_bad_token_when_reading_then_auth_error_without_retry(
    hubspot: HubSpotHarness,
) -> None:
    policy, sleeps = recording_policy()
    connector = HubSpotConnector(
        hubspot.config(), HubSpotSecrets(access_token=BAD_TOKEN), runtime_with(policy)
    )

    with pytest.raises(AuthError) as caught:
        read_records(connector, RecordKind.contact)

    assert "401" in caught.value.message
    assert sleeps == []
    assert policy.requests_made == 1


def test_given_a_400_validation_error_when_reading_then_config_error_without_retry(
    hubspot: HubSpotHarness,
) -> None:
    body = {
        "status": "error",
        "category": "VALIDATION_ERROR",
        "message": 'Property "region__c" does not exist',
    }
    hubspot.fake.inject(Fault(when=on_path("/search"), status=400, body=body))
    policy, sleeps = recording_policy()

    with pytest.raises(ConfigError, match="region__c"):
        read_records(hubspot.connector(runtime_with(policy)), RecordKind.contact)
    assert sleeps == []


@pytest.mark.parametrize("body", ["<html>upstream error</html>", '{"results": [', '["a list"]'])
def test_given_a_malformed_page_when_reading_then_source_data_error(
    hubspot: HubSpotHarness, body: str
) -> None:
    hubspot.seed(RecordKind.contact, 2)
    hubspot.fake.inject(Fault(when=on_path("/search"), status=200, body=body))
    policy, sleeps = recording_policy()

    with pytest.raises(SourceDataError):
        read_records(hubspot.connector(runtime_with(policy)), RecordKind.contact)
    assert sleeps == []


def test_given_a_result_without_its_modified_stamp_when_reading_then_it_is_skipped_by_id(
    hubspot: HubSpotHarness,
) -> None:
    body = {"total": 1, "results": [{"id": "7", "properties": {"email": "x@example.com"}}]}
    hubspot.fake.inject(Fault(when=on_path("/search"), status=200, body=body))
    pages = read_pages(hubspot.connector(), RecordKind.contact)
    assert [r for p in pages for r in p.records] == []
    skipped = [s for p in pages for s in p.skipped]
    assert [(s.source_id, s.reason) for s in skipped] == [
        ("7", "HubSpot contacts 7 has no lastmodifieddate")
    ]


def test_given_a_request_budget_when_a_read_needs_more_then_request_budget_exceeded(
    hubspot: HubSpotHarness,
) -> None:
    hubspot.seed(RecordKind.contact, 10)
    hubspot.set_page_size(3)
    policy, _ = recording_policy(request_budget=2)

    with pytest.raises(RequestBudgetExceededError):
        read_records(hubspot.connector(runtime_with(policy)), RecordKind.contact)
    assert len(hubspot.fake.requests) == 2


def test_given_error_bodies_echoing_the_token_when_failing_then_messages_never_contain_it(
    hubspot: HubSpotHarness,
) -> None:
    echo = {"status": "error", "message": f"bad request with Bearer {GOOD_TOKEN}"}
    errors: list[ConnectorError] = []
    for status in (400, 403, 500, 429):
        hubspot.fake.inject(Fault(when=on_path("/search"), status=status, body=echo))
        policy, _ = recording_policy(max_attempts=1)
        with pytest.raises(ConnectorError) as caught:
            read_records(hubspot.connector(runtime_with(policy)), RecordKind.contact)
        errors.append(caught.value)
    hubspot.fake.inject(Fault(when=on_path("/search"), status=200, body=f"<p>{GOOD_TOKEN}</p>"))
    with pytest.raises(SourceDataError) as malformed:
        read_records(hubspot.connector(), RecordKind.contact)
    errors.append(malformed.value)
    with pytest.raises(AuthError) as auth:
        hubspot.bad_credentials_connector().check()
    errors.append(auth.value)

    for error in errors:
        assert GOOD_TOKEN not in error.message
        assert GOOD_TOKEN not in str(error)
        assert BAD_TOKEN not in error.message
    assert "[redacted]" in errors[0].message


# ---------------------------------------------------------------------- check, TLS, config


def test_given_good_credentials_when_checking_then_daily_quota_usage_is_reported(
    hubspot: HubSpotHarness,
) -> None:
    result = hubspot.connector().check()
    assert result.ok
    assert result.quota_limit == 250_000
    assert result.quota_used == 1
    (request,) = hubspot.fake.requests
    assert request.path == "/crm/v3/objects/contacts"
    assert ("limit", "1") in request.query


def test_given_a_tls_fake_when_the_ca_bundle_is_configured_then_reads_verify_against_it(
    tmp_path: Path,
) -> None:
    with make_harness(tmp_path, tls=True) as hubspot:
        hubspot.seed(RecordKind.contact, 2)
        assert len(read_records(hubspot.connector(), RecordKind.contact)) == 2

        untrusted = HubSpotConnector(
            hubspot.config(),
            HubSpotSecrets(access_token=GOOD_TOKEN),
            Runtime(allowed_hosts=ALLOWED_HOSTS),
        )
        with pytest.raises(ConfigError, match="TLS"):
            untrusted.check()


def test_given_invalid_settings_when_configuring_then_validation_fails() -> None:
    with pytest.raises(ValidationError):
        HubSpotConfig(base_url="ftp://api.hubapi.com")
    with pytest.raises(ValidationError):
        HubSpotConfig(base_url="api.hubapi.com")
    with pytest.raises(ValidationError):
        HubSpotConfig(custom_fields={RecordKind.contact: {"bad name;": "string"}})
    with pytest.raises(ValidationError):
        HubSpotConfig(custom_fields={RecordKind.lead: {"x": "string"}})
    with pytest.raises(ValidationError):
        HubSpotConfig(default_currency="euro")
    with pytest.raises(ValidationError):
        HubSpotSecrets(access_token="")
    assert HubSpotConfig().base_url == "https://api.hubapi.com"
    assert GOOD_TOKEN not in repr(HubSpotSecrets(access_token=GOOD_TOKEN))


def test_iso_ms_round_trips_the_fake_clock() -> None:
    assert iso_ms(CLOCK_START_MS + 12) == "2024-01-01T00:00:00.012Z"
