"""Progress reads over HTTP: a key result, an objective (weighted roll-up), a period tree,
and polling with ETag / If-None-Match. The frozen clock is 2026-07-02T12:00Z: exactly half
of 2026 has elapsed in UTC (182.5 days of 365)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import FROZEN_NOW, FrozenClock
from tests.factories import (
    API,
    assert_problem,
    check_in,
    make_initiative,
    make_key_result,
    make_objective,
    make_period,
    make_team,
    make_workspace,
    ok,
)

PROGRESS_FIELDS = {
    "value",
    "start",
    "target",
    "unit",
    "progress",
    "expected_progress",
    "status",
    "forecast",
    "stale",
    "last_synced_at",
}


def _progress(client: TestClient, path: str, **params: Any) -> dict[str, Any]:
    body: dict[str, Any] = ok(client.get(f"{API}{path}", params=params))
    return body


def _objective_with_three_key_results(client: TestClient) -> dict[str, Any]:
    """O: A 0->100 at 50 (w 1), B 0->10 at 10 (w 3), C at least 80, no start, at 70 (w 1)."""
    make_workspace(client)
    objective = make_objective(client, make_period(client)["id"], "Grow")
    a = make_key_result(client, objective["id"], "A", start=0, target=100)
    b = make_key_result(client, objective["id"], "B", start=0, target=10, weight=3)
    c = make_key_result(
        client, objective["id"], "C", kind="at_least", unit="score", target=80, weight=1
    )
    for kr, value in ((a, 50), (b, 10), (c, 70)):
        check_in(client, kr["id"], value)
    return {"objective": objective, "a": a, "b": b, "c": c}


def test_given_a_key_result_halfway_at_mid_year_when_read_then_the_progress_object_is_complete(
    client: TestClient,
) -> None:
    made = _objective_with_three_key_results(client)
    got = _progress(client, f"/key-results/{made['a']['id']}/progress")
    assert set(got) >= PROGRESS_FIELDS
    assert got["value"] == 50
    assert got["start"] == 0
    assert got["target"] == 100
    assert got["unit"] == "count"
    assert got["progress"] == 0.5
    assert got["expected_progress"] == 0.5
    assert got["status"] == "on_track"
    assert got["forecast"] == 100  # 50 in half the year -> 100 by its end
    assert got["stale"] is False  # a manual key result is never stale
    assert got["last_synced_at"] is None
    assert got["window"] == {"start": "2026-01-01", "end": "2027-01-01", "timezone": "UTC"}
    assert datetime.fromisoformat(got["value_at"]) == FROZEN_NOW


@pytest.mark.parametrize(
    ("name", "progress", "status", "forecast"),
    [("b", 1.0, "achieved", 20.0), ("c", 0.0, "off_track", 70.0)],
)
def test_given_an_achieved_and_an_unmet_threshold_when_read_then_status_and_forecast_follow(
    client: TestClient, name: str, progress: float, status: str, forecast: float
) -> None:
    made = _objective_with_three_key_results(client)
    got = _progress(client, f"/key-results/{made[name]['id']}/progress")
    assert (got["progress"], got["status"], got["forecast"]) == (progress, status, forecast)


def test_given_three_weighted_key_results_when_the_objective_is_read_then_it_is_their_mean(
    client: TestClient,
) -> None:
    made = _objective_with_three_key_results(client)
    got = _progress(client, f"/objectives/{made['objective']['id']}/progress")
    assert set(got) >= PROGRESS_FIELDS
    # (0.5 * 1 + 1.0 * 3 + 0.0 * 1) / 5 = 0.7
    assert got["progress"] == pytest.approx(0.7)
    assert got["value"] == pytest.approx(70.0)
    assert (got["start"], got["target"], got["unit"]) == (0, 100, "percent")
    assert got["expected_progress"] == 0.5
    assert got["status"] == "on_track"  # 0.7 >= 0.5 - 0.10
    # Forecasts as progress: A 100/100 -> 1, B 20/10 -> 1, C 70 < 80 -> 0: (1 + 3 + 0) / 5.
    assert got["forecast"] == pytest.approx(80.0)
    assert [k["key_result_id"] for k in got["key_results"]] == [
        made[n]["id"] for n in ("a", "b", "c")
    ]
    assert all(set(k) >= PROGRESS_FIELDS for k in got["key_results"])


def test_given_a_key_result_without_data_when_the_objective_is_read_then_it_counts_as_zero(
    client: TestClient,
) -> None:
    made = _objective_with_three_key_results(client)
    make_key_result(client, made["objective"]["id"], "D", start=0, target=100, weight=5)
    got = _progress(client, f"/objectives/{made['objective']['id']}/progress")
    # (0.5 + 3 + 0 + 0 * 5) / 10 = 0.35: at risk (>= 0.5 - 0.25, < 0.5 - 0.10).
    assert got["progress"] == pytest.approx(0.35)
    assert got["status"] == "at_risk"
    d = got["key_results"][-1]
    assert (d["value"], d["status"], d["forecast"]) == (None, "no_data", None)


def test_given_an_objective_without_values_when_read_then_it_has_no_data(
    client: TestClient,
) -> None:
    make_workspace(client)
    objective = make_objective(client, make_period(client)["id"])
    make_key_result(client, objective["id"])
    got = _progress(client, f"/objectives/{objective['id']}/progress")
    assert (got["value"], got["status"], got["progress"], got["forecast"]) == (
        None,
        "no_data",
        0.0,
        None,
    )


def test_given_a_key_result_with_its_own_window_when_read_then_that_window_counts(
    client: TestClient,
) -> None:
    make_workspace(client)
    objective = make_objective(client, make_period(client)["id"])
    kr = make_key_result(
        client, objective["id"], target=40, window_start="2026-01-01", window_end="2026-04-01"
    )
    check_in(client, kr["id"], 30)
    got = _progress(client, f"/key-results/{kr['id']}/progress")
    assert got["window"]["end"] == "2026-04-01"
    assert got["expected_progress"] == 1.0  # Q1 is over
    assert got["progress"] == 0.75
    assert got["status"] == "at_risk"  # 0.75 >= 1 - 0.25
    assert got["forecast"] == 30  # the whole window elapsed: the value is the forecast


def test_given_workspace_margins_when_they_change_then_statuses_follow(client: TestClient) -> None:
    made = _objective_with_three_key_results(client)
    kr = make_key_result(client, made["objective"]["id"], "E", start=0, target=100)
    check_in(client, kr["id"], 42)  # 0.42 vs expected 0.5
    path = f"/key-results/{kr['id']}/progress"
    assert _progress(client, path)["status"] == "on_track"
    ok(client.patch(f"{API}/workspaces/acme", json={"on_track_margin": 0.05}))
    assert _progress(client, path)["status"] == "at_risk"
    ok(client.patch(f"{API}/workspaces/acme", json={"at_risk_margin": 0.07}))
    assert _progress(client, path)["status"] == "off_track"


def test_given_a_paris_month_across_dst_when_read_at_local_noon_then_time_is_absolute(
    client: TestClient, clock: FrozenClock
) -> None:
    make_workspace(client, timezone="Europe/Paris")
    march = make_period(client, "2026-03", "2026-03-01", "2026-04-01")
    kr = make_key_result(client, make_objective(client, march["id"])["id"])
    clock.now = datetime(2026, 3, 29, 10, tzinfo=UTC)  # noon in Paris, summer time since 02:00
    got = _progress(client, f"/key-results/{kr['id']}/progress")
    # From 2026-02-28T23:00Z: 28 days + 11 h = 683 h of a 743 h window (31 days - 1 h),
    # shown in steps of 0.1% of the window (0.91925 -> 0.919).
    assert got["expected_progress"] == math.floor(683 / 743 * 1000) / 1000
    assert got["window"] == {"start": "2026-03-01", "end": "2026-04-01", "timezone": "Europe/Paris"}


# ---------------------------------------------------------------------------- the period tree


def _tree(client: TestClient) -> dict[str, Any]:
    """2026: Top (w 1; KR a 50/100) > Aligned (KR c, no data); Other (w 3; KR b 2/10).
    2026-Q3: Elsewhere."""
    make_workspace(client)
    year = make_period(client)
    q3 = make_period(client, "2026-Q3", "2026-07-01", "2026-10-01")
    sales = make_team(client, "Sales")
    top = make_objective(client, year["id"], "Top", team_id=sales["id"])
    aligned = make_objective(client, year["id"], "Aligned", parent_id=top["id"])
    other = make_objective(client, year["id"], "Other", weight=3)
    elsewhere = make_objective(client, q3["id"], "Elsewhere")
    a = make_key_result(client, top["id"], "a")
    b = make_key_result(client, other["id"], "b", target=10)
    c = make_key_result(client, aligned["id"], "c")
    check_in(client, a["id"], 50)
    check_in(client, b["id"], 2)
    initiative = make_initiative(client, [a["id"], c["id"]], "Playbook", owner="Ops")
    return {
        "year": year,
        "q3": q3,
        "sales": sales,
        "top": top,
        "aligned": aligned,
        "other": other,
        "elsewhere": elsewhere,
        "a": a,
        "b": b,
        "c": c,
        "initiative": initiative,
    }


def test_given_a_period_when_its_tree_is_read_then_objectives_nest_key_results_and_initiatives(
    client: TestClient,
) -> None:
    made = _tree(client)
    got = _progress(client, "/progress", period="2026")
    assert got["period_id"] == made["year"]["id"]
    assert got["period"] == "2026"
    assert got["window"] == {"start": "2026-01-01", "end": "2027-01-01", "timezone": "UTC"}
    assert got["expected_progress"] == 0.5
    assert [o["title"] for o in got["objectives"]] == ["Top", "Other"]
    top, other = got["objectives"]
    assert [child["title"] for child in top["children"]] == ["Aligned"]
    assert other["children"] == []
    [kr_a] = top["key_results"]
    assert kr_a["key_result_id"] == made["a"]["id"]
    assert [i["title"] for i in kr_a["initiatives"]] == ["Playbook"]
    assert kr_a["initiatives"][0]["owner"] == "Ops"
    [kr_c] = top["children"][0]["key_results"]
    assert [i["id"] for i in kr_c["initiatives"]] == [made["initiative"]["id"]]
    assert other["key_results"][0]["initiatives"] == []
    assert "Elsewhere" not in str(got)
    # Roots roll up by weight: (Top 0.5 * 1 + Other 0.2 * 3) / 4 = 0.275, at risk.
    assert top["progress"] == 0.5
    assert other["progress"] == 0.2
    assert got["progress"] == pytest.approx(0.275)
    assert got["status"] == "at_risk"


def test_given_a_period_id_when_the_tree_is_read_then_it_is_the_same_as_by_name(
    client: TestClient,
) -> None:
    made = _tree(client)
    by_name = _progress(client, "/progress", period="2026-Q3")
    assert by_name == _progress(client, "/progress", period=str(made["q3"]["id"]))
    assert [o["title"] for o in by_name["objectives"]] == ["Elsewhere"]
    assert by_name["status"] == "no_data"


def test_given_a_team_when_the_tree_is_read_for_it_then_only_its_objectives_come(
    client: TestClient,
) -> None:
    made = _tree(client)
    got = _progress(client, "/progress", period="2026", team=made["sales"]["id"])
    assert [o["title"] for o in got["objectives"]] == ["Top"]
    assert got["objectives"][0]["children"] == []  # Aligned belongs to no team
    assert_problem(
        client.get(f"{API}/progress", params={"period": "2026", "team": 999}), 422, "team"
    )


def test_given_no_period_containing_today_when_the_tree_is_read_then_a_404_names_period(
    client: TestClient,
) -> None:
    make_workspace(client)
    response = client.get(f"{API}/progress")
    assert_problem(response, 404, "period")
    assert "containing 2026-07-02 (UTC)" in response.json()["detail"]


# ---------------------------------------------------------------------------- polling


@pytest.mark.parametrize("which", ["key_result", "objective", "tree"])
def test_given_an_etag_when_nothing_changed_then_the_read_is_a_304_and_a_change_is_a_200(
    client: TestClient, clock: FrozenClock, which: str
) -> None:
    made = _tree(client)
    url, params = {
        "key_result": (f"{API}/key-results/{made['a']['id']}/progress", {}),
        "objective": (f"{API}/objectives/{made['top']['id']}/progress", {}),
        "tree": (f"{API}/progress", {"period": "2026"}),
    }[which]
    first = client.get(url, params=params)
    etag = first.headers["etag"]
    assert etag.startswith('W/"')  # weak: `last_synced_at` is not part of it
    again = client.get(url, params=params, headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag
    listed = client.get(url, params=params, headers={"If-None-Match": f'"other", {etag}'})
    assert listed.status_code == 304
    strong = client.get(url, params=params, headers={"If-None-Match": etag[2:]})
    assert strong.status_code == 304  # the comparison is weak
    assert client.get(url, params=params, headers={"If-None-Match": "*"}).status_code == 304
    assert client.get(url, params=params, headers={"If-None-Match": '"stale"'}).status_code == 200

    check_in(client, made["a"]["id"], 60)
    changed = client.get(url, params=params, headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag

    clock.now = FROZEN_NOW + timedelta(days=30)  # expected progress moves with time
    later = client.get(url, params=params, headers={"If-None-Match": changed.headers["etag"]})
    assert later.status_code == 200
    assert later.json()["expected_progress"] > changed.json()["expected_progress"]


def test_given_an_unknown_key_result_or_objective_when_progress_is_read_then_404_or_422(
    client: TestClient,
) -> None:
    make_workspace(client)
    for path, field in (("key-results", "key_result_id"), ("objectives", "objective_id")):
        assert_problem(client.get(f"{API}/{path}/1/progress"), 404)
        # Past the id column's range: refused by type, naming the id.
        for ident in (2**31, 2**70):
            assert_problem(client.get(f"{API}/{path}/{ident}/progress"), 422, field)


def test_given_a_period_from_year_1_to_9999_when_read_in_tokyo_then_progress_still_answers(
    client: TestClient,
) -> None:
    make_workspace(client, timezone="Asia/Tokyo")
    period = make_period(client, "forever", "0001-01-01", "9999-12-31")
    objective = make_objective(client, period["id"])
    kr = make_key_result(client, objective["id"])
    check_in(client, kr["id"], 1)
    got = _progress(client, f"/objectives/{objective['id']}/progress")
    assert got["expected_progress"] == pytest.approx(2025.5 / 9999, abs=1e-3)  # mid-2026
    assert got["key_results"][0]["status"] == "at_risk"  # 0.01 >= 0.2026 - 0.25
    assert _progress(client, "/progress", period="forever")["objectives"][0]["title"] == "Grow"


def test_given_period_current_or_none_when_reading_progress_then_the_year_containing_today(
    client: TestClient, clock: FrozenClock
) -> None:
    # Auckland is already in 2027 while UTC still says 31 December 2026.
    make_workspace(client, timezone="Pacific/Auckland")
    for name, start, end in [
        ("2026", "2026-01-01", "2027-01-01"),
        ("2027", "2027-01-01", "2028-01-01"),
        ("2027-Q1", "2027-01-01", "2027-04-01"),
    ]:
        make_objective(client, make_period(client, name, start, end)["id"], f"Grow in {name}")
    clock.now = datetime(2026, 12, 31, 12, 0, tzinfo=UTC)
    for params in ({"period": "current"}, {}):
        tree = ok(client.get(f"{API}/progress", params=params))
        assert tree["period"] == "2027", params
        assert [o["title"] for o in tree["objectives"]] == ["Grow in 2027"]
    listed = ok(client.get(f"{API}/objectives", params={"period": "current"}))
    assert [o["title"] for o in listed["items"]] == ["Grow in 2027"]
    clock.now = datetime(2028, 6, 1, tzinfo=UTC)
    assert_problem(client.get(f"{API}/progress"), 404, "period")
