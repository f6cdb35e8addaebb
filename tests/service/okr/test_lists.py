"""List endpoints: keyset pagination (limit + cursor) and filters."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from service.main import create_app
from tests.conftest import FrozenClock, bearer, issue_token, make_settings
from tests.factories import (
    API,
    assert_problem,
    check_in,
    list_all,
    make_initiative,
    make_key_result,
    make_objective,
    make_period,
    make_team,
    make_tree,
    make_workspace,
    ok,
)

RESOURCES = ("teams", "periods", "objectives", "key-results", "initiatives", "workspaces")


@pytest.fixture
def small_pages(database_url: str, engine: Engine, clock: FrozenClock) -> Iterator[TestClient]:
    """A client over an app whose pages hold 3 rows by default and 4 at most."""
    settings = make_settings(database_url, page_limit_default=3, page_limit_max=4)
    app = create_app(settings, engine, clock=clock)
    with TestClient(app, raise_server_exceptions=False) as client:
        client.headers.update(bearer(issue_token(engine)))
        yield client


def _fill(client: TestClient, n: int) -> None:
    """`n` rows of every listed resource, spread over 2 workspaces (the first is default)."""
    make_workspace(client, "acme")
    make_workspace(client, "other")
    for ws in ("other", None):  # rows of another workspace interleave ids
        period = make_period(client, "2026", ws=ws)
        objective = make_objective(client, period["id"], "Base", ws=ws)
        kr = make_key_result(client, objective["id"], "Base", ws=ws)
        for i in range(n - 1):
            make_team(client, f"Team {i}", ws=ws)
            make_period(client, f"P{i}", "2026-01-01", "2026-02-01", ws=ws)
            make_objective(client, period["id"], f"O{i}", ws=ws)
            make_key_result(client, objective["id"], f"KR{i}", ws=ws)
            make_initiative(client, [kr["id"]], f"I{i}", ws=ws)
        make_team(client, "Last", ws=ws)
        make_initiative(client, [kr["id"]], "Last", ws=ws)
    for i in range(n - 2):
        make_workspace(client, f"ws-{i}")


def test_given_rows_when_walking_pages_then_every_row_comes_exactly_once_in_id_order(
    client: TestClient,
) -> None:
    _fill(client, 7)
    for resource in RESOURCES:
        everything = ok(client.get(f"{API}/{resource}", params={"limit": 100}))["items"]
        assert len(everything) == 7, resource
        for limit in (1, 2, 3, 6, 7, 8, None):
            rows = list_all(client, resource, limit=limit)
            ids = [row["id"] for row in rows]
            assert ids == sorted(set(ids)), (resource, limit)
            assert rows == everything, (resource, limit)


def test_given_a_limit_when_a_page_is_read_then_it_holds_at_most_that_many_and_a_cursor(
    small_pages: TestClient,
) -> None:
    _fill(small_pages, 7)
    first = ok(small_pages.get(f"{API}/teams"))
    assert len(first["items"]) == 3  # the default page size
    assert first["next_cursor"]
    capped = ok(small_pages.get(f"{API}/teams", params={"limit": 1000}))
    assert len(capped["items"]) == 4  # the maximum page size
    second = ok(small_pages.get(f"{API}/teams", params={"cursor": first["next_cursor"]}))
    assert [t["id"] for t in second["items"]][0] > first["items"][-1]["id"]
    walked = list_all(small_pages, "teams")
    assert [t["id"] for t in walked] == sorted({t["id"] for t in walked})
    assert len(walked) == 7


def test_given_the_last_page_when_read_then_it_has_no_cursor(client: TestClient) -> None:
    make_workspace(client)
    make_team(client, "A")
    make_team(client, "B")
    page = ok(client.get(f"{API}/teams", params={"limit": 2}))
    assert len(page["items"]) == 2
    assert page["next_cursor"] is None
    assert ok(client.get(f"{API}/teams", params={"limit": 5})) == page


def test_given_a_key_result_history_when_walked_in_pages_then_every_point_comes_once(
    client: TestClient,
) -> None:
    make_workspace(client)
    kr = make_key_result(client, make_objective(client, make_period(client)["id"])["id"])
    for value in range(9):
        check_in(client, kr["id"], value)
    points = list_all(client, f"key-results/{kr['id']}/history", limit=2)
    assert [p["value"] for p in points] == list(range(9))
    assert len({p["id"] for p in points}) == 9


@pytest.mark.parametrize(
    "cursor",
    [
        "not-a-cursor!",
        base64.urlsafe_b64encode(b"page:3").decode(),
        base64.urlsafe_b64encode(b"id:-3").decode(),
        base64.urlsafe_b64encode(b"id:x").decode(),
        "\u00e9t\u00e9",
    ],
)
def test_given_a_cursor_the_api_never_issued_when_listing_then_it_is_a_422_naming_cursor(
    client: TestClient, cursor: str
) -> None:
    make_workspace(client)
    assert_problem(client.get(f"{API}/teams", params={"cursor": cursor}), 422, "cursor")


def test_given_a_cursor_past_every_possible_id_when_listing_then_the_page_is_empty(
    client: TestClient,
) -> None:
    make_workspace(client)
    make_team(client)
    for big in (2**31, 2**70):
        cursor = base64.urlsafe_b64encode(f"id:{big}".encode()).decode()
        page = ok(client.get(f"{API}/teams", params={"cursor": cursor}))
        assert page == {"items": [], "next_cursor": None}


@pytest.mark.parametrize("limit", ["0", "-1", "ten"])
def test_given_a_bad_limit_when_listing_then_it_is_a_422_naming_limit(
    client: TestClient, limit: str
) -> None:
    make_workspace(client)
    assert_problem(client.get(f"{API}/objectives", params={"limit": limit}), 422, "limit")


# ---------------------------------------------------------------------------- filters


def _titles(rows: list[dict[str, object]]) -> set[object]:
    return {row["title"] for row in rows}


def test_given_objectives_in_periods_when_filtered_by_period_name_or_id_then_only_theirs_come(
    client: TestClient,
) -> None:
    make_workspace(client)
    tree = make_tree(client)
    year, q1 = tree["periods"]
    assert _titles(list_all(client, "objectives", period="2026")) == {"Reach 1M ARR", "Win deals"}
    assert _titles(list_all(client, "objectives", period=str(q1["id"]))) == {"Hire"}
    assert _titles(list_all(client, "objectives", period="2026-Q1")) == {"Hire"}
    assert _titles(list_all(client, "key-results", period="2026")) == {"ARR", "Deals won", "NPS"}
    assert _titles(list_all(client, "key-results", period=str(q1["id"]))) == {"Hires"}
    assert year["id"] != q1["id"]


@pytest.mark.parametrize("ref", ["2030", "9999", "0", "99999999999999999999", "\u00b2", " "])
def test_given_an_unknown_period_when_filtering_then_it_is_a_404_naming_period(
    client: TestClient, ref: str
) -> None:
    make_workspace(client)
    make_tree(client)
    for resource in ("objectives", "key-results"):
        response = client.get(f"{API}/{resource}", params={"period": ref})
        assert_problem(response, 404, "period")
    assert_problem(client.get(f"{API}/progress", params={"period": ref}), 404, "period")


def test_given_a_period_named_like_another_ones_id_when_filtering_then_the_name_wins(
    client: TestClient,
) -> None:
    make_workspace(client)
    first = make_period(client, "First")
    named = make_period(client, str(first["id"]), "2027-01-01", "2028-01-01")
    make_objective(client, first["id"], "In first")
    make_objective(client, named["id"], "In named")
    assert _titles(list_all(client, "objectives", period=str(first["id"]))) == {"In named"}


def test_given_objectives_of_teams_when_filtered_by_team_then_only_theirs_come(
    client: TestClient,
) -> None:
    make_workspace(client)
    tree = make_tree(client)
    company, sales = tree["teams"]
    assert _titles(list_all(client, "objectives", team=company["id"])) == {"Reach 1M ARR"}
    assert _titles(list_all(client, "objectives", team=sales["id"])) == {"Win deals"}
    assert _titles(list_all(client, "key-results", team=company["id"])) == {"ARR", "NPS"}
    both = list_all(client, "key-results", team=sales["id"], period="2026")
    assert _titles(both) == {"Deals won"}
    assert list_all(client, "objectives", team=9999) == []


def test_given_key_results_when_filtered_by_objective_then_only_its_own_come(
    client: TestClient,
) -> None:
    make_workspace(client)
    top = make_tree(client)["objectives"][0]
    assert _titles(list_all(client, "key-results", objective=top["id"])) == {"ARR", "NPS"}


@pytest.mark.parametrize("param", ["team", "objective"])
@pytest.mark.parametrize("value", [0, -5, 2**31, 2**64])
def test_given_an_id_filter_out_of_range_when_listing_then_it_is_a_422_naming_it(
    client: TestClient, param: str, value: int
) -> None:
    make_workspace(client)
    response = client.get(f"{API}/key-results", params={param: value})
    assert_problem(response, 422, param)


def test_given_statuses_when_filtered_by_status_then_pages_hold_exactly_the_matching_rows(
    client: TestClient,
) -> None:
    """Half of 2026 has elapsed at the frozen clock: expected progress is 0.5."""
    make_workspace(client)
    period = make_period(client)
    wanted = {
        "no_data": [],
        "achieved": [100, 120],
        "on_track": [40, 55, 90],  # >= 0.40
        "at_risk": [25, 39],  # >= 0.25
        "off_track": [0, 10, 24],
    }
    expected: dict[str, set[int]] = {status: set() for status in wanted}
    objectives: dict[str, set[int]] = {status: set() for status in wanted}
    for status, values in wanted.items():
        objective = make_objective(client, period["id"], f"All {status}")
        objectives[status].add(objective["id"])
        for value in values or [None]:
            kr = make_key_result(client, objective["id"], f"{status} {value}")
            if value is not None:
                check_in(client, kr["id"], value)
            expected[status].add(kr["id"])
    for status in wanted:
        for limit in (1, 2, None):
            rows = list_all(client, "key-results", status=status, limit=limit)
            assert [r["id"] for r in rows] == sorted(expected[status]), (status, limit)
            objs = list_all(client, "objectives", status=status, limit=limit)
            assert {o["id"] for o in objs} == objectives[status], (status, limit)
    assert_problem(client.get(f"{API}/key-results", params={"status": "great"}), 422, "status")


def test_given_initiatives_when_filtered_by_status_or_key_result_then_only_those_come(
    client: TestClient,
) -> None:
    make_workspace(client)
    tree = make_tree(client)
    arr, deals, nps, hires = tree["key_results"]
    assert _titles(list_all(client, "initiatives", status="done")) == {"Offsite"}
    assert _titles(list_all(client, "initiatives", status="planned")) == {"Sales engagement"}
    assert _titles(list_all(client, "initiatives", key_result=deals["id"])) == {"Sales engagement"}
    assert _titles(list_all(client, "initiatives", key_result=hires["id"])) == {"Offsite"}
    assert list_all(client, "initiatives", key_result=nps["id"]) == []
    assert arr["id"] in tree["initiatives"][0]["key_result_ids"]
