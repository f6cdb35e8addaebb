"""Request fields take the JSON types the document gives them: a number is no date and
`false` is no number (pydantic's lax mode would read both), whatever the endpoint."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.factories import API, assert_problem, make_tree, make_workspace, ok


@pytest.fixture
def tree(client: TestClient) -> dict[str, Any]:
    make_workspace(client, "acme")
    return make_tree(client)


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("PATCH", "/periods/{period}", {"start": 0}, "start"),
        ("POST", "/key-results/{kr}/check-ins", {"value": 1, "at": 1_700_000_000}, "at"),
        ("POST", "/key-results/{kr}/check-ins", {"value": False}, "value"),
        ("PATCH", "/workspaces/acme", {"on_track_margin": False}, "on_track_margin"),
        ("POST", "/tokens", {"name": "t", "role": "viewer", "expires_at": 0}, "expires_at"),
        ("POST", "/mappings/preview", {"spec": {}, "sample_size": True}, "sample_size"),
    ],
)
def test_given_a_value_of_another_json_type_when_sent_then_422_names_the_field(
    client: TestClient,
    tree: dict[str, Any],
    method: str,
    path: str,
    body: dict[str, Any],
    field: str,
) -> None:
    url = API + path.format(period=tree["periods"][0]["id"], kr=tree["key_results"][0]["id"])
    body_problem = assert_problem(client.request(method, url, json=body), 422)
    assert field in {error["field"] for error in body_problem["errors"]}, body_problem


def test_given_dates_as_iso_text_and_numbers_as_numbers_then_they_are_taken(
    client: TestClient, tree: dict[str, Any]
) -> None:
    period = tree["periods"][0]["id"]
    changed = ok(client.patch(f"{API}/periods/{period}", json={"start": "2026-01-02"}))
    assert changed["start"] == "2026-01-02"
    kr = tree["key_results"][0]["id"]
    point = ok(client.post(f"{API}/key-results/{kr}/check-ins", json={"value": 0}), 201)
    assert point["value"] == 0
