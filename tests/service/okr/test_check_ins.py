"""Manual check-ins feed a key result's history and its current value."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient

from tests.conftest import FROZEN_NOW, FrozenClock
from tests.factories import (
    API,
    assert_problem,
    check_in,
    dump,
    list_all,
    make_key_result,
    make_objective,
    make_period,
    make_workspace,
    ok,
)


def _kr(client: TestClient) -> dict[str, object]:
    make_workspace(client)
    return make_key_result(client, make_objective(client, make_period(client)["id"])["id"])


def test_given_a_key_result_when_checked_in_then_history_and_current_value_follow(
    client: TestClient, clock: FrozenClock
) -> None:
    kr = _kr(client)
    url = f"{API}/key-results/{kr['id']}"
    point = check_in(client, kr["id"], 12.5, note="after the trade show")
    assert point["value"] == 12.5
    assert point["source"] == "manual"
    assert point["note"] == "after the trade show"
    assert point["mapping_id"] is None
    assert datetime.fromisoformat(point["at"]) == FROZEN_NOW
    current = ok(client.get(url))
    assert current["value"] == 12.5
    assert datetime.fromisoformat(current["value_at"]) == FROZEN_NOW

    clock.now = FROZEN_NOW + timedelta(days=1)
    check_in(client, kr["id"], 20)
    assert ok(client.get(url))["value"] == 20
    history = list_all(client, f"key-results/{kr['id']}/history")
    assert [(p["value"], p["note"]) for p in history] == [
        (12.5, "after the trade show"),
        (20, None),
    ]


def test_given_a_back_dated_check_in_when_recorded_then_it_joins_history_but_not_the_present(
    client: TestClient,
) -> None:
    kr = _kr(client)
    check_in(client, kr["id"], 30)
    late = check_in(client, kr["id"], 10, at="2026-06-01T09:00:00+02:00")
    assert datetime.fromisoformat(late["at"]) == datetime(2026, 6, 1, 7, tzinfo=UTC)
    current = ok(client.get(f"{API}/key-results/{kr['id']}"))
    assert current["value"] == 30
    assert datetime.fromisoformat(current["value_at"]) == FROZEN_NOW
    values = [p["value"] for p in list_all(client, f"key-results/{kr['id']}/history")]
    assert sorted(values) == [10, 30]


def test_given_a_check_in_at_the_same_instant_when_recorded_then_the_later_one_is_current(
    client: TestClient,
) -> None:
    kr = _kr(client)
    check_in(client, kr["id"], 1, at="2026-07-01T00:00:00Z")
    check_in(client, kr["id"], 2, at="2026-07-01T00:00:00Z")
    assert ok(client.get(f"{API}/key-results/{kr['id']}"))["value"] == 2


def test_given_a_check_in_in_the_future_when_recorded_then_it_is_a_422_and_nothing_changes(
    client: TestClient,
) -> None:
    kr = _kr(client)
    check_in(client, kr["id"], 5)
    before = dump(client)
    response = client.post(
        f"{API}/key-results/{kr['id']}/check-ins",
        json={"value": 6, "at": (FROZEN_NOW + timedelta(seconds=1)).isoformat()},
    )
    assert_problem(response, 422, "at")
    assert dump(client) == before


def test_given_a_check_in_without_a_time_zone_when_recorded_then_it_is_a_422_naming_at(
    client: TestClient,
) -> None:
    kr = _kr(client)
    before = dump(client)
    response = client.post(
        f"{API}/key-results/{kr['id']}/check-ins", json={"value": 6, "at": "2026-03-01T09:00:00"}
    )
    assert_problem(response, 422, "at")
    assert dump(client) == before


def test_given_an_unknown_key_result_when_checked_in_then_it_is_a_404_or_422_out_of_range(
    client: TestClient,
) -> None:
    _kr(client)
    before = dump(client)
    # Ids past the column's range are a 422 naming the id; ids in range but unused, a 404.
    for ident, status, field in (
        (9999, 404, None),
        (2**31, 422, "key_result_id"),
        (2**80, 422, "key_result_id"),
    ):
        response = client.post(f"{API}/key-results/{ident}/check-ins", json={"value": 1})
        assert_problem(response, status, field)
        assert_problem(client.get(f"{API}/key-results/{ident}/history"), status, field)
    assert dump(client) == before
