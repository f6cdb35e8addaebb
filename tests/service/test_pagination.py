"""Ids and page sizes in paths and queries: out of the database columns' range is a 422
naming the parameter, on every route, whatever the database."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from fastapi.testclient import TestClient

from service.main import create_app
from tests.conftest import make_settings
from tests.factories import API, assert_problem, make_workspace

#: Past INTEGER (PostgreSQL's int4), past BIGINT (SQLite's bind), and below any id.
OUT_OF_RANGE = (2**31, 2**63, -1)


def _int_parameters() -> Iterator[tuple[str, str, str, str]]:
    """(method, path, where, name) of every integer path or query parameter of the app."""
    app = create_app(make_settings("sqlite://"), run_startup=False)
    for path, operations in app.openapi()["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                schema = parameter["schema"]
                types = {schema.get("type")} | {s.get("type") for s in schema.get("anyOf", [])}
                if "integer" in types:
                    yield method.upper(), path, parameter["in"], parameter["name"]


PARAMETERS = sorted(_int_parameters())


def test_given_the_app_when_its_routes_are_listed_then_ids_and_limits_are_among_them() -> None:
    names = {name for *_, name in PARAMETERS}
    assert {"team_id", "mapping_id", "connector_id", "key_result_id", "limit", "team"} <= names
    assert len(PARAMETERS) > 40


def test_given_an_integer_parameter_when_out_of_range_then_it_is_a_422_naming_it(
    client: TestClient,
) -> None:
    make_workspace(client)
    wrong = []
    for method, path, where, name in PARAMETERS:
        for value in OUT_OF_RANGE:
            url = path.replace("{" + name + "}", str(value)) if where == "path" else path
            url = re.sub(r"\{\w+\}", "1", url)  # any other path parameter: a valid id
            params = {name: str(value)} if where == "query" else None
            body: dict[str, Any] | None = {} if method in ("POST", "PUT", "PATCH") else None
            response = client.request(method, url, params=params, json=body)
            problem = response.json()
            if (response.status_code, problem.get("field")) != (422, name):
                wrong.append((method, url, params, response.status_code, problem))
    assert wrong == []


def test_given_the_reported_mapping_filter_when_past_bigint_then_it_is_a_422(
    client: TestClient,
) -> None:
    make_workspace(client)
    for value in (9223372036854775808, 2147483648):
        response = client.get(f"{API}/mappings", params={"key_result_id": value})
        body = assert_problem(response, 422, "key_result_id")
        assert "2147483647" in body["detail"]
    assert client.get(f"{API}/mappings", params={"key_result_id": 2**31 - 1}).status_code == 200
