"""Workspaces: one company each, created, read by slug, changed and deleted with everything."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select
from sqlmodel import SQLModel

import service.models  # noqa: F401 - registers every table
from service.okr.models import InitiativeKeyResult
from service.workspaces.models import Workspace
from tests.factories import (
    API,
    assert_problem,
    list_all,
    make_team,
    make_tree,
    make_workspace,
    ok,
)


def test_given_nothing_when_a_workspace_is_created_then_it_has_defaults_and_can_be_read(
    client: TestClient,
) -> None:
    created = make_workspace(client, "acme", name="ACME Corp")
    assert created["slug"] == "acme"
    assert created["name"] == "ACME Corp"
    assert created["timezone"] == "UTC"
    assert (created["on_track_margin"], created["at_risk_margin"]) == (0.10, 0.25)
    assert isinstance(created["id"], int)
    assert ok(client.get(f"{API}/workspaces/acme")) == created
    assert list_all(client, "workspaces") == [created]


def test_given_a_workspace_when_patched_then_name_time_zone_and_margins_change(
    client: TestClient,
) -> None:
    created = make_workspace(client, "acme")
    change = {
        "name": "Acme",
        "timezone": "Europe/Paris",
        "on_track_margin": 0.05,
        "at_risk_margin": 0.3,
    }
    patched = ok(client.patch(f"{API}/workspaces/acme", json=change))
    assert patched == created | change
    assert ok(client.get(f"{API}/workspaces/acme")) == patched


def test_given_a_workspace_with_content_when_deleted_then_all_of_it_goes_and_others_stay(
    client: TestClient, engine: Engine
) -> None:
    acme = make_workspace(client, "acme")
    make_workspace(client, "other")
    make_tree(client, ws="acme")
    make_tree(client, ws="other")
    other_before = {
        resource: list_all(client, resource, ws="other")
        for resource in ("teams", "periods", "objectives", "key-results", "initiatives")
    }
    ok(client.delete(f"{API}/workspaces/acme"), 204)
    assert_problem(client.get(f"{API}/workspaces/acme"), 404)
    assert [w["slug"] for w in list_all(client, "workspaces")] == ["other"]
    for resource, rows in other_before.items():
        assert list_all(client, resource, ws="other") == rows
    # Nothing of acme is left in any table that belongs to a workspace.
    with engine.connect() as conn:
        for table in SQLModel.metadata.sorted_tables:
            if "workspace_id" in table.c:
                query = select(func.count()).where(table.c.workspace_id == acme["id"])
                assert conn.execute(query).scalar_one() == 0, table.name
        assert conn.execute(select(func.count()).select_from(InitiativeKeyResult)).scalar_one() == (
            3  # other's links only: its two initiatives serve 2 + 1 key results
        )


def test_given_two_workspaces_when_no_header_is_sent_then_the_oldest_is_used(
    client: TestClient,
) -> None:
    make_workspace(client, "first")
    make_workspace(client, "second")
    make_team(client, "In second", ws="second")
    make_team(client, "In first")
    assert [t["name"] for t in list_all(client, "teams")] == ["In first"]
    assert [t["name"] for t in list_all(client, "teams", ws="first")] == ["In first"]


def test_given_no_workspace_when_the_api_is_used_then_it_is_a_404_naming_the_header(
    client: TestClient,
) -> None:
    assert_problem(client.get(f"{API}/teams"), 404, "X-Workspace")
    assert_problem(client.post(f"{API}/teams", json={"name": "x"}), 404, "X-Workspace")
    assert list_all(client, "workspaces") == []


def test_given_one_margin_when_it_crosses_the_default_other_then_it_is_a_422_naming_it(
    client: TestClient,
) -> None:
    # The reported case: stored, then every GET /workspaces answered 500.
    response = client.post(
        f"{API}/workspaces", json={"slug": "a", "name": "A", "on_track_margin": 0.5}
    )
    assert_problem(response, 422, "on_track_margin")
    response = client.post(
        f"{API}/workspaces", json={"slug": "a", "name": "A", "at_risk_margin": 0.05}
    )
    assert_problem(response, 422, "at_risk_margin")
    both = {"slug": "a", "name": "A", "on_track_margin": 0.3, "at_risk_margin": 0.2}
    assert_problem(client.post(f"{API}/workspaces", json=both), 422, "at_risk_margin")
    assert list_all(client, "workspaces") == []
    equal = make_workspace(client, "b", on_track_margin=0.5, at_risk_margin=0.5)
    assert (equal["on_track_margin"], equal["at_risk_margin"]) == (0.5, 0.5)


def test_given_stored_margins_when_one_is_patched_across_the_other_then_it_is_a_422(
    client: TestClient,
) -> None:
    created = make_workspace(client, "acme")  # margins 0.10 and 0.25
    for change, field in (
        ({"on_track_margin": 0.5}, "on_track_margin"),
        ({"at_risk_margin": 0.05}, "at_risk_margin"),
        ({"on_track_margin": 0.5, "at_risk_margin": 0.4}, "at_risk_margin"),
    ):
        assert_problem(client.patch(f"{API}/workspaces/acme", json=change), 422, field)
    assert ok(client.get(f"{API}/workspaces/acme")) == created
    both = {"on_track_margin": 0.5, "at_risk_margin": 0.6}
    assert ok(client.patch(f"{API}/workspaces/acme", json=both)) == created | both
    assert list_all(client, "workspaces") == [created | both]


def test_given_crossed_margins_stored_before_the_check_when_read_then_reads_answer(
    client: TestClient, engine: Engine
) -> None:
    make_workspace(client, "acme")
    make_tree(client)
    with engine.begin() as conn:  # as the reported request left it
        conn.execute(
            Workspace.__table__.update().values(on_track_margin=0.5, at_risk_margin=0.25)  # type: ignore[attr-defined]
        )
    assert [w["on_track_margin"] for w in list_all(client, "workspaces")] == [0.5]
    assert ok(client.get(f"{API}/workspaces/acme"))["at_risk_margin"] == 0.25
    statuses = [o["status"] for o in ok(client.get(f"{API}/progress?period=2026"))["objectives"]]
    assert statuses
