"""Bad input is a 4xx problem+json naming the offending field, never a 500, and it changes
nothing already stored (every table is compared before and after each bad request)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from tests.factories import (
    API,
    assert_problem,
    db_dump,
    make_key_result,
    make_objective,
    make_period,
    make_team,
    make_tree,
    make_workspace,
)

W = dict[str, Any]


@pytest.fixture
def world(client: TestClient) -> W:
    """Workspace `acme` (the default) with a tree, chains of teams and objectives three deep,
    and workspace `other` with its own rows."""
    make_workspace(client, "acme")
    make_workspace(client, "other")
    tree = make_tree(client)
    company, sales = tree["teams"]
    year, _q1 = tree["periods"]
    top, aligned, _quarter = tree["objectives"]
    arr, deals, _nps, _hires = tree["key_results"]
    inside = make_team(client, "Inside sales", parent_id=sales["id"])
    deeper = make_objective(client, year["id"], "Deeper", parent_id=aligned["id"])
    o_period = make_period(client, ws="other")
    o_team = make_team(client, ws="other")
    o_objective = make_objective(client, o_period["id"], ws="other")
    o_kr = make_key_result(client, o_objective["id"], ws="other")
    return {
        "company": company["id"],
        "inside": inside["id"],
        "year": year["id"],
        "top": top["id"],
        "deeper": deeper["id"],
        "arr": arr["id"],
        "deals": deals["id"],
        "initiative": tree["initiatives"][0]["id"],
        "o_period": o_period["id"],
        "o_team": o_team["id"],
        "o_objective": o_objective["id"],
        "o_kr": o_kr["id"],
    }


@dataclass(frozen=True)
class Raw:
    """A body sent as is, with a JSON content type."""

    text: str


def resolve(value: Any, world: W) -> Any:
    """`value` with every "@name" replaced by the world's id of that name."""
    if isinstance(value, str) and value.startswith("@"):
        return world[value[1:]]
    if isinstance(value, dict):
        return {key: resolve(item, world) for key, item in value.items()}
    if isinstance(value, list):
        return [resolve(item, world) for item in value]
    return value


KR = {"title": "KR", "objective_id": "@top", "start": 0, "target": 10}
OBJ = {"title": "O", "period_id": "@year"}
INI = {"title": "I", "key_result_ids": ["@arr"]}
WS = {"slug": "new", "name": "New"}
INIT = "/initiatives/{initiative}"
KRS, ARR = "/key-results", "/key-results/{arr}"
OBJS, TOP = "/objectives", "/objectives/{top}"
INIS, WSS, ACME = "/initiatives", "/workspaces", "/workspaces/acme"
KIDS = "key_result_ids"
APRIL, MAY = "2026-04-01", "2026-05-01"
PERIOD = {"name": "P", "start": MAY}

