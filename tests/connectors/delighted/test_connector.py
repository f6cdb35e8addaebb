"""Delighted-specific behaviour: paging, second granularity, errors, retries, redaction."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from connectors.base import Record, RecordKind, Window
from connectors.delighted.connector import DelightedConfig, DelightedConnector
from connectors.errors import (
    AuthError,
    ConfigError,
    ConnectorError,
    RateLimitedError,
    RetriableError,
    SourceDataError,
)
from connectors.retry import retry_after_seconds
from tests.connectors.delighted.harness import (
    API_KEY,
    START_CLOCK,
    DelightedHarness,
    make_harness,
    make_runtime,
)

SR = RecordKind.survey_response
EVERYTHING = Window(datetime(1970, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[DelightedHarness]:
    with make_harness(tmp_path) as h:
        yield h


def read_records(connector: DelightedConnector, window: Window = EVERYTHING) -> list[Record]:
    return [r for page in connector.read(SR, window) for r in page.records]


def at(second: int, micro: int = 0) -> datetime:
    return datetime.fromtimestamp(second, UTC) + timedelta(microseconds=micro)


def json_page(body: str) -> httpx.Response:
    return httpx.Response(200, content=body.encode(), headers={"Content-Type": "application/json"})


def test_given_more_responses_than_a_page_when_reading_then_each_is_yielded_once(
    harness: DelightedHarness,
) -> None:
    harness.seed(SR, 23)
    connector = harness.make_connector(per_page=5)

    records = read_records(connector)

    ids = [r.source_id for r in records]
    assert sorted(ids, key=int) == sorted(harness.live_ids(SR), key=int)
    assert len(ids) == len(set(ids))
    requests = harness.fake.list_requests()
    assert len(requests) >= 5
    first = requests[0].url.params
    assert first["per_page"] == "5"
    assert first["order"] == "asc:updated_at"
    assert first.get_list("expand[]") == ["person"]


def test_given_a_fake_serving_fewer_than_asked_when_reading_then_paging_continues(
    harness: DelightedHarness,
) -> None:
    harness.seed(SR, 30)
    harness.set_page_size(4)

    records = read_records(harness.make_connector(per_page=100))

    assert {r.source_id for r in records} == harness.live_ids(SR)


def test_given_responses_in_neighbouring_seconds_when_reading_a_sub_second_window_then_it_is_cut_exactly(  # noqa: E501
    harness: DelightedHarness,
) -> None:
    t = START_CLOCK
    for second in (t - 1, t, t + 1, t + 2):
        harness.fake.add(at=second)
    connector = harness.make_connector()

    shifted = read_records(connector, Window(at(t, 500_000), at(t + 2)))
    aligned = read_records(connector, Window(at(t), at(t + 2)))

    assert [r.modified_at for r in shifted] == [at(t + 1)]
    assert [r.modified_at for r in aligned] == [at(t), at(t + 1)]
    params = harness.fake.list_requests()[0].url.params
    assert (params["updated_since"], params["updated_until"]) == (str(t), str(t + 2))


def test_given_expanded_people_when_reading_then_email_properties_and_utc_times_are_kept(
    harness: DelightedHarness,
) -> None:
    created = harness.fake.add(score=9, email="anna@client.example", customer_type="New Customer")
    harness.fake.tick(60)
    harness.fake.update(created["id"], comment="Great onboarding")

    (record,) = read_records(harness.make_connector())

    assert record.kind is SR
    assert record.score == 9
    assert record.email == "anna@client.example"
    assert record.created_at == at(START_CLOCK)
    assert record.modified_at == at(START_CLOCK + 60)
    assert record.created_at.tzinfo is UTC
    assert record.raw["person_properties"]["Customer Type"] == "New Customer"
    assert record.raw["comment"] == "Great onboarding"


def test_given_a_response_never_updated_when_reading_then_modified_at_is_created_at(
    harness: DelightedHarness,
) -> None:
    harness.fake.add(updated_at=None)

    (record,) = read_records(harness.make_connector())

    assert record.modified_at == record.created_at == at(START_CLOCK)


def test_given_a_response_edited_between_two_pages_when_reading_then_none_is_skipped(
    harness: DelightedHarness,
) -> None:
    for _ in range(12):
        harness.fake.tick()
        harness.fake.add()
    everyone = set(harness.live_ids(SR))

    def edit_an_already_read_response(list_requests_so_far: int) -> None:
        if list_requests_so_far == 1:
            harness.fake.tick()
            harness.fake.update("2", comment="changed mid-run")

    harness.fake.after_list = edit_an_already_read_response

    records = read_records(harness.make_connector(per_page=4))

    # Page numbers would have shifted response 5 onto page 1 after "2" moved to the end.
    assert {r.source_id for r in records} == everyone
    assert [r for r in records if r.source_id == "2"][-1].raw["comment"] == "changed mid-run"


def test_given_a_checkpoint_when_resuming_then_reading_restarts_at_that_second(
    harness: DelightedHarness,
) -> None:
    harness.seed(SR, 20)
    connector = harness.make_connector(per_page=6)
    pages = list(connector.read(SR, EVERYTHING))
    checkpoint = pages[1].checkpoint
    assert checkpoint is not None

    rest = [r for p in connector.read(SR, EVERYTHING, resume=checkpoint) for r in p.records]

    second = checkpoint["updated_since"]
    assert {r.source_id for r in rest} == {
        r.source_id for p in pages for r in p.records if r.modified_at >= at(second)
    }


def test_given_a_malformed_checkpoint_when_resuming_then_config_error(
    harness: DelightedHarness,
) -> None:
    with pytest.raises(ConfigError):
        list(harness.make_connector().read(SR, EVERYTHING, resume={"page": 3}))


def test_given_a_429_with_retry_after_when_reading_then_the_policy_waits_that_long(
    harness: DelightedHarness,
) -> None:
    harness.seed(SR, 3)
    harness.fake.script(httpx.Response(429, headers={"Retry-After": "7"}))
    sleeps: list[float] = []

    records = read_records(harness.make_connector(runtime=make_runtime(sleeps)))

    assert sleeps == [7.0]
    assert {r.source_id for r in records} == harness.live_ids(SR)


def test_given_a_503_then_success_when_reading_then_the_read_completes_after_one_retry(
    harness: DelightedHarness,
) -> None:
    harness.seed(SR, 3)
    harness.fake.script(httpx.Response(503))
    sleeps: list[float] = []
    runtime = make_runtime(sleeps)

    records = read_records(harness.make_connector(runtime=runtime))

    assert len(sleeps) == 1
    assert runtime.retry.retries == 1
    assert {r.source_id for r in records} == harness.live_ids(SR)


def test_given_timeouts_on_every_attempt_when_reading_then_retriable_error_after_all_attempts(
    harness: DelightedHarness,
) -> None:
    harness.seed(SR, 3)
    harness.fake.script(*(httpx.ReadTimeout("read timed out") for _ in range(3)))
    sleeps: list[float] = []

    with pytest.raises(RetriableError) as caught:
        read_records(harness.make_connector(runtime=make_runtime(sleeps, max_attempts=3)))

    assert not isinstance(caught.value, RateLimitedError)
    assert len(harness.fake.list_requests()) == 3
    assert len(sleeps) == 2


def test_given_a_wrong_api_key_when_reading_then_auth_error_without_retry(
    harness: DelightedHarness,
) -> None:
    harness.seed(SR, 3)
    sleeps: list[float] = []

    with pytest.raises(AuthError):
        read_records(harness.make_connector(api_key="wrong", runtime=make_runtime(sleeps)))

    assert len(harness.fake.list_requests()) == 1
    assert sleeps == []


@pytest.mark.parametrize(
    "body",
    ["<html>Service temporarily unavailable</html>", '{"not": "a list"}', '[{"score": 9}]'],
    ids=["html", "object", "no-id"],
)
def test_given_a_malformed_page_when_reading_then_source_data_error(
    harness: DelightedHarness, body: str
) -> None:
    harness.fake.script(json_page(body))

    with pytest.raises(SourceDataError):
        read_records(harness.make_connector())


GOOD = '{"id": "2", "score": 9, "created_at": 1767268800, "updated_at": 1767268801}'


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ('{"id": "1", "score": 9}', "created_at is not a unix timestamp"),
        ('{"id": "1", "score": 11, "created_at": 1767268800, "updated_at": 1767268800}', "score"),
        ('{"id": "1", "score": 9, "created_at": "yesterday", "updated_at": null}', "created_at"),
        (
            '{"id": "1", "score": 9, "created_at": 1767268800, "updated_at": 1767268800,'
            ' "person_properties": "New Customer"}',
            "person_properties",
        ),
    ],
    ids=["no-created-at", "score-11", "text-time", "bad-properties"],
)
def test_given_a_malformed_answer_beside_a_good_one_when_reading_then_it_alone_is_skipped(
    harness: DelightedHarness, bad: str, reason: str
) -> None:
    harness.fake.script(json_page(f"[{bad}, {GOOD}]"), json_page("[]"))

    pages = list(harness.make_connector().read(SR, EVERYTHING))

    assert [r.source_id for p in pages for r in p.records] == ["2"]
    (skipped,) = [s for p in pages for s in p.skipped]
    assert skipped.source_id == "1"
    assert reason in skipped.reason


def test_given_a_page_out_of_updated_at_order_when_reading_then_source_data_error(
    harness: DelightedHarness,
) -> None:
    t = START_CLOCK
    harness.fake.script(
        json_page(
            f'[{{"id": "1", "score": 9, "created_at": {t}, "updated_at": {t + 5}}},'
            f' {{"id": "2", "score": 9, "created_at": {t}, "updated_at": {t + 1}}}]'
        )
    )

    with pytest.raises(SourceDataError, match="order"):
        read_records(harness.make_connector())


def test_given_an_api_ignoring_page_when_a_second_spans_pages_then_it_fails_instead_of_looping(
    harness: DelightedHarness,
) -> None:
    harness.seed(SR, 9)
    harness.stamp_all_equal(SR)
    harness.fake.ignore_page = True

    with pytest.raises(SourceDataError, match="same page twice"):
        read_records(harness.make_connector(per_page=4))


def echo_key(request: httpx.Request) -> httpx.Response:
    return httpx.Response(404, text=f"no route for {request.headers['Authorization']} {API_KEY}")


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(401, text=f"bad key {API_KEY}"),
        httpx.Response(403, text=f"plan {API_KEY}"),
        httpx.Response(429, text=f"slow down {API_KEY}"),
        httpx.Response(500, text=f"oops {API_KEY}"),
        httpx.Response(422, text=f"invalid {API_KEY}"),
        echo_key,
        httpx.ConnectError(f"cannot connect with {API_KEY}"),
        json_page(f"not json {API_KEY}"),
    ],
    ids=["401", "403", "429", "500", "422", "404-echo", "connect", "garbage"],
)
def test_given_any_failure_when_raising_then_the_api_key_is_not_in_the_message(
    harness: DelightedHarness, answer: httpx.Response | Exception
) -> None:
    harness.fake.script(answer)

    with pytest.raises(ConnectorError) as caught:
        read_records(harness.make_connector(runtime=make_runtime(max_attempts=1)))

    assert API_KEY not in str(caught.value)
    assert API_KEY not in caught.value.message


def test_given_good_credentials_when_checking_then_metrics_json_is_probed(
    harness: DelightedHarness,
) -> None:
    harness.seed(SR, 4)

    result = harness.make_connector().check()

    assert result.ok
    assert "4 responses" in result.detail
    assert [r.url.path for r in harness.fake.requests] == ["/v1/metrics.json"]


def test_given_a_rejected_key_when_checking_then_auth_error(harness: DelightedHarness) -> None:
    with pytest.raises(AuthError):
        harness.make_connector(api_key="wrong").check()


@pytest.mark.parametrize(
    "base_url",
    [
        "api.delighted.com/v1",
        "ftp://api.delighted.com",
        "https://key:@api.delighted.com/v1",
        "https://api.delighted.com/v1?x=1",
    ],
)
def test_given_an_unusable_base_url_when_configuring_then_it_is_rejected(base_url: str) -> None:
    with pytest.raises(ValidationError):
        DelightedConfig(base_url=base_url)


def test_given_per_page_above_100_when_configuring_then_it_is_rejected() -> None:
    with pytest.raises(ValidationError):
        DelightedConfig(per_page=101)


def test_given_a_trailing_slash_when_configuring_then_the_base_url_is_normalised() -> None:
    assert DelightedConfig(base_url="https://proxy.example/v1/").base_url == (
        "https://proxy.example/v1"
    )


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("7", 7.0),
        (" 2.5 ", 2.5),
        ("-3", 0.0),
        ("soon", None),
        (None, None),
        ("Thu, 01 Jan 2026 12:00:30 GMT", 30.0),
        ("Thu, 01 Jan 2026 11:59:00 GMT", 0.0),
        ("Thu, 01 Jan 2026 12:00:30", 30.0),
    ],
)
def test_given_a_retry_after_header_when_parsing_then_seconds_are_counted_from_the_date_header(
    header: str | None, expected: float | None
) -> None:
    assert retry_after_seconds(header, "Thu, 01 Jan 2026 12:00:00 GMT") == expected


def test_given_an_http_date_retry_after_without_a_date_header_then_no_wait_is_guessed() -> None:
    # Our own clock is never compared with the vendor's: the retry policy backs off instead.
    assert retry_after_seconds("Thu, 01 Jan 2026 12:00:30 GMT", None) is None
    assert retry_after_seconds("12", None) == 12.0
