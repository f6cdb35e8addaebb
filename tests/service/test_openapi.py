"""The committed OpenAPI document is the one the app serves (clients are generated from it)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from service.auth.models import Role
from service.errors import PROBLEM_JSON
from service.main import create_app
from service.openapi import CONFLICTS
from tests.conftest import bearer, issue_token, make_settings
from tests.factories import API, assert_problem, make_tree, make_workspace

COMMITTED = Path(__file__).resolve().parents[2] / "openapi" / "openapi.json"
REGENERATE = "regenerate it with: okr-sync openapi --out openapi/openapi.json"


def test_given_the_app_when_its_openapi_is_serialised_then_it_equals_the_committed_file(
    database_url: str,
) -> None:
    doc = create_app(make_settings(database_url), run_startup=False).openapi()
    served = json.dumps(doc, indent=2, sort_keys=True) + "\n"
    assert COMMITTED.is_file(), f"{COMMITTED} is missing; {REGENERATE}"
    committed = COMMITTED.read_text(encoding="utf-8")
    if committed != served:
        old, new = json.loads(committed), json.loads(served)
        changed = sorted(
            set(old.get("paths", {})) ^ set(new.get("paths", {}))
            | {p for p in old.get("paths", {}) if old["paths"][p] != new.get("paths", {}).get(p)}
        )
        raise AssertionError(
            f"openapi/openapi.json is out of date with the API ({REGENERATE}); "
            f"paths that differ: {changed or 'none (schemas or metadata differ)'}"
        )


# ---------------------------------------------------------------------------- what it says


class _AnyText:
    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and bool(other)


ANY_TEXT = _AnyText()

OPERATIONS = "/healthz", "/readyz"
#: Operations answering a stream that never ends: a TestClient would wait for its end
#: forever. tests/service/progress/test_stream.py reads them from a real server.
EVENT_STREAMS = {("GET", f"{API}/stream")}


def _operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, operations in doc["paths"].items()
        for method, operation in operations.items()
    ]


@pytest.fixture
def doc(database_url: str) -> dict[str, Any]:
    served: dict[str, Any] = create_app(make_settings(database_url), run_startup=False).openapi()
    return served


def test_given_the_document_then_every_api_operation_needs_the_bearer_token_and_says_401(
    doc: dict[str, Any],
) -> None:
    assert doc["components"]["securitySchemes"]["token"] == {
        "type": "http",
        "scheme": "bearer",
        "description": ANY_TEXT,
    }
    api = [(m, p, o) for m, p, o in _operations(doc) if p.startswith(API)]
    assert len(api) > 45
    for method, path, operation in api:
        assert operation.get("security") == [{"token": []}], (method, path)
        responses = operation["responses"]
        assert "WWW-Authenticate" in responses["401"]["headers"], (method, path)
        assert "Retry-After" in responses["429"]["headers"], (method, path)
        assert "500" in responses, (method, path)
    for path in OPERATIONS:
        operation = doc["paths"][path]["get"]
        assert "security" not in operation
        assert not {"401", "403", "429"} & set(operation["responses"])


def test_given_the_document_then_every_error_is_a_problem_and_nothing_else(
    doc: dict[str, Any],
) -> None:
    schemas = doc["components"]["schemas"]
    assert {"type", "title", "status", "detail", "field", "errors"} <= set(
        schemas["Problem"]["properties"]
    )
    assert schemas["ProblemFieldError"]["required"] == ["field", "message"]
    # FastAPI's own 422 shape is never sent, so never documented.
    assert "HTTPValidationError" not in schemas
    for method, path, operation in _operations(doc):
        for status, response in operation["responses"].items():
            if int(status) >= 400:
                assert response["content"] == {
                    PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}
                }, (method, path, status)


def test_given_the_document_then_statuses_follow_from_what_each_operation_takes(
    doc: dict[str, Any],
) -> None:
    for method, path, operation in _operations(doc):
        statuses = set(operation["responses"])
        params = {p["in"] for p in operation.get("parameters", [])}
        body = "requestBody" in operation
        where = (method, path)
        # 422 exactly where there is something to validate; 400 and 413 where a body is read.
        assert ("422" in statuses) == bool(params or body), where
        assert ("413" in statuses) == body, where
        assert ("400" in statuses) == body, where
        if path.startswith(API):
            # The workspace (X-Workspace) or a path id may not exist.
            assert ("404" in statuses) == bool(params & {"path"} or _takes_workspace(operation))
        assert ("409" in statuses) == ((method, path) in CONFLICTS), where
        if body:
            assert list(operation["requestBody"]["content"]) == ["application/json"], where


def _takes_workspace(operation: dict[str, Any]) -> bool:
    return any(p["name"] == "x-workspace" for p in operation.get("parameters", []))


#: Operations that also answer in another media type than JSON (`format=...`).
OTHER_MEDIA_TYPES = {("GET", f"{API}/key-results/{{key_result_id}}/history"): ["text/csv"]}
#: Operations that answer no JSON at all.
ONLY_MEDIA_TYPES = {("GET", "/metrics"): ["text/plain"]}


def test_given_the_document_then_success_content_types_are_right(doc: dict[str, Any]) -> None:
    for method, path, operation in _operations(doc):
        successes = {s: r for s, r in operation["responses"].items() if int(s) < 400}
        assert successes, (method, path)
        for status, response in successes.items():
            if status in ("204", "304"):
                assert "content" not in response, (method, path, status)
            elif (method, path) in EVENT_STREAMS:
                assert list(response["content"]) == ["text/event-stream"], (method, path)
            else:
                media_types = ONLY_MEDIA_TYPES.get((method, path)) or [
                    "application/json",
                    *OTHER_MEDIA_TYPES.get((method, path), []),
                ]
                assert list(response["content"]) == media_types, (method, path, status)
        if "304" in successes:
            assert "ETag" in successes["200"]["headers"]


def test_given_the_conflicts_table_then_each_names_an_operation(doc: dict[str, Any]) -> None:
    for method, path in CONFLICTS:
        assert method.lower() in doc["paths"][path], (method, path)


# ---------------------------------------------------------------------------- what is true


def _url(path: str, ids: dict[str, Any], other: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: str(ids.get(m.group(1), other)), path)


@pytest.mark.parametrize("role", [*Role, None])
def test_given_each_role_when_calling_every_operation_then_the_answer_is_documented(
    app: FastAPI, client: TestClient, engine: Engine, role: Role | None
) -> None:
    """Own ids, unknown ids, invalid ids and empty bodies, with each role's token (None: a
    deployment admin): every status and content type that comes back is in the document."""
    make_workspace(client, "acme")
    tree = make_tree(client, ws="acme")
    own = {
        "slug": "acme",
        "team_id": tree["teams"][0]["id"],
        "period_id": tree["periods"][0]["id"],
        "objective_id": tree["objectives"][0]["id"],
        "key_result_id": tree["key_results"][0]["id"],
        "initiative_id": tree["initiatives"][0]["id"],
    }
    token = issue_token(engine, role, "acme") if role else issue_token(engine)
    doc = app.openapi()
    seen = set()
    # Deletions last: deleting the workspace first would leave only "not found" to see.
    for method, path, operation in sorted(_operations(doc), key=lambda o: o[0] == "DELETE"):
        if (method, path) in EVENT_STREAMS:
            continue
        for ids, other in ((own, "999999"), ({}, "999999"), ({}, "0")):
            body = {} if "requestBody" in operation else None
            response = client.request(
                method,
                _url(path, ids, other),
                json=body,
                headers=bearer(token) | {"X-Workspace": "acme"},
            )
            status = str(response.status_code)
            assert status in operation["responses"], (method, path, status, response.text)
            documented = operation["responses"][status].get("content", {})
            if documented:
                kind = response.headers["content-type"].split(";")[0]
                assert kind in documented, (method, path, status, kind)
            else:
                assert not response.content, (method, path, status)
            seen.add(status)
    assert {"404", "422"} <= seen
    if role is Role.viewer:
        assert "403" in seen


def test_given_a_path_when_its_method_is_not_served_then_405_allows_the_documented_ones(
    client: TestClient,
) -> None:
    response = client.options(f"{API}/teams")
    assert_problem(response, 405)
    assert response.headers["allow"] == "GET, POST"
    assert client.request("HEAD", f"{API}/teams/1").headers["allow"] == "DELETE, GET, PATCH"
    # A path of its own is not also the template it would match.
    assert client.get(f"{API}/mappings/preview").status_code in (404, 422)
    assert client.options(f"{API}/mappings/preview").headers["allow"] == "POST"
