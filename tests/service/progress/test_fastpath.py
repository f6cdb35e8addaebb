"""Polled reads answered from memory (`service.progress.fastpath`) are the routes' own
answers, byte for byte and header for header; whatever the memory cannot decide goes to
the routes, which answer as they always did."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
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


def _cached_key_result(app: FastAPI, client: TestClient) -> tuple[str, bytes, int]:
    """A key result's progress path, read once (so memory holds it): its body and the
    memory hits so far."""
    made = _setup(client)
    path = f"{API}/key-results/{made['kr']['id']}/progress"
    return path, client.get(path).content, _hits(app)


def test_given_a_host_not_allowed_when_the_read_is_cached_then_the_host_check_refuses_it(
    app: FastAPI, client: TestClient
) -> None:
    path, body, before = _cached_key_result(app, client)
    for host in ("evil.example", "testserver.evil.example", "testserver:", "[::1]"):
        refused = client.get(path, headers={"Host": host})
        assert refused.status_code == 400, host
        assert refused.text == "Invalid host header"
    assert _hits(app) == before
    for host in ("testserver", "TESTSERVER:8000"):
        answered = client.get(path, headers={"Host": host})
        assert (answered.status_code, answered.content) == (200, body)
    assert _hits(app) == before + 2


def test_given_a_read_with_a_body_then_the_stack_answers_it(
    app: FastAPI, client: TestClient
) -> None:
    path, body, before = _cached_key_result(app, client)
    with_body = client.request("GET", path, content=b"x" * 10)
    assert (with_body.status_code, with_body.content) == (200, body)
    assert _hits(app) == before
    too_large = client.request("GET", path, content=b"x" * (app.state.settings.max_body_bytes + 1))
    assert too_large.status_code == 413


def _requests_counted(client: TestClient, route: str, status: str) -> float:
    text = client.get("/metrics").text
    for family in text_string_to_metric_families(text):
        if family.name == "okr_http_requests":
            for sample in family.samples:
                if sample.labels.get("route") == route and sample.labels["status"] == status:
                    return float(sample.value)
    return 0.0


def test_given_reads_answered_from_memory_then_they_are_logged_and_counted_like_the_routes(
    app: FastAPI, client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    made = _setup(client)
    path = f"{API}/key-results/{made['kr']['id']}/progress"
    route = "/api/v1/key-results/{key_result_id}/progress"
    etag = client.get(path).headers["etag"]
    counted = {s: _requests_counted(client, route, s) for s in ("200", "304")}
    before = _hits(app)
    with caplog.at_level(logging.INFO, logger="okr_sync.request"):
        assert client.get(path).status_code == 200
        assert client.get(path, headers={"If-None-Match": etag}).status_code == 304
    assert _hits(app) == before + 2
    lines = [r for r in caplog.records if getattr(r, "event", None) == "request"]
    assert [(r.method, r.route, r.status, r.workspace) for r in lines] == [  # type: ignore[attr-defined]
        ("GET", route, 200, "acme"),
        ("GET", route, 304, "acme"),
    ]
    assert all(r.latency_ms >= 0 for r in lines)  # type: ignore[attr-defined]
    assert _requests_counted(client, route, "200") == counted["200"] + 1
    assert _requests_counted(client, route, "304") == counted["304"] + 1
