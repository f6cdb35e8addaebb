"""Polled reads answered from memory (`service.progress.fastpath`) are the routes' own
answers, byte for byte and header for header; whatever the memory cannot decide goes to
the routes, which answer as they always did."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from service.auth.models import Role
from service.main import create_app
from service.progress.polling import cache_of
from tests.conftest import FrozenClock, bearer, issue_token, make_settings
from tests.factories import (
    API,
    check_in,
    make_key_result,
    make_objective,
    make_period,
    make_workspace,
)

KEPT = ("content-type", "content-length", "etag", "cache-control", "vary")


def _setup(client: TestClient) -> dict[str, Any]:
    make_workspace(client)
    year = make_period(client)
    objective = make_objective(client, year["id"], "Grow")
    kr = make_key_result(client, objective["id"], "a")
    check_in(client, kr["id"], 45)
    return {"objective": objective, "kr": kr}


def _headers(response: Any) -> dict[str, str]:
    return {k: response.headers[k] for k in KEPT if k in response.headers}


def _hits(app: FastAPI) -> int:
    return cache_of(app.state).memory_hits


def test_given_a_cached_read_then_memory_answers_the_same_bytes_and_headers_as_the_route(
    app: FastAPI, client: TestClient
) -> None:
    made = _setup(client)
    for path in (
        f"{API}/key-results/{made['kr']['id']}/progress",
        f"{API}/objectives/{made['objective']['id']}/progress",
        f"{API}/progress?period=2026",
        f"{API}/progress",
    ):
        before = _hits(app)
        built = client.get(path)
        assert built.status_code == 200, built.text
        assert _hits(app) == before  # built by the route
        again = client.get(path)
        assert _hits(app) == before + 1  # from memory
        assert (again.status_code, again.content) == (200, built.content)
        assert _headers(again) == _headers(built)

        etag = built.headers["etag"]
        not_modified = client.get(path, headers={"If-None-Match": etag})
        assert _hits(app) == before + 2
        assert not_modified.status_code == 304
        assert not_modified.content == b""
        assert _headers(not_modified) == {
            k: built.headers[k] for k in ("etag", "cache-control", "vary")
        }


def test_given_a_304_from_the_route_and_from_memory_then_they_match(
    app: FastAPI, client: TestClient, engine: Engine
) -> None:
    made = _setup(client)
    path = f"{API}/key-results/{made['kr']['id']}/progress"
    etag = client.get(path).headers["etag"]
    fresh = bearer(issue_token(engine, Role.viewer, "acme", "fresh"))
    before = _hits(app)
    by_route = client.get(path, headers={**fresh, "If-None-Match": etag})
    by_memory = client.get(path, headers={**fresh, "If-None-Match": etag})
    assert _hits(app) == before + 1
    assert by_route.status_code == by_memory.status_code == 304
    assert dict(by_route.headers) == dict(by_memory.headers)


def test_given_requests_memory_cannot_decide_then_the_routes_answer_them(
    app: FastAPI, client: TestClient, engine: Engine
) -> None:
    made = _setup(client)
    kr = made["kr"]["id"]
    body = client.get(f"{API}/key-results/{kr}/progress").content
    client.get(f"{API}/progress")
    before = _hits(app)
    # Not the plain forms: the routes validate and answer.
    assert client.get(f"{API}/progress?team=abc").status_code == 422
    assert client.get(f"{API}/progress?period=2026&period=2026").status_code == 200
    assert client.get(f"{API}/key-results/0/progress").status_code == 422
    assert client.get(f"{API}/key-results/{10**19}/progress").status_code == 422
    padded = client.get(f"{API}/key-results/00{kr}/progress")
    assert (padded.status_code, padded.content) == (200, body)
    # No token, another scheme, an unknown token.
    assert client.get(f"{API}/progress", headers={"Authorization": ""}).status_code == 401
    basic = {"Authorization": "Basic dXNlcjpwYXNz"}
    assert client.get(f"{API}/progress", headers=basic).status_code == 401
    assert client.get(f"{API}/progress", headers=bearer("okr_nope")).status_code == 401
    assert _hits(app) == before
    # A workspace token naming another workspace: 404 even when its reads are cached.
    own = bearer(issue_token(engine, Role.viewer, "acme", "own"))
    assert client.get(f"{API}/progress", headers=own).status_code == 200
    assert client.get(f"{API}/progress", headers=own).status_code == 200
    other = client.get(f"{API}/progress", headers={**own, "X-Workspace": "elsewhere"})
    assert other.status_code == 404
    assert other.json()["field"] == "X-Workspace"


def test_given_a_token_over_its_rate_when_its_reads_are_cached_then_429(
    database_url: str, engine: Engine, clock: FrozenClock
) -> None:
    settings = make_settings(database_url, rate_limit_requests_per_minute=5)
    app = create_app(settings, engine, clock=clock)
    admin = issue_token(engine, Role.admin, None, "setup")
    with TestClient(app, headers=bearer(admin)) as setup:
        _setup(setup)
    viewer = bearer(issue_token(engine, Role.viewer, "acme", "dashboard"))
    with TestClient(app, headers=viewer) as client:
        statuses = [client.get(f"{API}/progress").status_code for _ in range(7)]
        assert statuses == [200] * 5 + [429] * 2
        assert _hits(app) == 4
        limited = client.get(f"{API}/progress")
        assert limited.headers["retry-after"]
        assert limited.json()["status"] == 429