# (name, method, path, body, status, field); a field of None: the problem names none.
CASES: list[tuple[str, str, str, dict[str, Any] | Raw | None, int, str | None]] = [
    # ---------------------------------------------------------------- malformed JSON
    ("json-truncated", "POST", "/teams", Raw('{"name": '), 422, None),
    ("json-trailing-comma", "PATCH", ARR, Raw('{"target": 5,}'), 422, None),
    ("json-not-json", "POST", "/key-results/{arr}/check-ins", Raw("value=3"), 422, None),
    ("json-empty-body", "POST", INIS, Raw(""), 422, None),
    ("json-array", "POST", OBJS, Raw("[1, 2]"), 422, None),
    ("json-array-patch", "PATCH", "/teams/{company}", Raw("[]"), 422, None),
    # ---------------------------------------------------------------- wrong types
    ("type-period-id", "POST", OBJS, OBJ | {"period_id": "first"}, 422, "period_id"),
    ("type-target", "POST", KRS, KR | {"target": "lots"}, 422, "target"),
    ("type-weight", "PATCH", TOP, {"weight": "heavy"}, 422, "weight"),
    ("type-kr-ids", "PATCH", INIT, {"key_result_ids": "1,2"}, 422, KIDS),
    ("type-name", "POST", "/teams", {"name": 42}, 422, "name"),
    ("type-date", "PATCH", "/periods/{year}", {"start": "tomorrow"}, 422, "start"),
    ("type-kind", "PATCH", ARR, {"kind": "bigger"}, 422, "kind"),
    ("type-margin", "PATCH", ACME, {"on_track_margin": "x"}, 422, "on_track_margin"),
    ("type-value", "POST", "/key-results/{arr}/check-ins", {"value": [1]}, 422, "value"),
    ("type-path-id", "GET", "/objectives/first", None, 422, "objective_id"),
    ("nan-value", "POST", "/key-results/{arr}/check-ins", Raw('{"value": NaN}'), 422, "value"),
    ("inf-weight", "PATCH", TOP, Raw('{"weight": Infinity}'), 422, "weight"),
    ("overflow-target", "POST", KRS, KR | {"target": 10**400}, 422, "target"),
    ("overflow-start", "PATCH", ARR, Raw('{"start": -1e400}'), 422, "start"),
    ("too-long-title", "POST", OBJS, OBJ | {"title": "x" * 501}, 422, "title"),
    ("empty-name", "PATCH", "/teams/{company}", {"name": ""}, 422, "name"),
    # PostgreSQL text cannot hold NUL: refused up front, on SQLite too
    ("nul-title", "POST", OBJS, OBJ | {"title": "a\x00b"}, 422, "title"),
    ("nul-note", "POST", "/key-results/{arr}/check-ins", {"value": 1, "note": "\x00"}, 422, "note"),
    ("nul-patch", "PATCH", INIT, {"owner": "\x00"}, 422, "owner"),
    ("nul-workspace-name", "POST", WSS, WS | {"name": "\x00"}, 422, "name"),
    ("nul-period-ref", "GET", "/progress?period=%00", None, 404, "period"),
    ("nul-period-filter", "GET", "/objectives?period=a%00", None, 404, "period"),
    ("nul-slug", "GET", "/workspaces/%00", None, 404, None),
    # ---------------------------------------------------------------- unknown ids
    ("unknown-objective-get", "GET", "/objectives/9999", None, 404, None),
    ("unknown-objective-patch", "PATCH", "/objectives/9999", {"title": "x"}, 404, None),
    ("unknown-kr-delete", "DELETE", "/key-results/9999", None, 404, None),
    ("unknown-initiative-delete", "DELETE", "/initiatives/9999", None, 404, None),
    # ids no column can hold are refused by type (tests/service/test_pagination.py: all routes)
    ("out-of-range-team-int4", "GET", f"/teams/{2**31}", None, 422, "team_id"),
    ("out-of-range-period-int8", "PATCH", f"/periods/{2**63}", {"name": "x"}, 422, "period_id"),
    ("out-of-range-objective-huge", "DELETE", f"/objectives/{10**30}", None, 422, "objective_id"),
    ("out-of-range-negative", "GET", "/key-results/-1", None, 422, "key_result_id"),
    ("unknown-workspace", "PATCH", "/workspaces/nope", {"name": "x"}, 404, None),
    ("unknown-ref-period", "POST", OBJS, OBJ | {"period_id": 9999}, 422, "period_id"),
    ("unknown-period-huge", "POST", OBJS, OBJ | {"period_id": 2**63}, 422, "period_id"),
    ("unknown-ref-team", "POST", OBJS, OBJ | {"team_id": 9999}, 422, "team_id"),
    ("unknown-ref-parent", "PATCH", TOP, {"parent_id": 2**40}, 422, "parent_id"),
    ("unknown-objective", "POST", KRS, KR | {"objective_id": 9999}, 422, "objective_id"),
    ("unknown-ref-kr", "POST", INIS, INI | {"key_result_ids": ["@arr", 9999]}, 422, KIDS),
    ("unknown-ref-team-parent", "PATCH", "/teams/{company}", {"parent_id": 9999}, 422, "parent_id"),
    # ---------------------------------------------------------------- key-result rules
    ("target-equals-start", "POST", KRS, KR | {"start": 10, "target": 10}, 422, "target"),
    ("target-below-start", "POST", KRS, KR | {"start": 10, "target": 5}, 422, "target"),
    ("patch-target-to-start", "PATCH", "/key-results/{deals}", {"target": 0}, 422, "target"),
    ("patch-start-to-target", "PATCH", "/key-results/{deals}", {"start": 40}, 422, "target"),
    ("decrease-up", "POST", KRS, KR | {"kind": "decrease", "start": 5}, 422, "target"),
    ("increase-no-start", "PATCH", "/key-results/{deals}", {"start": None}, 422, "start"),
    ("at-least-down", "POST", KRS, KR | {"kind": "at_least", "start": 90}, 422, "start"),
    ("at-most-up", "POST", KRS, KR | {"kind": "at_most", "start": 1}, 422, "start"),
    ("milestone-target", "POST", KRS, KR | {"kind": "milestone", "start": None}, 422, "target"),
    ("currency-missing", "POST", KRS, KR | {"unit": "currency"}, 422, "currency"),
    ("currency-with-count", "POST", KRS, KR | {"currency": "EUR"}, 422, "currency"),
    ("currency-bad", "POST", KRS, KR | {"unit": "currency", "currency": "euro"}, 422, "currency"),
    ("unit-keeps-currency", "PATCH", ARR, {"unit": "count"}, 422, "currency"),
    # ---------------------------------------------------------------- weights
    ("objective-weight-zero", "POST", OBJS, OBJ | {"weight": 0}, 422, "weight"),
    ("objective-weight-negative", "PATCH", TOP, {"weight": -1}, 422, "weight"),
    ("kr-weight-zero", "POST", KRS, KR | {"weight": 0}, 422, "weight"),
    ("kr-weight-negative", "PATCH", ARR, {"weight": -0.5}, 422, "weight"),
    # ---------------------------------------------------------------- windows
    ("period-empty", "POST", "/periods", PERIOD | {"end": MAY}, 422, "end"),
    ("period-reversed", "POST", "/periods", PERIOD | {"end": APRIL}, 422, "end"),
    ("patch-period-end", "PATCH", "/periods/{year}", {"end": "2025-12-31"}, 422, "end"),
    ("patch-period-start", "PATCH", "/periods/{year}", {"start": "2027-01-01"}, 422, "end"),
    ("kr-window-reversed", "POST", KRS, KR | {"window_start": MAY, "window_end": APRIL},
     422, "window_end"),
    ("kr-window-empty", "PATCH", ARR, {"window_start": MAY, "window_end": MAY}, 422, "window_end"),
    ("kr-window-half", "PATCH", ARR, {"window_start": MAY}, 422, "window_end"),
    # ---------------------------------------------------------------- cycles
    ("objective-own-parent", "PATCH", TOP, {"parent_id": "@top"}, 422, "parent_id"),
    ("objective-cycle", "PATCH", TOP, {"parent_id": "@deeper"}, 422, "parent_id"),
    ("team-own-parent", "PATCH", "/teams/{company}", {"parent_id": "@company"}, 422, "parent_id"),
    ("team-chain-cycle", "PATCH", "/teams/{company}", {"parent_id": "@inside"}, 422, "parent_id"),
    # ---------------------------------------------------------------- another workspace's rows
    ("other-kr-link", "POST", INIS, INI | {"key_result_ids": ["@o_kr"]}, 422, KIDS),
    ("other-kr-relink", "PATCH", INIT, {"key_result_ids": ["@arr", "@o_kr"]}, 422, KIDS),
    ("other-objective", "POST", KRS, KR | {"objective_id": "@o_objective"}, 422, "objective_id"),
    ("other-objective-mv", "PATCH", ARR, {"objective_id": "@o_objective"}, 422, "objective_id"),
    ("other-period-ref", "POST", OBJS, OBJ | {"period_id": "@o_period"}, 422, "period_id"),
    ("other-team-ref", "PATCH", TOP, {"team_id": "@o_team"}, 422, "team_id"),
    ("other-team-up", "POST", "/teams", {"name": "T", "parent_id": "@o_team"}, 422, "parent_id"),
    ("other-kr-read", "GET", "/key-results/{o_kr}", None, 404, None),
    ("other-kr-patch", "PATCH", "/key-results/{o_kr}", {"title": "mine"}, 404, None),
    ("other-kr-delete", "DELETE", "/key-results/{o_kr}", None, 404, None),
    ("other-kr-check-in", "POST", "/key-results/{o_kr}/check-ins", {"value": 1}, 404, None),
    ("other-period-delete", "DELETE", "/periods/{o_period}", None, 404, None),
    ("other-progress-tree", "GET", "/progress?period={o_period}", None, 404, "period"),
    # ---------------------------------------------------------------- nulls for required fields
    ("null-team-name", "PATCH", "/teams/{company}", {"name": None}, 422, "name"),
    ("null-period-start", "PATCH", "/periods/{year}", {"start": None}, 422, "start"),
    ("null-objective-title", "PATCH", TOP, {"title": None}, 422, "title"),
    ("null-objective-period", "PATCH", TOP, {"period_id": None}, 422, "period_id"),
    ("null-objective-weight", "PATCH", TOP, {"weight": None}, 422, "weight"),
    ("null-kr-target", "PATCH", ARR, {"target": None}, 422, "target"),
    ("null-kr-kind", "PATCH", ARR, {"kind": None}, 422, "kind"),
    ("null-initiative-title", "PATCH", INIT, {"title": None}, 422, "title"),
    ("null-initiative-krs", "PATCH", INIT, {"key_result_ids": None}, 422, KIDS),
    ("null-workspace-timezone", "PATCH", ACME, {"timezone": None}, 422, "timezone"),
    # ---------------------------------------------------------------- other rules
    ("no-key-results", "POST", INIS, INI | {"key_result_ids": []}, 422, KIDS),
    ("initiative-progress", "PATCH", INIT, {"progress": 1.5}, 422, "progress"),
    ("initiative-status", "POST", INIS, INI | {"status": "finished"}, 422, "status"),
    ("future-check-in", "POST", "/key-results/{arr}/check-ins",
     {"value": 1, "at": "2030-01-01T00:00:00Z"}, 422, "at"),
    ("duplicate-team", "POST", "/teams", {"name": "Sales"}, 409, "name"),
    ("team-in-use", "DELETE", "/teams/{company}", None, 409, None),
    ("period-in-use", "DELETE", "/periods/{year}", None, 409, None),
    ("objective-with-children", "DELETE", TOP, None, 409, None),
    ("workspace-slug", "POST", WSS, WS | {"slug": "Bad Slug"}, 422, "slug"),
    ("workspace-duplicate", "POST", WSS, WS | {"slug": "other"}, 409, "slug"),
    ("timezone", "POST", WSS, WS | {"timezone": "Mars/Olympus"}, 422, "timezone"),
    ("margins", "POST", WSS, WS | {"on_track_margin": 0.3, "at_risk_margin": 0.2},
     422, "at_risk_margin"),
    ("margins-patch", "PATCH", ACME, {"at_risk_margin": 0.05}, 422, "at_risk_margin"),
    ("margin-range", "PATCH", ACME, {"on_track_margin": 1.5}, 422, "on_track_margin"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "field"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_given_bad_input_when_sent_then_a_problem_names_the_field_and_nothing_changes(
    client: TestClient,
    engine: Engine,
    world: W,
    method: str,
    path: str,
    body: dict[str, Any] | Raw | None,
    status: int,
    field: str | None,
) -> None:
    kwargs: dict[str, Any] = {}
    if isinstance(body, Raw):
        kwargs = {"content": body.text, "headers": {"Content-Type": "application/json"}}
    elif body is not None:
        kwargs = {"json": resolve(body, world)}
    before = db_dump(engine)
    response = client.request(method, API + path.format(**world), **kwargs)
    assert_problem(response, status, field, has_field=field is not None)
    assert db_dump(engine) == before
