"""Salesforce-specific behaviour: the real simple-salesforce over real HTTPS against the fake."""

from __future__ import annotations

import json
import random
import traceback
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
    RequestBudgetExceededError,
    RetriableError,
    SourceDataError,
)
from connectors.retry import RetryPolicy
from connectors.salesforce.connector import SalesforceConfig, SalesforceConnector
from tests.connectors.salesforce.harness import SalesforceHarness, make_harness
from tests.fakes.salesforce import Fault, sf_datetime
from tests.fakes.server import ALLOWED_HOSTS

EVERYTHING = Window(datetime(1970, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
#: An incremental window (not an initial sync): no COUNT() and never Bulk.
SINCE_2026 = Window(datetime(2026, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))


@pytest.fixture
def sf(tmp_path: Path) -> Iterator[SalesforceHarness]:
    with make_harness(tmp_path) as harness:
        yield harness


def recording_policy(**options: Any) -> tuple[RetryPolicy, list[float]]:
    """A retry policy that records its delays instead of sleeping."""
    delays: list[float] = []
    policy = RetryPolicy(sleep=delays.append, rng=random.Random(3), **options)
    return policy, delays


def records_of(pages: list[Page]) -> list[Record]:
    return [record for page in pages for record in page.records]


def read(
    connector: SalesforceConnector, kind: RecordKind, window: Window = SINCE_2026
) -> list[Page]:
    return list(connector.read(kind, window))


def api_requests(sf: SalesforceHarness) -> int:
    return sum(1 for r in sf.fake.log if r.endpoint != "token")


# ----------------------------------------------------------------------------- login


def test_given_password_flow_and_my_domain_login_url_when_checking_then_uses_returned_instance(
    sf: SalesforceHarness,
) -> None:
    # Log in through "localhost" while the org lives at "127.0.0.1": the connector must
    # follow instance_url from the token answer, not reuse the login URL. Both are listed,
    # as a deployment would list an egress proxy.
    sf.fake.instance_url = f"https://127.0.0.1:{sf.served.port}"
    connector = sf.connector(
        Runtime(allowed_hosts=(*ALLOWED_HOSTS, "localhost")),
        config=sf.config(login_url=f"https://localhost:{sf.served.port}"),
    )

    result = connector.check()

    assert result.ok, result.detail
    assert (result.quota_used, result.quota_limit) == (1, 100_000)
    assert [r.query for r in sf.fake.log if r.endpoint == "token"] == ["grant_type=password"]
    assert connector.record_url(RecordKind.lead, "00Q1") == (
        f"https://127.0.0.1:{sf.served.port}/lightning/r/Lead/00Q1/view"
    )


def test_given_client_credentials_flow_when_reading_then_logs_in_without_user_secrets(
    sf: SalesforceHarness,
) -> None:
    sf.seed(RecordKind.lead, 3)
    secrets = sf.secrets(username=None, password=None, security_token=None)
    connector = sf.connector(config=sf.config(auth_flow="client_credentials"), secrets=secrets)

    records = records_of(read(connector, RecordKind.lead))

    assert {r.source_id for r in records} == sf.live_ids(RecordKind.lead)
    assert [r.query for r in sf.fake.log if r.endpoint == "token"] == [
        "grant_type=client_credentials"
    ]


def test_given_client_credentials_flow_when_login_url_is_shared_host_then_config_invalid() -> None:
    with pytest.raises(ValidationError, match="My Domain"):
        SalesforceConfig(login_url="https://login.salesforce.com", auth_flow="client_credentials")


def test_given_password_flow_when_username_missing_then_config_error_names_the_field(
    sf: SalesforceHarness,
) -> None:
    secrets = sf.secrets(username=None, password=None)
    with pytest.raises(ConfigError, match="'username' is required for the password auth flow"):
        sf.connector(secrets=secrets)


def test_given_username_without_password_when_validating_secrets_then_names_password() -> None:
    with pytest.raises(ValidationError, match="password is required"):
        SalesforceConnector.secrets_model(client_id="id", client_secret="s", username="u")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"api_version": "59"}, "api_version"),
        ({"login_url": "ftp://login.salesforce.com"}, "http"),
        ({"login_url": "https://login.salesforce.com/services?x=1"}, "origin"),
        ({"custom_fields": {"lead": {"Name FROM User--": "string"}}}, "API name"),
        ({"filters": {"lead": {"Country) OR (Id": "x"}}}, "API name"),
        ({"custom_fields": {"deal": {"Foo__c": "string"}}}, "does not read"),
        ({"page_size": 5000}, "page_size"),
    ],
)
def test_given_invalid_config_when_validating_then_rejected_with_field(
    overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        SalesforceConfig(**overrides)


def test_given_wrong_client_secret_when_checking_then_auth_error(sf: SalesforceHarness) -> None:
    connector = sf.connector(secrets=sf.secrets(client_secret="not-the-secret"))
    with pytest.raises(AuthError, match="invalid_client"):
        connector.check()


def test_given_unknown_api_version_when_checking_then_config_error(sf: SalesforceHarness) -> None:
    connector = sf.connector(config=sf.config(api_version="99.0"))
    with pytest.raises(ConfigError, match="NOT_FOUND"):
        connector.check()


# ----------------------------------------------------------------------------- sessions


def test_given_expired_session_when_reading_then_logs_in_again_once_and_succeeds(
    sf: SalesforceHarness,
) -> None:
    sf.seed(RecordKind.lead, 4)
    connector = sf.connector()
    connector.check()
    sf.fake.expire_sessions()

    records = records_of(read(connector, RecordKind.lead))

    assert {r.source_id for r in records} == sf.live_ids(RecordKind.lead)
    assert sf.fake.requests_to("token") == 2


def test_given_two_consecutive_401_when_reading_then_auth_error_after_one_relogin(
    sf: SalesforceHarness,
) -> None:
    sf.seed(RecordKind.lead, 2)
    sf.fake.fail(401, "INVALID_SESSION_ID", endpoint="query", times=2)

    with pytest.raises(AuthError, match="INVALID_SESSION_ID"):
        read(sf.connector(), RecordKind.lead)
    assert sf.fake.requests_to("token") == 2
    assert sf.fake.requests_to("query") == 2


# ----------------------------------------------------------------------------- limits & faults


def test_given_daily_quota_spent_when_reading_then_quota_exceeded_without_retry(
    sf: SalesforceHarness,
) -> None:
    sf.seed(RecordKind.lead, 2)
    sf.fake.api_used = sf.fake.api_limit = 15_000
    policy, delays = recording_policy()

    with pytest.raises(QuotaExceededError) as caught:
        read(sf.connector(Runtime(retry=policy)), RecordKind.lead)

    assert (caught.value.used, caught.value.limit) == (15_000, 15_000)
    assert "REQUEST_LIMIT_EXCEEDED" in caught.value.message
    assert api_requests(sf) == 1
    assert delays == []


def test_given_daily_quota_spent_when_checking_then_not_ok_with_usage(
    sf: SalesforceHarness,
) -> None:
    sf.fake.api_used = sf.fake.api_limit = 500

    result = sf.connector().check()

    assert not result.ok
    assert (result.quota_used, result.quota_limit) == (500, 500)


def test_given_concurrent_long_request_limit_when_reading_then_backs_off_and_retries(
    sf: SalesforceHarness,
) -> None:
    sf.seed(RecordKind.lead, 2)
    sf.fake.fail(403, "REQUEST_LIMIT_EXCEEDED", "ConcurrentPerOrgLongTxn Limit exceeded.")
    policy, delays = recording_policy()

    records = records_of(read(sf.connector(Runtime(retry=policy)), RecordKind.lead))

    assert len(records) == 2
    assert len(delays) == 1


def test_given_503_then_success_when_reading_then_retried_with_backoff(
    sf: SalesforceHarness,
) -> None:
    sf.seed(RecordKind.opportunity, 3)
    sf.fake.fail(503, "SERVER_UNAVAILABLE", endpoint="query")
    policy, delays = recording_policy(base_delay_seconds=0.5)

    records = records_of(read(sf.connector(Runtime(retry=policy)), RecordKind.opportunity))

    assert len(records) == 3
    assert sf.fake.requests_to("query") == 2
    assert len(delays) == 1
    assert 0 <= delays[0] <= 0.5


def test_given_answers_slower_than_timeout_when_reading_then_retriable_after_max_attempts(
    sf: SalesforceHarness,
) -> None:
    sf.seed(RecordKind.lead, 1)
    sf.fake.slow(1.0, endpoint="query", times=3)
    policy, delays = recording_policy(max_attempts=3)
    connector = sf.connector(Runtime(retry=policy, timeout_seconds=0.2))

    # Each attempt gave up at the client's timeout (the fake answers after 1 s, 3 times):
    # how long that takes is measured in bench/, not asserted here.
    with pytest.raises(RetriableError, match="timed out"):
        read(connector, RecordKind.lead)

    assert sf.fake.requests_to("query") == 3
    assert len(delays) == 2


@pytest.mark.parametrize(
    ("endpoint", "body"),
    [
        ("query", b'{"totalSize": 3, "done": fa'),
        ("queryMore", b'{"totalSize": 3, "done": false, "records": "nope"}'),
        ("query", b'{"totalSize": 1, "done": false, "records": []}'),
        (
            "query",
            b'{"totalSize":1,"done":true,"records":[{"attributes":{},'
            b'"CreatedDate":"yesterday","SystemModstamp":"2026-01-05T09:00:00.000+0000"}]}',
        ),
    ],
    ids=["truncated-json", "records-not-a-list", "not-done-without-next-url", "bad-record-no-id"],
)
def test_given_malformed_page_when_reading_then_source_data_error(
    sf: SalesforceHarness, endpoint: str, body: bytes
) -> None:
    sf.seed(RecordKind.lead, 5)
    sf.set_page_size(2)
    sf.fake.malformed(body, endpoint=endpoint)

    with pytest.raises(SourceDataError):
        read(sf.connector(), RecordKind.lead)


def test_given_a_record_with_an_unreadable_field_when_reading_then_it_alone_is_skipped(
    sf: SalesforceHarness,
) -> None:
    body = (
        b'{"totalSize":2,"done":true,"records":['
        b'{"attributes":{},"Id":"00Q1","CreatedDate":"yesterday",'
        b'"SystemModstamp":"2026-01-05T09:00:00.000+0000"},'
        b'{"attributes":{},"Id":"00Q2","CreatedDate":"2026-01-05T09:00:00.000+0000",'
        b'"SystemModstamp":"2026-01-05T09:00:00.000+0000","Status":"Open"}]}'
    )
    # An initial window asks COUNT() first (Bulk or REST); the page answers both queries.
    sf.fake.malformed(body, endpoint="query", times=2)

    pages = list(sf.connector().read(RecordKind.lead, EVERYTHING))

    assert [r.source_id for p in pages for r in p.records] == ["00Q2"]
    (skipped,) = [s for p in pages for s in p.skipped]
    assert skipped.source_id == "00Q1"
    assert "CreatedDate" in skipped.reason


def test_given_unknown_custom_field_when_reading_then_config_error(sf: SalesforceHarness) -> None:
    sf.seed(RecordKind.lead, 1)
    config = sf.config(custom_fields={"lead": {"Missing__c": "string"}})

    with pytest.raises(ConfigError, match="INVALID_FIELD"):
        read(sf.connector(config=config), RecordKind.lead)


def test_given_malformed_query_answer_when_reading_then_config_error_without_retry(
    sf: SalesforceHarness,
) -> None:
    sf.fake.fail(400, "MALFORMED_QUERY", "unexpected token: 'FORM'", endpoint="query")
    policy, delays = recording_policy()

    with pytest.raises(ConfigError, match="MALFORMED_QUERY"):
        read(sf.connector(Runtime(retry=policy)), RecordKind.lead)
    assert delays == []


def test_given_request_budget_when_spent_mid_read_then_stops_and_resumes_from_checkpoint(
    sf: SalesforceHarness,
) -> None:
    sf.seed(RecordKind.lead, 10)
    sf.set_page_size(3)
    policy, _ = recording_policy(request_budget=2)  # the login and the first batch
    pages: list[Page] = []

    with pytest.raises(RequestBudgetExceededError):
        pages.extend(sf.connector(Runtime(retry=policy)).read(RecordKind.lead, SINCE_2026))

    assert len(pages) == 1
    rest = list(sf.connector().read(RecordKind.lead, SINCE_2026, resume=pages[0].checkpoint))
    ids = [r.source_id for r in records_of(pages + rest)]
    assert sorted(ids) == sorted(sf.live_ids(RecordKind.lead))


# ----------------------------------------------------------------------------- TLS & secrets


def test_given_no_ca_bundle_when_checking_then_fails_fast_with_tls_config_error(
    sf: SalesforceHarness,
) -> None:
    policy, delays = recording_policy()
    connector = SalesforceConnector(
        sf.config(),
        sf.secrets(),
        Runtime(retry=policy, timeout_seconds=5, allowed_hosts=ALLOWED_HOSTS),
    )

    with pytest.raises(ConfigError, match="TLS verification failed.*CA bundle"):
        connector.check()
    # Fails fast: a TLS verdict is not retried.
    assert delays == []


def _errors_from_every_failure(sf: SalesforceHarness) -> list[ConnectorError]:
    policy, _ = recording_policy(max_attempts=2)
    fast = Runtime(retry=policy, timeout_seconds=0.2)
    attempts = [
        lambda: sf.bad_credentials_connector().check(),
        lambda: sf.connector(secrets=sf.secrets(client_secret="wrong-secret-value")).check(),
        lambda: SalesforceConnector(
            sf.config(), sf.secrets(), Runtime(allowed_hosts=ALLOWED_HOSTS)
        ).check(),
    ]

    def injected(*faults: Fault) -> Any:
        def run() -> None:
            for fault in faults:
                sf.fake.inject(fault)
            read(sf.connector(fast), RecordKind.lead)

        return run

    password = sf.fake.password + sf.fake.security_token
    echo = json.dumps({"error": "invalid_grant", "error_description": f"bad {password}"})
    attempts += [
        injected(Fault("token", 400, raw_body=echo.encode())),
        injected(Fault("query", 401, times=2)),
        injected(Fault("query", 500, times=2)),
        injected(Fault("query", None, delay=0.5, times=2)),
        injected(Fault("query", 403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")),
        injected(Fault("query", 400, "INVALID_FIELD", f"No such column {sf.fake.client_secret}")),
    ]
    errors = []
    for attempt in attempts:
        with pytest.raises(ConnectorError) as caught:
            attempt()
        errors.append(caught.value)
    return errors


def test_given_any_failure_when_raising_then_message_never_contains_a_secret(
    sf: SalesforceHarness,
) -> None:
    sf.seed(RecordKind.lead, 1)

    errors = _errors_from_every_failure(sf)

    fake = sf.fake
    secrets = [fake.client_secret, fake.password, fake.security_token, fake.client_id]
    secrets += fake.issued_tokens
    assert len(errors) == 9
    for error in errors:
        text = str(error) + repr(error) + "".join(traceback.format_exception(error))
        leaked = [s for s in secrets if s in text]
        assert not leaked, f"{type(error).__name__} leaks a secret: {error}"


# ----------------------------------------------------------------------------- reading


def test_given_soft_deleted_records_when_reading_then_yielded_as_deleted(
    sf: SalesforceHarness,
) -> None:
    ids = sf.fake.seed("Lead", 5)
    sf.fake.tick()
    sf.fake.delete("Lead", ids[1])
    sf.fake.delete("Lead", ids[3])

    records = records_of(read(sf.connector(), RecordKind.lead))

    assert {r.source_id for r in records if r.deleted} == {ids[1], ids[3]}
    assert {r.source_id for r in records if not r.deleted} == sf.live_ids(RecordKind.lead)
    query = next(r for r in sf.fake.log if r.endpoint == "query")
    assert "/queryAll" in query.path


def test_given_lead_when_reading_then_normalised_fields_and_raw_are_filled(
    sf: SalesforceHarness,
) -> None:
    sf.fake.add_field("Lead", "Customer_Type__c", "string")
    lead_id = sf.fake.insert(
        "Lead",
        Status="Working - Contacted",
        LeadSource="Partner Referral",
        Email="ana@example.com",
        Company="Tartempion",
        Customer_Type__c="SMB",
    )
    config = sf.config(custom_fields={"lead": {"Customer_Type__c": "string"}})

    [record] = records_of(read(sf.connector(config=config), RecordKind.lead))

    stamp = sf.fake.now()
    assert record.source_id == lead_id
    assert (record.status, record.lead_source, record.email) == (
        "Working - Contacted",
        "Partner Referral",
        "ana@example.com",
    )
    assert record.owner == "0055g00000AbCdEAAV"
    assert record.created_at == record.modified_at == stamp
    assert record.is_closed is None
    assert record.is_won is None
    assert record.amount is None
    assert record.raw["IsConverted"] is False
    assert record.raw["Customer_Type__c"] == "SMB"
    assert record.raw["SystemModstamp"] == stamp.isoformat()
    assert "attributes" not in record.raw


@pytest.mark.parametrize(("multi_currency", "expected_currency"), [(False, "EUR"), (True, "USD")])
def test_given_opportunity_when_reading_then_stage_amount_and_currency_are_normalised(
    tmp_path: Path, multi_currency: bool, expected_currency: str
) -> None:
    with make_harness(tmp_path, multi_currency=multi_currency) as sf:
        extra = {"CurrencyIsoCode": "USD"} if multi_currency else {}
        sf.fake.insert(
            "Opportunity",
            Name="Tartempion renewal",
            StageName="Closed Won",
            IsClosed=True,
            IsWon=True,
            CloseDate="2026-03-31",
            Amount=15000.5,
            Type="New Customer",
            LeadSource="Word of mouth",
            **extra,
        )
        config = sf.config(multi_currency=multi_currency)

        [record] = records_of(read(sf.connector(config=config), RecordKind.opportunity))

    assert (record.stage, record.is_closed, record.is_won) == ("Closed Won", True, True)
    assert record.close_date == date(2026, 3, 31)
    assert record.amount == Decimal("15000.5")
    assert record.currency == expected_currency
    assert (record.deal_type, record.lead_source) == ("New Customer", "Word of mouth")
    assert record.status is None


def test_given_window_bounds_inside_a_second_when_reading_then_filtered_exactly(
    sf: SalesforceHarness,
) -> None:
    # SOQL only compares whole seconds; the connector widens and then filters exactly.
    [first, second] = sf.fake.seed("Lead", 2, per_second=1)
    stamp = datetime.fromisoformat(sf.fake.record("Lead", second)["SystemModstamp"])
    half = timedelta(milliseconds=500)
    connector = sf.connector()

    before = records_of(read(connector, RecordKind.lead, Window(SINCE_2026.start, stamp + half)))
    after = records_of(read(connector, RecordKind.lead, Window(stamp - half, SINCE_2026.end)))
    exact = records_of(read(connector, RecordKind.lead, Window(stamp, stamp)))

    assert {r.source_id for r in before} == {first, second}
    assert {r.source_id for r in after} == {second}
    assert exact == []


def test_given_filter_values_with_quotes_when_reading_then_escaped_and_matched(
    sf: SalesforceHarness,
) -> None:
    ivory = sf.fake.insert("Lead", Country="Côte d'Ivoire", LeadSource="Web")
    sf.fake.insert("Lead", Country="France", LeadSource="Web")
    sf.fake.insert("Lead", Country="Côte d'Ivoire", LeadSource="Other")
    config = sf.config(
        filters={"lead": {"Country": "Côte d'Ivoire", "LeadSource": ["Web", "Partner Referral"]}}
    )
    injection = sf.config(filters={"lead": {"Country": "x' OR Country != 'y"}})

    matched = records_of(read(sf.connector(config=config), RecordKind.lead))
    injected = records_of(read(sf.connector(config=injection), RecordKind.lead))

    assert [r.source_id for r in matched] == [ivory]
    assert injected == []
    soql = next(r for r in sf.fake.log if r.endpoint == "query").query
    assert "Country+%3D+%27C%C3%B4te+d%5C%27Ivoire%27" in soql


def test_given_expired_query_cursor_when_paging_then_query_restarts_after_last_record(
    sf: SalesforceHarness,
) -> None:
    sf.seed(RecordKind.lead, 9)
    sf.set_page_size(3)
    pages = sf.connector().read(RecordKind.lead, SINCE_2026)
    first = next(pages)

    sf.fake.expire_cursors()
    rest = list(pages)

    ids = [r.source_id for r in records_of([first, *rest])]
    assert len(ids) == len(set(ids)) == 9
    assert sf.fake.requests_to("query") == 2


def test_given_a_stuck_query_cursor_when_paging_then_source_data_error_not_a_loop(
    sf: SalesforceHarness,
) -> None:
    sf.seed(RecordKind.lead, 9)
    sf.set_page_size(3)
    sf.fake.stuck_cursors = True

    with pytest.raises(SourceDataError, match="query cursor already read"):
        read(sf.connector(), RecordKind.lead, SINCE_2026)
    # The next batch was asked for once; it named itself as the next: no further request.
    assert sf.fake.requests_to("queryMore") == 1


def test_given_a_stuck_bulk_locator_when_reading_then_source_data_error_not_a_loop(
    sf: SalesforceHarness,
) -> None:
    sf.seed(RecordKind.lead, 12)
    sf.fake.stuck_cursors = True
    config = sf.config(bulk_threshold=1, bulk_page_size=5)

    with pytest.raises(SourceDataError, match="result locator already read"):
        read(sf.connector(config=config), RecordKind.lead, EVERYTHING)
    # The first result set, then the next one, which named itself as the next.
    assert sf.fake.requests_to("bulk_results") == 2


def test_given_checkpoint_when_resuming_then_keyset_clause_is_sent(sf: SalesforceHarness) -> None:
    sf.seed(RecordKind.lead, 6)
    sf.set_page_size(4)
    connector = sf.connector()
    first = next(iter(connector.read(RecordKind.lead, SINCE_2026)))

    rest = records_of(list(connector.read(RecordKind.lead, SINCE_2026, resume=first.checkpoint)))

    assert first.checkpoint is not None
    assert len(first.records) + len(rest) == 6
    soql = [r.query for r in sf.fake.log if r.endpoint == "query"][-1]
    assert "SystemModstamp+%3E+" in soql
    assert "Id+%3E+%27" in soql


def test_given_malformed_checkpoint_when_resuming_then_config_error(sf: SalesforceHarness) -> None:
    pages = sf.connector().read(RecordKind.lead, SINCE_2026, resume={"after": 1})
    with pytest.raises(ConfigError, match="checkpoint"):
        next(pages)


# ----------------------------------------------------------------------------- Bulk API 2.0


def test_given_initial_sync_above_threshold_when_reading_then_bulk_yields_same_records_as_rest(
    sf: SalesforceHarness,
) -> None:
    sf.fake.add_field("Opportunity", "Seats__c", "number")
    ids = sf.fake.seed("Opportunity", 23)
    sf.fake.tick()
    sf.fake.update("Opportunity", ids[0], Seats__c=12)
    sf.fake.delete("Opportunity", ids[5])
    sf.fake.bulk_polls_before_complete = 2
    custom = {"opportunity": {"Seats__c": "number"}}
    bulk_config = sf.config(bulk_threshold=10, bulk_page_size=7, custom_fields=custom)
    rest_config = sf.config(bulk_threshold=None, custom_fields=custom)
    policy, delays = recording_policy()

    bulk_pages = read(
        sf.connector(Runtime(retry=policy), config=bulk_config), RecordKind.opportunity, EVERYTHING
    )
    rest_pages = read(sf.connector(config=rest_config), RecordKind.opportunity, EVERYTHING)

    def by_id(pages: list[Page]) -> list[Record]:
        return sorted(records_of(pages), key=lambda r: r.source_id)

    assert by_id(bulk_pages) == by_id(rest_pages)
    assert len(by_id(bulk_pages)) == 23
    assert [len(p.records) for p in bulk_pages] == [7, 7, 7, 2]
    # One monthly slice (every stamp is in one month): its pages resume at the slice's
    # start until the last one, which marks the whole window read.
    assert [p.checkpoint for p in bulk_pages] == [
        {"bulk_done_before": EVERYTHING.start.isoformat()}
    ] * 3 + [{"bulk_done_before": EVERYTHING.end.isoformat()}]
    assert sf.fake.requests_to("bulk_create") == 1
    assert delays == [2.0, 4.0]  # two InProgress polls, doubling delay, no real sleep


def test_given_incremental_window_when_many_records_then_rest_without_count(
    sf: SalesforceHarness,
) -> None:
    sf.seed(RecordKind.lead, 12)
    connector = sf.connector(config=sf.config(bulk_threshold=5))

    records = records_of(read(connector, RecordKind.lead, SINCE_2026))

    assert len(records) == 12
    assert sf.fake.requests_to("bulk_create") == 0
    assert sf.fake.requests_to("query") == 1  # no COUNT() either


def test_given_initial_sync_below_threshold_when_reading_then_counts_then_uses_rest(
    sf: SalesforceHarness,
) -> None:
    sf.seed(RecordKind.lead, 4)

    records = records_of(
        read(sf.connector(config=sf.config(bulk_threshold=4)), RecordKind.lead, EVERYTHING)
    )

    assert len(records) == 4
    queries = [r.query for r in sf.fake.log if r.endpoint == "query"]
    assert len(queries) == 2
    assert "COUNT%28%29" in queries[0]
    assert sf.fake.requests_to("bulk_create") == 0


def test_given_bulk_job_fails_when_reading_then_retriable_error_with_reason(
    sf: SalesforceHarness,
) -> None:
    sf.seed(RecordKind.lead, 6)
    sf.fake.bulk_failure = "Retried more than 15 times"
    policy, _ = recording_policy()
    connector = sf.connector(Runtime(retry=policy), config=sf.config(bulk_threshold=1))

    with pytest.raises(RetriableError, match="Failed: Retried more than 15 times"):
        read(connector, RecordKind.lead, EVERYTHING)


def test_given_stamps_from_the_fake_when_rendered_then_use_salesforce_format() -> None:
    # Guards the fake itself: REST renders datetimes like `...000+0000`.
    assert sf_datetime(datetime(2026, 11, 26, 18, 45, 43, tzinfo=UTC)) == (
        "2026-11-26T18:45:43.000+0000"
    )
