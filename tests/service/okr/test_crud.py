"""Create, read, update and delete teams, periods, objectives, key results and initiatives."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi.testclient import TestClient

from tests.conftest import FrozenClock
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
    make_workspace,
    ok,
)


def _crud(
    client: TestClient, resource: str, created: dict[str, Any], change: dict[str, Any]
) -> None:
    """Read, list, patch, re-read, delete and miss one created row of `resource`."""
    url = f"{API}/{resource}/{created['id']}"
    assert ok(client.get(url)) == created
    assert created in list_all(client, resource)
    patched = ok(client.patch(url, json=change))
    assert patched == created | change
    assert ok(client.get(url)) == patched
    assert ok(client.delete(url), 204) is None
    assert_problem(client.get(url), 404)
    assert patched["id"] not in {row["id"] for row in list_all(client, resource)}


def test_given_a_workspace_when_a_team_is_created_then_it_can_be_read_changed_and_deleted(
    client: TestClient,
) -> None:
    make_workspace(client)
    company = make_team(client, "Company")
    sales = make_team(client, "Sales", parent_id=company["id"])
    assert sales == {"id": sales["id"], "name": "Sales", "parent_id": company["id"]}
    _crud(client, "teams", sales, {"name": "Sales EMEA", "parent_id": None})


def test_given_a_workspace_when_a_period_is_created_then_it_can_be_read_changed_and_deleted(
    client: TestClient,
) -> None:
    make_workspace(client)
    period = make_period(client, "2026-Q3", "2026-07-01", "2026-10-01")
    assert period == {
        "id": period["id"],
        "name": "2026-Q3",
        "start": "2026-07-01",
        "end": "2026-10-01",
    }
    _crud(client, "periods", period, {"name": "Q3", "end": "2026-09-30"})


def test_given_a_period_when_an_objective_is_created_then_it_can_be_read_changed_and_deleted(
    client: TestClient, clock: FrozenClock
) -> None:
    # created_at is the injected clock's, whatever the wall clock says.
    clock.now = datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)
    make_workspace(client)
    year = make_period(client)
    q1 = make_period(client, "2026-Q1", "2026-01-01", "2026-04-01")
    team = make_team(client)
    top = make_objective(client, year["id"], "Reach 1M ARR")
    objective = make_objective(
        client,
        year["id"],
        "Win deals",
        description="Through the new playbook",
        team_id=team["id"],
        parent_id=top["id"],
        weight=2,
    )
    assert objective["weight"] == 2.0
    assert objective["parent_id"] == top["id"]
    assert datetime.fromisoformat(objective["created_at"]) == clock.now
    change = {"title": "Win more deals", "period_id": q1["id"], "parent_id": None, "weight": 0.5}
    _crud(client, "objectives", objective, change)


def test_given_an_objective_when_a_key_result_is_created_then_it_can_be_read_changed_and_deleted(
    client: TestClient,
) -> None:
    make_workspace(client)
    objective = make_objective(client, make_period(client)["id"])
    kr = make_key_result(
        client,
        objective["id"],
        "ARR",
        unit="currency",
        currency="eur",
        start=0,
        target=1_000_000,
        window_start="2026-01-01",
        window_end="2026-07-01",
    )
    assert kr["currency"] == "EUR"  # normalised
    assert kr["value"] is None
    assert kr["value_at"] is None
    assert kr["kind"] == "increase"
    change = {
        "title": "ARR (EUR)",
        "target": 2_000_000.0,
        "weight": 3.0,
        "window_end": "2026-10-01",
    }
    _crud(client, "key-results", kr, change)


def test_given_key_results_when_an_initiative_is_created_then_it_can_be_read_changed_and_deleted(
    client: TestClient,
) -> None:
    make_workspace(client)
    objective = make_objective(client, make_period(client)["id"])
    kr1 = make_key_result(client, objective["id"], "Leads")
    kr2 = make_key_result(client, objective["id"], "Deals")
    initiative = make_initiative(
        client,
        [kr2["id"], kr1["id"], kr2["id"]],  # duplicates collapse, ids come back sorted
        "Sales Engagement Platform",
        owner="Sales",
        due_date="2026-12-31",
    )
    assert initiative["key_result_ids"] == [kr1["id"], kr2["id"]]
    assert initiative["status"] == "planned"
    assert initiative["progress"] == 0.0
    change = {"status": "in_progress", "progress": 0.4, "key_result_ids": [kr2["id"]]}
    _crud(client, "initiatives", initiative, change)


def test_given_a_team_with_an_objective_or_a_sub_team_when_deleted_then_it_is_a_409(
    client: TestClient,
) -> None:
    make_workspace(client)
    company = make_team(client, "Company")
    make_team(client, "Sales", parent_id=company["id"])
    ops = make_team(client, "Ops")
    make_objective(client, make_period(client)["id"], team_id=ops["id"])
    assert_problem(client.delete(f"{API}/teams/{company['id']}"), 409)
    assert_problem(client.delete(f"{API}/teams/{ops['id']}"), 409)
    assert len(list_all(client, "teams")) == 3


def test_given_a_period_with_objectives_when_deleted_then_it_is_a_409(client: TestClient) -> None:
    make_workspace(client)
    period = make_period(client)
    make_objective(client, period["id"])
    assert_problem(client.delete(f"{API}/periods/{period['id']}"), 409)
    assert ok(client.get(f"{API}/periods/{period['id']}")) == period


def test_given_an_objective_with_aligned_ones_when_deleted_then_it_is_a_409(
    client: TestClient,
) -> None:
    make_workspace(client)
    period = make_period(client)
    top = make_objective(client, period["id"], "Top")
    make_objective(client, period["id"], "Aligned", parent_id=top["id"])
    assert_problem(client.delete(f"{API}/objectives/{top['id']}"), 409)
    assert ok(client.get(f"{API}/objectives/{top['id']}")) == top


def test_given_an_objective_with_key_results_when_deleted_then_they_and_their_links_go_too(
    client: TestClient,
) -> None:
    make_workspace(client)
    period = make_period(client)
    doomed = make_objective(client, period["id"], "Doomed")
    kept = make_objective(client, period["id"], "Kept")
    gone = make_key_result(client, doomed["id"], "Gone")
    stays = make_key_result(client, kept["id"], "Stays")
    check_in(client, gone["id"], 5)
    initiative = make_initiative(client, [gone["id"], stays["id"]])
    ok(client.delete(f"{API}/objectives/{doomed['id']}"), 204)
    assert_problem(client.get(f"{API}/key-results/{gone['id']}"), 404)
    assert_problem(client.get(f"{API}/key-results/{gone['id']}/history"), 404)
    assert [kr["id"] for kr in list_all(client, "key-results")] == [stays["id"]]
    linked = ok(client.get(f"{API}/initiatives/{initiative['id']}"))
    assert linked["key_result_ids"] == [stays["id"]]


def test_given_a_key_result_when_deleted_then_its_initiatives_no_longer_list_it(
    client: TestClient,
) -> None:
    make_workspace(client)
    objective = make_objective(client, make_period(client)["id"])
    kr1 = make_key_result(client, objective["id"], "Leads")
    kr2 = make_key_result(client, objective["id"], "Deals")
    initiative = make_initiative(client, [kr1["id"], kr2["id"]])
    ok(client.delete(f"{API}/key-results/{kr1['id']}"), 204)
    assert ok(client.get(f"{API}/initiatives/{initiative['id']}"))["key_result_ids"] == [kr2["id"]]


def test_given_a_taken_name_when_a_team_or_period_is_created_or_renamed_then_it_is_a_409(
    client: TestClient,
) -> None:
    make_workspace(client)
    make_team(client, "Sales")
    ops = make_team(client, "Ops")
    make_period(client, "2026")
    q1 = make_period(client, "2026-Q1", "2026-01-01", "2026-04-01")
    assert_problem(client.post(f"{API}/teams", json={"name": "Sales"}), 409, "name")
    assert_problem(client.patch(f"{API}/teams/{ops['id']}", json={"name": "Sales"}), 409, "name")
    body = {"name": "2026", "start": "2026-01-01", "end": "2026-02-01"}
    assert_problem(client.post(f"{API}/periods", json=body), 409, "name")
    assert_problem(client.patch(f"{API}/periods/{q1['id']}", json={"name": "2026"}), 409, "name")
    assert {t["name"] for t in list_all(client, "teams")} == {"Sales", "Ops"}
    assert {p["name"] for p in list_all(client, "periods")} == {"2026", "2026-Q1"}


def test_given_an_empty_patch_when_applied_then_nothing_changes(client: TestClient) -> None:
    make_workspace(client)
    objective = make_objective(client, make_period(client)["id"])
    kr = make_key_result(client, objective["id"])
    assert ok(client.patch(f"{API}/key-results/{kr['id']}", json={})) == kr
    assert ok(client.patch(f"{API}/objectives/{objective['id']}", json={})) == objective


def test_given_a_key_result_when_its_kind_changes_with_consistent_fields_then_it_is_accepted(
    client: TestClient,
) -> None:
    make_workspace(client)
    objective = make_objective(client, make_period(client)["id"])
    kr = make_key_result(client, objective["id"], "NPS", start=0, target=50)
    change = {"kind": "at_least", "unit": "score", "start": None, "target": 80.0}
    assert ok(client.patch(f"{API}/key-results/{kr['id']}", json=change)) == kr | change
    milestone = {"kind": "milestone", "unit": "count", "target": 1.0}
    assert ok(client.patch(f"{API}/key-results/{kr['id']}", json=milestone)) == kr | change | (
        milestone
    )
