"""Isolation over every route, generated from the app's own routes: a token of one
workspace, whatever its role, never reads or changes another workspace (404, or 403 when
its role is too low), and no token at all is a 401 everywhere."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, MetaData, select

from service.auth.models import Role
from tests.conftest import bearer, issue_token
from tests.factories import API, make_tree, make_workspace, ok

#: Tables whose rows requests update as a side effect of being authenticated.
BOOKKEEPING = {"api_token"}


def _routes(app: FastAPI) -> list[tuple[str, str]]:
    # The OpenAPI document lists every route the app serves, with its methods.
    found = [
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        if path.startswith(API)
        for method in operations
    ]
    assert len(found) > 45
    return found


def _rows(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    meta = MetaData()
    meta.reflect(engine)
    with engine.connect() as conn:
        return {
            name: sorted(tuple(map(str, row)) for row in conn.execute(select(table)))
            for name, table in meta.tables.items()
            if name not in BOOKKEEPING
        }


@pytest.fixture
def rival(client: TestClient) -> dict[str, Any]:
    """Two workspaces; the ids and slug of everything in the second one."""
    make_workspace(client, "acme")
    make_workspace(client, "rival")
    tree = make_tree(client, ws="rival")
    headers = {"X-Workspace": "rival"}
    connector = ok(
        client.post(
            f"{API}/connectors",
            json={"name": "crm", "type": "demo", "config": {"size": 20}, "secrets": {}},
            headers=headers,
        ),
        201,
    )
    spec = {"type": "count", "connector_id": connector["id"], "kind": "lead"}
    kr = tree["key_results"][1]["id"]
    mapping = ok(
        client.post(f"{API}/mappings", json={"key_result_id": kr, "spec": spec}, headers=headers),
        201,
    )
    token = ok(
        client.post(f"{API}/tokens", json={"name": "their", "role": "viewer"}, headers=headers),
        201,
    )
    run = ok(client.post(f"{API}/connectors/{connector['id']}/sync", headers=headers), 202)
    return {
        "slug": "rival",
        "team_id": tree["teams"][0]["id"],
        "period_id": tree["periods"][0]["id"],
        "objective_id": tree["objectives"][0]["id"],
        "key_result_id": kr,
        "initiative_id": tree["initiatives"][0]["id"],
        "connector_id": connector["id"],
        "mapping_id": mapping["id"],
        "token_id": token["id"],
        "run_id": run["id"],
    }


def _body(method: str, path: str, ids: dict[str, Any]) -> dict[str, Any] | None:
    """A body that passes validation where one is required, so the answer is about the
    ids, not the body's shape."""
    if method not in {"POST", "PUT", "PATCH"}:
        return None
    if path.endswith("/check-ins"):
        return {"value": 1}
    if method == "PUT" and "/mappings/" in path:
        return {"spec": {"type": "count", "connector_id": ids["connector_id"], "kind": "lead"}}
    return {}


def _url(path: str, ids: dict[str, Any]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: str(ids[m.group(1)]), path)


@pytest.mark.parametrize("role", list(Role))
def test_given_a_workspace_token_when_every_route_targets_another_workspace_then_never_2xx(
    app: FastAPI, client: TestClient, engine: Engine, rival: dict[str, Any], role: Role
) -> None:
    token = issue_token(engine, role, "acme", name=f"acme {role}")
    before = _rows(engine)
    answers = {}
    for method, path in _routes(app):
        # Paths without an id of the other workspace name it in X-Workspace instead.
        headers = bearer(token) | ({} if "{" in path else {"X-Workspace": "rival"})
        body = _body(method, path, rival)
        response = client.request(method, _url(path, rival), headers=headers, json=body)
        answers[f"{method} {path}"] = response.status_code
    if role is Role.admin:
        # An admin has every role: only "not found" is left (or, for creating a workspace,
        # "needs a deployment token"); listing workspaces shows its own only.
        listing = answers.pop(f"GET {API}/workspaces")
        assert listing == 200
        assert answers.pop(f"POST {API}/workspaces") == 403
        assert {k: v for k, v in answers.items() if v != 404} == {}
    else:
        answers.pop(f"GET {API}/workspaces")
        assert {k: v for k, v in answers.items() if v not in (403, 404)} == {}
        assert 404 in answers.values()
    assert _rows(engine) == before
    listed = ok(client.get(f"{API}/workspaces", headers=bearer(token)))["items"]
    assert [w["slug"] for w in listed] == ["acme"]


def test_given_another_workspaces_id_in_a_body_when_writing_then_422_names_the_field(
    client: TestClient, engine: Engine, rival: dict[str, Any]
) -> None:
    token = issue_token(engine, Role.admin, "acme")
    before = _rows(engine)
    cases = [
        ("/objectives", {"title": "x", "period_id": rival["period_id"]}, "period_id"),
        ("/key-results", {"objective_id": rival["objective_id"], "title": "x", "target": 1},
         "objective_id"),
        ("/mappings", {"key_result_id": rival["key_result_id"],
                       "spec": {"type": "count", "connector_id": rival["connector_id"],
                                "kind": "lead"}}, "key_result_id"),
    ]  # fmt: skip
    for path, body, field in cases:
        response = client.post(f"{API}{path}", json=body, headers=bearer(token))
        assert response.status_code in (404, 422), response.text
        assert response.json()["field"] == field
    assert _rows(engine) == before


def test_given_no_token_when_calling_every_route_then_401_and_nothing_changes(
    app: FastAPI, client: TestClient, engine: Engine, rival: dict[str, Any]
) -> None:
    before = _rows(engine)
    for method, path in _routes(app):
        body = {} if method in {"POST", "PUT", "PATCH"} else None
        response = client.request(
            method, _url(path, rival), headers={"Authorization": ""}, json=body
        )
        assert response.status_code == 401, (method, path, response.text)
    assert _rows(engine) == before
