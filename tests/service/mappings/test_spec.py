"""Limits on the size of a metric spec: refused with 422 naming the field, before any
evaluation; bodies too large to parse cheaply stop at the body size limit (413)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select
from sqlmodel import Session

from service.mappings.models import Mapping
from tests.factories import API, assert_problem, ok
from tests.service.mappings.factories import make_connector, make_key_result, make_workspace

#: The defaults of the settings these tests exercise (service/settings.py).
MAX_FILTERS = 200
MAX_DEPTH = 5
MAX_VALUES = 1000

LEAF = {"field": "status", "op": "eq", "value": "Qualified"}


@dataclass
class World:
    kr_id: int
    connector_id: int


@pytest.fixture
def world(engine: Engine) -> World:
    with Session(engine) as s:
        ws = make_workspace(s)
        connector = make_connector(s, ws)
        kr = make_key_result(s, ws)
        s.commit()
        assert kr.id is not None
        assert connector.id is not None
        return World(kr.id, connector.id)


def count(world: World, filters: list[Any]) -> dict[str, Any]:
    return {"type": "count", "connector_id": world.connector_id, "kind": "lead", "filters": filters}


def nested(depth: int) -> dict[str, Any]:
    """`depth` groups, each inside the previous, around one filter."""
    condition: dict[str, Any] = LEAF
    for _ in range(depth):
        condition = {"match": "any", "filters": [condition]}
    return condition


def groups_of(total: int) -> list[Any]:
    """`total` conditions in all: groups of 49 filters (each group counts as one)."""
    out: list[Any] = []
    left = total
    while left > 0:
        take = min(49, left - 1)
        out.append({"filters": [LEAF] * take} if take else LEAF)
        left -= take + 1
    return out


def mapping_count(engine: Engine) -> int:
    with Session(engine) as s:
        return int(s.execute(select(func.count()).select_from(Mapping)).scalar_one())


def send(client: TestClient, world: World, how: str, spec: dict[str, Any]) -> Any:
    if how == "preview":
        return client.post(
            f"{API}/mappings/preview", json={"spec": spec, "key_result_id": world.kr_id}
        )
    return client.post(f"{API}/mappings", json={"spec": spec, "key_result_id": world.kr_id})


@pytest.mark.parametrize("how", ["create", "preview"])
def test_given_specs_at_each_limit_when_sent_then_they_are_accepted(
    client: TestClient, world: World, how: str
) -> None:
    status = 201 if how == "create" else 200
    for spec in (
        count(world, groups_of(MAX_FILTERS)),
        count(world, [nested(MAX_DEPTH)]),
        count(world, [{"field": "status", "op": "in", "value": ["x"] * MAX_VALUES}]),
    ):
        ok(send(client, world, how, spec), status)
        if how == "create":  # one mapping per key result: unbind it for the next spec
            mapping = ok(client.get(f"{API}/mappings"))["items"][0]
            ok(client.delete(f"{API}/mappings/{mapping['id']}"), 204)


@pytest.mark.parametrize("how", ["create", "preview"])
@pytest.mark.parametrize(
    ("name", "filters", "field"),
    [
        ("too-many", lambda w: groups_of(MAX_FILTERS + 1), "spec.filters"),
        (
            "too-deep",
            lambda w: [LEAF, nested(MAX_DEPTH + 1)],
            "spec.filters.1" + ".filters.0" * MAX_DEPTH,
        ),
        (
            "too-many-values",
            lambda w: [LEAF, {"field": "status", "op": "in", "value": ["x"] * (MAX_VALUES + 1)}],
            "spec.filters.1.value",
        ),
        (
            "too-many-not-in-values",
            lambda w: [{"field": "amount", "op": "not_in", "value": list(range(MAX_VALUES + 1))}],
            "spec.filters.0.value",
        ),
    ],
)
def test_given_a_spec_over_a_limit_when_sent_then_it_is_a_422_naming_the_field(
    client: TestClient, engine: Engine, world: World, how: str, name: str, filters: Any, field: str
) -> None:
    response = send(client, world, how, count(world, filters(world)))
    assert_problem(response, 422, field)
    assert mapping_count(engine) == 0


def test_given_a_ratio_when_its_sides_together_hold_too_many_filters_then_the_second_is_named(
    client: TestClient, engine: Engine, world: World
) -> None:
    half = groups_of(MAX_FILTERS // 2 + 1)
    spec = {"type": "ratio", "numerator": count(world, half), "denominator": count(world, half)}
    assert_problem(send(client, world, "create", spec), 422, "spec.denominator.filters")
    assert mapping_count(engine) == 0


def test_given_a_mapping_when_updated_with_a_spec_over_a_limit_then_it_keeps_its_spec(
    client: TestClient, world: World
) -> None:
    created = ok(send(client, world, "create", count(world, [LEAF])), 201)
    response = client.put(
        f"{API}/mappings/{created['id']}", json={"spec": count(world, [nested(MAX_DEPTH + 1)])}
    )
    assert_problem(response, 422, "spec.filters.0" + ".filters.0" * MAX_DEPTH)
    after = ok(client.get(f"{API}/mappings/{created['id']}"))
    assert (after["version"], after["spec"]["filters"]) == (1, [LEAF])


def test_given_the_reported_specs_when_sent_then_they_stop_at_the_body_limit_not_later(
    client: TestClient, engine: Engine, world: World
) -> None:
    # 50 groups of 50 groups of 50 filters (125,000): ran for minutes before the limits.
    wide: Any = LEAF
    for _ in range(3):
        wide = {"filters": [wide] * 50}
    assert_problem(send(client, world, "create", count(world, [wide])), 413)
    # A 25-million-value `in` list was parsed before being refused; 300,000 already stop here.
    huge_in = [{"field": "status", "op": "in", "value": ["x"] * 300_000}]
    assert_problem(send(client, world, "preview", count(world, huge_in)), 413)
    # Under the body limit, as many filters as fit are refused by count, not evaluated.
    fitting: Any = {"filters": [{"filters": [LEAF] * 50}] * 50}
    assert_problem(send(client, world, "create", count(world, [fitting])), 422, "spec.filters")
    assert mapping_count(engine) == 0


def test_given_groups_nested_deeper_than_the_json_parser_goes_when_sent_then_it_is_a_4xx(
    client: TestClient, world: World
) -> None:
    deep = json.dumps(LEAF)
    for _ in range(5000):
        deep = '{"filters": [' + deep + "]}"
    spec = json.dumps(count(world, [])).replace('"filters": []', f'"filters": [{deep}]')
    body = f'{{"key_result_id": {world.kr_id}, "spec": {spec}}}'
    response = client.post(
        f"{API}/mappings", content=body, headers={"Content-Type": "application/json"}
    )
    assert 400 <= response.status_code < 500, response.text
