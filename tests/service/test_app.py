"""The application shell: health, readiness, OpenAPI, and problem+json for every error."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient

from service import db
from service.main import create_app
from tests.conftest import make_settings
from tests.factories import API, PROBLEM_JSON, assert_problem, make_workspace


def test_given_the_app_when_liveness_is_probed_then_it_answers_ok(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}


def test_given_a_database_when_readiness_is_probed_then_it_is_ready(client: TestClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready"}


def test_given_an_unreachable_database_when_readiness_is_probed_then_it_is_a_503_problem(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'missing' / 'dir' / 'okr.db'}"
    app = create_app(make_settings(url), db.make_engine(url))
    with TestClient(app, raise_server_exceptions=False) as client:
        body = assert_problem(client.get("/readyz"), 503)
        assert "database unavailable" in body["detail"]
        assert client.get("/healthz").status_code == 200


def test_given_the_app_when_openapi_is_fetched_then_it_lists_the_stable_resource_paths(
    client: TestClient,
) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/workspaces",
        "/teams",
        "/periods",
        "/objectives",
        "/key-results",
        "/initiatives",
        "/key-results/{key_result_id}/progress",
        "/key-results/{key_result_id}/history",
        "/objectives/{objective_id}/progress",
        "/progress",
    ):
        assert f"{API}{path}" in paths, path
    assert "/healthz" in paths
    assert "/readyz" in paths


def test_given_an_unknown_route_when_requested_then_it_is_a_404_problem(client: TestClient) -> None:
    assert_problem(client.get(f"{API}/nothing-here"), 404)


def test_given_a_wrong_method_when_requested_then_it_is_a_405_problem(client: TestClient) -> None:
    make_workspace(client)
    response = client.put(f"{API}/teams", json={})
    assert_problem(response, 405)
    assert "GET" in response.headers["allow"]


def test_given_an_unexpected_failure_when_a_route_raises_then_it_is_a_500_problem_without_details(
    client: TestClient,
) -> None:
    app: FastAPI = client.app  # type: ignore[assignment]

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("secret connection string")

    response = client.get("/boom")
    body = assert_problem(response, 500)
    assert "secret" not in response.text
    assert body["detail"] == "internal error; the server log has the details"
    assert response.headers["content-type"].startswith(PROBLEM_JSON)


def test_given_a_validation_error_when_reported_then_every_error_names_its_field(
    client: TestClient,
) -> None:
    make_workspace(client)
    response = client.post(f"{API}/objectives", json={"weight": -1})
    body = assert_problem(response, 422)
    fields = {error["field"] for error in body["errors"]}
    assert {"title", "period_id", "weight"} <= fields
    assert body["field"] in fields
    assert body["detail"].startswith(f"{body['field']}: ")
