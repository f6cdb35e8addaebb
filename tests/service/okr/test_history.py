"""A key result's history for charts and spreadsheets: day and week buckets in the
workspace's time zone (continuous, DST-correct), CSV of points and of buckets (paginated
by `Link`, safe to open in a spreadsheet), and 422s naming the parameter at fault.
Time is the injected clock, set in 2027 (the DST nights of the brief)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session

from service.auth.models import Role
from service.main import create_app
from service.okr.models import KeyResult, ValueSource
from service.okr.service import record_value
from tests.conftest import FrozenClock, bearer, issue_token, make_settings
from tests.factories import (
    API,
    assert_problem,
    check_in,
    make_key_result,
    make_objective,
    make_period,
    make_workspace,
    ok,
)

#: "Now" for these tests: late 2027, after both of its DST nights in Europe/Paris.
NOW = datetime(2027, 12, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _now(clock: FrozenClock) -> None:
    clock.now = NOW


def _kr(client: TestClient, timezone: str = "UTC", **fields: Any) -> int:
    """A key result (increase 0 -> 100) of the 2027 period, in a workspace of `timezone`."""
    make_workspace(client, timezone=timezone)
    period = make_period(client, "2027", "2027-01-01", "2028-01-01")
    kr = make_key_result(client, make_objective(client, period["id"])["id"], **fields)
    return int(kr["id"])


def _history(client: TestClient, kr: int, **params: Any) -> httpx.Response:
    return client.get(f"{API}/key-results/{kr}/history", params=params)


def _buckets(client: TestClient, kr: int, **params: Any) -> dict[str, Any]:
    body: dict[str, Any] = ok(_history(client, kr, **params))
    return body


def _rows(response: httpx.Response) -> list[list[str]]:
    assert response.status_code == 200, response.text
    return list(csv.reader(io.StringIO(response.text)))


def _compact(body: dict[str, Any]) -> list[tuple[str, float | None, int]]:
    return [(b["start"], b["value"], b["count"]) for b in body["items"]]


# ---------------------------------------------------------------------------- raw points


def test_given_points_when_read_without_parameters_then_the_json_page_is_unchanged(
    client: TestClient,
) -> None:
    kr = _kr(client)
    assert ok(_history(client, kr)) == {"items": [], "next_cursor": None}
    check_in(client, kr, 1, at="2027-02-01T10:00:00Z")
    body = ok(_history(client, kr))
    assert set(body) == {"items", "next_cursor"}
    assert [p["value"] for p in body["items"]] == [1]
    assert body["next_cursor"] is None


def test_given_points_when_read_as_csv_then_a_header_row_and_one_row_per_point_in_order(
    client: TestClient,
) -> None:
    kr = _kr(client)
    first = check_in(client, kr, 12.5, at="2027-02-01T10:00:00+01:00", note='after "the" show, ok')
    second = check_in(client, kr, -3, at="2027-01-15T08:30:00.250000Z", note="two\nlines")
    response = _history(client, kr, format="csv")
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"] == (
        f'attachment; filename="key-result-{kr}-history.csv"'
    )
    assert "link" not in response.headers
    assert response.text.startswith(
        "id,key_result_id,at,value,source,note,mapping_id,mapping_version,details\r\n"
    )
    assert _rows(response) == [
        [
            "id",
            "key_result_id",
            "at",
            "value",
            "source",
            "note",
            "mapping_id",
            "mapping_version",
            "details",
        ],
        # Recording order (ids), as the JSON pages; times in UTC as in the JSON.
        [str(first["id"]), str(kr), "2027-02-01T09:00:00Z", "12.5", "manual"]
        + ['after "the" show, ok', "", "", ""],
        [str(second["id"]), str(kr), "2027-01-15T08:30:00.250000Z", "-3.0", "manual"]
        + ["two\nlines", "", "", ""],
    ]


def test_given_synced_points_when_read_as_csv_then_mapping_and_details_are_columns(
    client: TestClient, engine: Engine
) -> None:
    kr = _kr(client)
    with Session(engine) as session:
        key_result = session.get(KeyResult, kr)
        assert key_result is not None
        record_value(
            session,
            key_result,
            value=None,
            at=datetime(2027, 3, 1, tzinfo=UTC),
            source=ValueSource.sync,
            mapping_id=7,
            mapping_version=2,
            details={"responses": 0, "a": "=x"},
        )
        session.commit()
    rows = _rows(_history(client, kr, format="csv"))
    assert rows[1][2:] == [
        "2027-03-01T00:00:00Z",
        "",
        "sync",
        "",
        "7",
        "2",
        '{"a":"=x","responses":0}',
    ]


def test_given_notes_that_look_like_formulas_when_exported_then_they_are_quoted_as_text(
    client: TestClient,
) -> None:
    kr = _kr(client)
    notes = ['=HYPERLINK("http://x")', "+1+1", "-2", "@SUM(A1)", "\tpad", "a=b", "safe"]
    for value, note in enumerate(notes):
        check_in(client, kr, -value, at="2027-02-01T10:00:00Z", note=note)
    rows = _rows(_history(client, kr, format="csv"))[1:]
    assert [row[5] for row in rows] == [
        '\'=HYPERLINK("http://x")',
        "'+1+1",
        "'-2",
        "'@SUM(A1)",
        "'\tpad",
        "a=b",
        "safe",
    ]
    # Numbers are no text: a negative value stays a number.
    assert [row[3] for row in rows] == ["0.0", "-1.0", "-2.0", "-3.0", "-4.0", "-5.0", "-6.0"]


def test_given_more_points_than_a_csv_holds_when_exported_then_link_leads_to_the_rest(
    database_url: str, engine: Engine, clock: FrozenClock
) -> None:
    app = create_app(make_settings(database_url, history_csv_max_rows=3), engine, clock=clock)
    with TestClient(app, raise_server_exceptions=False) as client:
        client.headers.update(bearer(issue_token(engine)))
        kr = _kr(client)
        ids = [check_in(client, kr, v, at="2027-02-01T10:00:00Z")["id"] for v in range(7)]
        got: list[str] = []
        url: str | None = f"{API}/key-results/{kr}/history?format=csv"
        pages = 0
        while url is not None:
            response = client.get(url)
            rows = _rows(response)
            assert rows[0][0] == "id"
            assert len(rows) - 1 <= 3
            got += [row[0] for row in rows[1:]]
            link = response.links.get("next")
            url = None if link is None else link["url"]
            if url is not None:
                assert url.startswith(f"/api/v1/key-results/{kr}/history?")
            pages += 1
        assert pages == 3
        assert got == [str(i) for i in ids]
        # `limit` asks for fewer, never more, than the server's cap.
        assert len(_rows(_history(client, kr, format="csv", limit=2))) == 3
        assert len(_rows(_history(client, kr, format="csv", limit=500))) == 4
        # The JSON pages keep their own size and cursor.
        assert len(ok(_history(client, kr))["items"]) == 7


# ---------------------------------------------------------------------------- buckets


def test_given_points_when_bucketed_by_day_then_each_day_ends_at_its_last_point_and_gaps_carry(
    client: TestClient,
) -> None:
    kr = _kr(client)
    check_in(client, kr, 5, at="2027-02-01T10:00:00Z")  # before the range: carried in
    check_in(client, kr, 8, at="2027-02-03T09:00:00Z")
    check_in(client, kr, 10, at="2027-02-03T18:00:00Z")
    check_in(client, kr, 9, at="2027-02-03T12:00:00Z")  # back-dated: not the day's last
    check_in(client, kr, 20, at="2027-02-06T23:59:59Z")
    body = _buckets(client, kr, bucket="day", **{"from": "2027-02-02", "to": "2027-02-08"})
    assert {k: body[k] for k in ("key_result_id", "bucket", "timezone", "from", "to")} == {
        "key_result_id": kr,
        "bucket": "day",
        "timezone": "UTC",
        "from": "2027-02-02",
        "to": "2027-02-08",
    }
    assert _compact(body) == [
        ("2027-02-02", 5, 0),
        ("2027-02-03", 10, 3),
        ("2027-02-04", 10, 0),
        ("2027-02-05", 10, 0),
        ("2027-02-06", 20, 1),
        ("2027-02-07", 20, 0),
    ]
    assert [b["start_at"] for b in body["items"][:2]] == [
        "2027-02-02T00:00:00Z",
        "2027-02-03T00:00:00Z",
    ]
    assert [b["value_at"] for b in body["items"][:3]] == [
        "2027-02-01T10:00:00Z",
        "2027-02-03T18:00:00Z",
        "2027-02-03T18:00:00Z",
    ]


def test_given_two_points_at_one_instant_when_bucketed_then_the_later_recorded_one_wins(
    client: TestClient,
) -> None:
    kr = _kr(client)
    check_in(client, kr, 1, at="2027-02-03T10:00:00Z")
    check_in(client, kr, 2, at="2027-02-03T10:00:00Z")
    body = _buckets(client, kr, bucket="day", **{"from": "2027-02-03", "to": "2027-02-04"})
    assert _compact(body) == [("2027-02-03", 2, 2)]


def test_given_days_before_the_first_point_when_bucketed_then_they_are_listed_with_null(
    client: TestClient,
) -> None:
    kr = _kr(client)
    check_in(client, kr, 4, at="2027-02-03T10:00:00Z")
    body = _buckets(client, kr, bucket="day", **{"from": "2027-02-01", "to": "2027-02-05"})
    assert _compact(body) == [
        ("2027-02-01", None, 0),
        ("2027-02-02", None, 0),
        ("2027-02-03", 4, 1),
        ("2027-02-04", 4, 0),
    ]
    assert body["items"][0]["value_at"] is None


def test_given_points_when_bucketed_by_week_then_iso_weeks_from_monday_carry_forward(
    client: TestClient,
) -> None:
    kr = _kr(client)
    check_in(client, kr, 3, at="2027-02-01T00:00:00Z")  # Monday, first instant of its week
    check_in(client, kr, 6, at="2027-02-07T23:59:59Z")  # Sunday, last instant of that week
    check_in(client, kr, 9, at="2027-02-22T08:00:00Z")
    # From a Wednesday: the first bucket is its whole week, from the Monday.
    body = _buckets(client, kr, bucket="week", **{"from": "2027-02-03", "to": "2027-03-01"})
    assert (body["from"], body["to"]) == ("2027-02-03", "2027-03-01")
    assert _compact(body) == [
        ("2027-02-01", 6, 2),
        ("2027-02-08", 6, 0),
        ("2027-02-15", 6, 0),
        ("2027-02-22", 9, 1),
    ]
    assert body["items"][1]["start_at"] == "2027-02-08T00:00:00Z"


def test_given_no_range_when_bucketed_then_the_window_up_to_today_is(
    client: TestClient, clock: FrozenClock
) -> None:
    clock.now = datetime(2027, 3, 10, 23, 30, tzinfo=UTC)  # already 11 March in Paris
    kr = _kr(client, "Europe/Paris")
    check_in(client, kr, 1, at="2027-03-10T23:15:00Z")
    body = _buckets(client, kr, bucket="day")
    assert (body["from"], body["to"]) == ("2027-01-01", "2027-03-12")
    assert len(body["items"]) == 31 + 28 + 11
    assert body["items"][-1] == {
        "start": "2027-03-11",
        "start_at": "2027-03-10T23:00:00Z",
        "value": 1,
        "value_at": "2027-03-10T23:15:00Z",
        "count": 1,
    }
    # A `to` past today is cut at today too; the key result's own window is its default.
    assert _buckets(client, kr, bucket="week", to="2030-01-01")["to"] == "2027-03-12"
    own = make_key_result(
        client,
        ok(client.get(f"{API}/key-results/{kr}"))["objective_id"],
        "Q1 hires",
        window_start="2027-02-01",
        window_end="2027-02-15",
    )
    weeks = _buckets(client, own["id"], bucket="week")
    assert (weeks["from"], weeks["to"]) == ("2027-02-01", "2027-02-15")
    assert [b["start"] for b in weeks["items"]] == ["2027-02-01", "2027-02-08"]


def test_given_a_range_not_yet_begun_when_bucketed_then_no_bucket_and_no_error(
    client: TestClient,
) -> None:
    kr = _kr(client)
    body = _buckets(client, kr, bucket="day", **{"from": "2028-06-01", "to": "2028-07-01"})
    assert body == {
        "key_result_id": kr,
        "bucket": "day",
        "timezone": "UTC",
        "from": "2028-06-01",
        "to": "2028-06-01",
        "items": [],
    }
    future = {"from": "2028-06-01", "to": "2028-07-01"}
    csv_rows = _rows(_history(client, kr, bucket="day", format="csv", **future))
    assert csv_rows == [["start", "start_at", "value", "value_at", "count"]]


# ---------------------------------------------------------------------------- DST


PARIS_SPRING = {
    # 23:59:59 CET on Saturday 27 March, and the first instant of Sunday 28 March.
    "2027-03-27T22:59:59Z": 1,
    "2027-03-27T23:00:00Z": 2,
    # Sunday 28 March is 23 hours long: 23:59:59 CEST, then Monday's first instant.
    "2027-03-28T21:59:59Z": 3,
    "2027-03-28T22:00:00Z": 4,
}
PARIS_AUTUMN = {
    # 23:59:59 CEST on Saturday 30 October, and the first instant of Sunday 31 October.
    "2027-10-30T21:59:59Z": 5,
    "2027-10-30T22:00:00Z": 6,
    # Sunday 31 October is 25 hours long: 23:59:59 CET, then Monday's first instant.
    "2027-10-31T22:59:59Z": 7,
    "2027-10-31T23:00:00Z": 8,
}


@pytest.fixture
def paris(client: TestClient) -> int:
    kr = _kr(client, "Europe/Paris")
    for at, value in (PARIS_SPRING | PARIS_AUTUMN).items():
        check_in(client, kr, value, at=at)
    return kr


def test_given_the_spring_forward_night_in_paris_when_bucketed_by_day_then_midnight_splits(
    client: TestClient, paris: int
) -> None:
    body = _buckets(client, paris, bucket="day", **{"from": "2027-03-27", "to": "2027-03-31"})
    assert [(b["start"], b["start_at"], b["value"], b["count"]) for b in body["items"]] == [
        ("2027-03-27", "2027-03-26T23:00:00Z", 1, 1),
        ("2027-03-28", "2027-03-27T23:00:00Z", 3, 2),
        ("2027-03-29", "2027-03-28T22:00:00Z", 4, 1),
        ("2027-03-30", "2027-03-29T22:00:00Z", 4, 0),
    ]


def test_given_the_fall_back_night_in_paris_when_bucketed_by_day_then_midnight_splits(
    client: TestClient, paris: int
) -> None:
    body = _buckets(client, paris, bucket="day", **{"from": "2027-10-30", "to": "2027-11-03"})
    assert [(b["start"], b["start_at"], b["value"], b["count"]) for b in body["items"]] == [
        ("2027-10-30", "2027-10-29T22:00:00Z", 5, 1),
        ("2027-10-31", "2027-10-30T22:00:00Z", 7, 2),
        ("2027-11-01", "2027-10-31T23:00:00Z", 8, 1),
        ("2027-11-02", "2027-11-01T23:00:00Z", 8, 0),
    ]


def test_given_both_dst_nights_in_paris_when_bucketed_by_week_then_sunday_night_splits(
    client: TestClient, paris: int
) -> None:
    body = _buckets(client, paris, bucket="week", **{"from": "2027-03-22", "to": "2027-11-08"})
    weeks = {b["start"]: (b["start_at"], b["value"], b["count"]) for b in body["items"]}
    assert len(weeks) == 33
    assert weeks["2027-03-22"] == ("2027-03-21T23:00:00Z", 3, 3)
    assert weeks["2027-03-29"] == ("2027-03-28T22:00:00Z", 4, 1)
    assert weeks["2027-04-05"] == ("2027-04-04T22:00:00Z", 4, 0)
    assert weeks["2027-10-25"] == ("2027-10-24T22:00:00Z", 7, 3)
    assert weeks["2027-11-01"] == ("2027-10-31T23:00:00Z", 8, 1)
    assert sum(count for _, _, count in weeks.values()) == 8


def test_given_buckets_when_exported_as_csv_then_one_row_per_bucket(
    client: TestClient, paris: int
) -> None:
    response = _history(
        client, paris, bucket="day", format="csv", **{"from": "2027-03-27", "to": "2027-03-30"}
    )
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"] == (
        f'attachment; filename="key-result-{paris}-history.csv"'
    )
    assert _rows(response) == [
        ["start", "start_at", "value", "value_at", "count"],
        ["2027-03-27", "2027-03-26T23:00:00Z", "1.0", "2027-03-27T22:59:59Z", "1"],
        ["2027-03-28", "2027-03-27T23:00:00Z", "3.0", "2027-03-28T21:59:59Z", "2"],
        ["2027-03-29", "2027-03-28T22:00:00Z", "4.0", "2027-03-28T22:00:00Z", "1"],
    ]


# ---------------------------------------------------------------------------- refusals


BAD = [
    ({"bucket": "month"}, "bucket"),
    ({"format": "xml"}, "format"),
    ({"bucket": "day", "from": "2027-02-30"}, "from"),
    ({"bucket": "day", "from": "86400"}, "from"),  # no Unix time read as a date
    ({"bucket": "day", "to": "2027-3-1"}, "to"),
    ({"bucket": "day", "from": "2027-03-01", "to": "2027-03-01"}, "to"),
    ({"bucket": "day", "from": "2027-03-01", "to": "2027-02-01"}, "to"),
    ({"bucket": "day", "to": "2026-06-01"}, "to"),
    ({"bucket": "day", "from": "2028-01-01"}, "from"),  # after the window, without `to`
    ({"bucket": "day", "from": "2020-01-01"}, "from"),  # 2,891 days: too many buckets
    ({"bucket": "week", "from": "0001-01-01"}, "from"),  # too many weeks as well
    ({"bucket": "day", "from": "0001-01-01", "to": "0001-01-03"}, "from"),  # no UTC instant
    ({"bucket": "day", "limit": 10}, "limit"),
    ({"bucket": "day", "cursor": "aWQ6MQ"}, "cursor"),
    ({"from": "2027-01-01"}, "from"),  # bounds buckets only
    ({"to": "2027-01-01", "format": "csv"}, "to"),
    ({"format": "csv", "cursor": "nope"}, "cursor"),
]


@pytest.mark.parametrize(("params", "field"), BAD)
def test_given_invalid_parameters_when_read_then_a_422_names_the_field(
    client: TestClient, params: dict[str, Any], field: str
) -> None:
    kr = _kr(client, "Europe/Paris")
    assert_problem(_history(client, kr, **params), 422, field)


def test_given_the_bucket_limit_when_the_range_reaches_it_then_it_is_served_not_beyond(
    client: TestClient,
) -> None:
    kr = _kr(client)
    # From 2025-03-07 to today (2027-12-01) included: 1,000 days.
    body = _buckets(client, kr, bucket="day", **{"from": "2025-03-07", "to": "2027-12-02"})
    assert len(body["items"]) == 1000
    refused = _history(client, kr, bucket="day", **{"from": "2025-03-06", "to": "2027-12-02"})
    problem = assert_problem(refused, 422, "from")
    assert "1001 day buckets" in problem["detail"]


# ---------------------------------------------------------------------------- who may read


def test_given_a_viewer_token_when_reading_every_form_then_it_may_and_another_workspace_may_not(
    client: TestClient, engine: Engine
) -> None:
    kr = _kr(client)
    check_in(client, kr, 1, at="2027-02-01T10:00:00Z")
    make_workspace(client, "rival")
    forms = ({}, {"format": "csv"}, {"bucket": "week"}, {"bucket": "day", "format": "csv"})
    client.headers.update(bearer(issue_token(engine, Role.viewer, "acme")))
    for params in forms:
        assert _history(client, kr, **params).status_code == 200, params
    client.headers.update(bearer(issue_token(engine, Role.viewer, "rival")))
    for params in forms:
        assert_problem(_history(client, kr, **params), 404)


# ---------------------------------------------------------------------------- OpenAPI


def test_given_the_document_then_history_offers_json_and_csv_and_describes_its_parameters(
    app: Any,
) -> None:
    operation = app.openapi()["paths"][f"{API}/key-results/{{key_result_id}}/history"]["get"]
    ok_response = operation["responses"]["200"]
    assert list(ok_response["content"]) == ["application/json", "text/csv"]
    refs = {s["$ref"] for s in ok_response["content"]["application/json"]["schema"]["anyOf"]}
    assert refs == {
        "#/components/schemas/Page_KeyResultValuePublic_",
        "#/components/schemas/HistoryBucketsPublic",
    }
    assert {"Content-Disposition", "Link"} <= set(ok_response["headers"])
    params = {p["name"]: p for p in operation["parameters"]}
    for name in ("bucket", "from", "to", "format"):
        assert params[name]["description"], name
    assert "422" in operation["responses"]
