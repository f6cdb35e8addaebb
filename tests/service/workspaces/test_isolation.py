"""Workspace isolation through the `X-Workspace` header: a workspace sees only its own rows;
another workspace's rows are reported exactly like missing ones."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.factories import (
    API,
    LISTED,
    assert_problem,
    dump,
    headers,
    list_all,
    make_tree,
    make_workspace,
    ok,
)

A, B = "alpha", "beta"


@pytest.fixture
def trees(client: TestClient) -> dict[str, dict[str, Any]]:
    make_workspace(client, A)
    make_workspace(client, B)
    return {A: make_tree(client, ws=A), B: make_tree(client, ws=B)}


def test_given_two_workspaces_when_listing_then_each_sees_only_its_own_rows(
    client: TestClient, trees: dict[str, dict[str, Any]]
) -> None:
    for ws in (A, B):
        assert {o["id"] for o in list_all(client, "objectives", ws=ws)} == {
            o["id"] for o in trees[ws]["objectives"]
        }
        assert {k["id"] for k in list_all(client, "key-results", ws=ws)} == {
            k["id"] for k in trees[ws]["key_results"]
        }
        for resource in LISTED:
            assert len(list_all(client, resource, ws=ws)) == len(
                trees[ws][resource.replace("-", "_")]
            )
    a_ids = {k["id"] for k in trees[A]["key_results"]}
    assert a_ids.isdisjoint(k["id"] for k in trees[B]["key_results"])


@pytest.mark.parametrize(
    "path",
    [
        "/key-results/{kr}",
        "/key-results/{kr}/progress",
        "/key-results/{kr}/history",
        "/objectives/{objective}",
        "/objectives/{objective}/progress",
        "/teams/{team}",
        "/periods/{period}",
        "/initiatives/{initiative}",
    ],
)
def test_given_a_row_of_workspace_a_when_read_from_b_then_it_is_a_404(
    client: TestClient, trees: dict[str, dict[str, Any]], path: str
) -> None:
    a = trees[A]
    url = API + path.format(
        kr=a["key_results"][1]["id"],
        objective=a["objectives"][0]["id"],
        team=a["teams"][0]["id"],
        period=a["periods"][0]["id"],
        initiative=a["initiatives"][0]["id"],
    )
    assert client.get(url, headers=headers(A)).status_code == 200
    body = assert_problem(client.get(url, headers=headers(B)), 404)
    # The same answer as for an id that exists nowhere: ids leak nothing.
    nowhere = API + path.format(kr=9999, objective=9999, team=9999, period=9999, initiative=9999)
    missing = assert_problem(client.get(nowhere, headers=headers(B)), 404)
    assert body.keys() == missing.keys()
    assert body["title"] == missing["title"]
    assert body["detail"] == missing["detail"].replace("9999", url.split("/")[4])


def test_given_a_key_result_of_a_when_changed_from_b_then_it_is_a_404_and_nothing_changes(
    client: TestClient, trees: dict[str, dict[str, Any]]
) -> None:
    kr = trees[A]["key_results"][1]
    before = {ws: dump(client, ws) for ws in (A, B)}
    url = f"{API}/key-results/{kr['id']}"
    assert_problem(client.patch(url, json={"title": "mine"}, headers=headers(B)), 404)
    assert_problem(client.delete(url, headers=headers(B)), 404)
    check_in = client.post(f"{url}/check-ins", json={"value": 1}, headers=headers(B))
    assert_problem(check_in, 404)
    assert {ws: dump(client, ws) for ws in (A, B)} == before


def test_given_a_key_result_of_b_when_an_initiative_of_a_links_it_then_it_is_a_422(
    client: TestClient, trees: dict[str, dict[str, Any]]
) -> None:
    theirs = trees[B]["key_results"][0]["id"]
    mine = trees[A]["key_results"][0]["id"]
    initiative = trees[A]["initiatives"][0]
    before = {ws: dump(client, ws) for ws in (A, B)}
    created = client.post(
        f"{API}/initiatives",
        json={"title": "Steal", "key_result_ids": [mine, theirs]},
        headers=headers(A),
    )
    body = assert_problem(created, 422, "key_result_ids")
    assert str(theirs) in body["detail"]
    patched = client.patch(
        f"{API}/initiatives/{initiative['id']}",
        json={"key_result_ids": [theirs]},
        headers=headers(A),
    )
    assert_problem(patched, 422, "key_result_ids")
    assert {ws: dump(client, ws) for ws in (A, B)} == before


def test_given_rows_of_b_when_referenced_from_a_then_each_reference_is_a_422_naming_it(
    client: TestClient, trees: dict[str, dict[str, Any]]
) -> None:
    a, b = trees[A], trees[B]
    before = {ws: dump(client, ws) for ws in (A, B)}
    attempts = [
        ("/objectives", {"title": "x", "period_id": b["periods"][0]["id"]}, "period_id"),
        (
            "/objectives",
            {"title": "x", "period_id": a["periods"][0]["id"], "team_id": b["teams"][0]["id"]},
            "team_id",
        ),
        (
            "/objectives",
            {
                "title": "x",
                "period_id": a["periods"][0]["id"],
                "parent_id": b["objectives"][0]["id"],
            },
            "parent_id",
        ),
        (
            "/key-results",
            {"title": "x", "objective_id": b["objectives"][0]["id"], "start": 0, "target": 1},
            "objective_id",
        ),
        ("/teams", {"name": "x", "parent_id": b["teams"][0]["id"]}, "parent_id"),
    ]
    for path, body, field in attempts:
        assert_problem(client.post(f"{API}{path}", json=body, headers=headers(A)), 422, field)
    assert {ws: dump(client, ws) for ws in (A, B)} == before


def test_given_a_period_of_b_when_the_tree_is_read_from_a_then_it_is_a_404(
    client: TestClient, trees: dict[str, dict[str, Any]]
) -> None:
    b_period = trees[B]["periods"][0]["id"]
    assert b_period not in {p["id"] for p in trees[A]["periods"]}
    assert ok(client.get(f"{API}/progress", params={"period": b_period}, headers=headers(B)))
    response = client.get(f"{API}/progress", params={"period": b_period}, headers=headers(A))
    assert_problem(response, 404, "period")
    by_name = client.get(f"{API}/progress", params={"period": "2026"}, headers=headers(A))
    assert ok(by_name)["period_id"] == trees[A]["periods"][0]["id"]


def test_given_filters_naming_b_rows_when_listing_from_a_then_nothing_of_b_comes(
    client: TestClient, trees: dict[str, dict[str, Any]]
) -> None:
    b = trees[B]
    assert list_all(client, "objectives", ws=A, team=b["teams"][0]["id"]) == []
    assert list_all(client, "key-results", ws=A, objective=b["objectives"][0]["id"]) == []
    assert list_all(client, "initiatives", ws=A, key_result=b["key_results"][1]["id"]) == []


def test_given_an_unknown_workspace_header_when_used_then_it_is_a_404_naming_the_header(
    client: TestClient, trees: dict[str, dict[str, Any]]
) -> None:
    response = client.get(f"{API}/objectives", headers=headers("gamma"))
    body = assert_problem(response, 404, "X-Workspace")
    assert "gamma" in body["detail"]
