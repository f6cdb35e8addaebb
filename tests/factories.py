"""Plain factory functions for API tests: each creates one resource over HTTP and returns
its JSON. `ws` picks the workspace (the `X-Workspace` header); None means the default one."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import Engine, select
from sqlmodel import SQLModel

API = "/api/v1"
PROBLEM_JSON = "application/problem+json"
#: When rows built directly (not over HTTP) say they were created: a fixed instant.
CREATED_AT = datetime(2026, 1, 1, tzinfo=UTC)

#: The list endpoints whose rows a full dump compares, in dependency order.
LISTED = ("teams", "periods", "objectives", "key-results", "initiatives")


def headers(ws: str | None) -> dict[str, str]:
    return {"X-Workspace": ws} if ws else {}


def ok(response: httpx.Response, status: int = 200) -> Any:
    """The JSON of `response`, which must have `status` (the body explains otherwise)."""
    assert response.status_code == status, (response.status_code, response.text)
    return response.json() if response.content else None


def assert_problem(
    response: httpx.Response, status: int, field: str | None = None, *, has_field: bool = True
) -> dict[str, Any]:
    """`response` is an RFC 9457 problem with `status`, naming `field` when given."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith(PROBLEM_JSON), response.headers
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["title"]
    assert isinstance(body["detail"], str)
    assert body["detail"]
    if field is not None:
        assert body.get("field") == field, body
    elif not has_field:
        assert body.get("field") is None, body
    return body


def post(client: Any, path: str, body: dict[str, Any], ws: str | None = None) -> Any:
    return ok(client.post(f"{API}{path}", json=body, headers=headers(ws)), 201)


def make_workspace(client: Any, slug: str = "acme", **fields: Any) -> dict[str, Any]:
    body = {"slug": slug, "name": slug.title()} | fields
    return ok(client.post(f"{API}/workspaces", json=body), 201)  # type: ignore[no-any-return]


def make_team(
    client: Any, name: str = "Sales", *, ws: str | None = None, **fields: Any
) -> dict[str, Any]:
    return post(client, "/teams", {"name": name} | fields, ws)  # type: ignore[no-any-return]


def make_period(
    client: Any,
    name: str = "2026",
    start: str = "2026-01-01",
    end: str = "2027-01-01",
    *,
    ws: str | None = None,
) -> dict[str, Any]:
    body = {"name": name, "start": start, "end": end}
    return post(client, "/periods", body, ws)  # type: ignore[no-any-return]


def make_objective(
    client: Any, period_id: int, title: str = "Grow", *, ws: str | None = None, **fields: Any
) -> dict[str, Any]:
    body = {"title": title, "period_id": period_id} | fields
    return post(client, "/objectives", body, ws)  # type: ignore[no-any-return]


def make_key_result(
    client: Any,
    objective_id: int,
    title: str = "Leads",
    *,
    ws: str | None = None,
    **fields: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {"title": title, "objective_id": objective_id}
    if fields.get("kind", "increase") in ("increase", "decrease"):
        body |= {"start": 0, "target": 100}
    body |= fields
    return post(client, "/key-results", body, ws)  # type: ignore[no-any-return]


def make_initiative(
    client: Any,
    key_result_ids: list[int],
    title: str = "New playbook",
    *,
    ws: str | None = None,
    **fields: Any,
) -> dict[str, Any]:
    body = {"title": title, "key_result_ids": key_result_ids} | fields
    return post(client, "/initiatives", body, ws)  # type: ignore[no-any-return]


def check_in(
    client: Any,
    key_result_id: int,
    value: float,
    *,
    at: str | None = None,
    note: str | None = None,
    ws: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"value": value}
    if at is not None:
        body["at"] = at
    if note is not None:
        body["note"] = note
    return post(client, f"/key-results/{key_result_id}/check-ins", body, ws)  # type: ignore[no-any-return]


def make_tree(client: Any, *, ws: str | None = None) -> dict[str, Any]:
    """A small workspace content: 2 teams, 2 periods, 3 objectives (one aligned),
    4 key results (one checked in) and 2 initiatives."""
    company = make_team(client, "Company", ws=ws)
    sales = make_team(client, "Sales", parent_id=company["id"], ws=ws)
    year = make_period(client, "2026", ws=ws)
    q1 = make_period(client, "2026-Q1", "2026-01-01", "2026-04-01", ws=ws)
    top = make_objective(client, year["id"], "Reach 1M ARR", team_id=company["id"], ws=ws)
    aligned = make_objective(
        client, year["id"], "Win deals", team_id=sales["id"], parent_id=top["id"], ws=ws
    )
    quarter = make_objective(client, q1["id"], "Hire", ws=ws)
    arr = make_key_result(
        client, top["id"], "ARR", unit="currency", currency="EUR", target=1_000_000, ws=ws
    )
    deals = make_key_result(client, aligned["id"], "Deals won", target=40, ws=ws)
    nps = make_key_result(client, top["id"], "NPS", kind="at_least", unit="score", target=80, ws=ws)
    hires = make_key_result(client, quarter["id"], "Hires", target=5, weight=2, ws=ws)
    check_in(client, deals["id"], 12, note="first deals", ws=ws)
    engagement = make_initiative(client, [arr["id"], deals["id"]], "Sales engagement", ws=ws)
    offsite = make_initiative(client, [hires["id"]], "Offsite", status="done", ws=ws)
    return {
        "teams": [company, sales],
        "periods": [year, q1],
        "objectives": [top, aligned, quarter],
        "key_results": [arr, deals, nps, hires],
        "initiatives": [engagement, offsite],
    }


def list_all(
    client: Any, resource: str, *, ws: str | None = None, limit: int | None = None, **params: Any
) -> list[dict[str, Any]]:
    """Every row of a list endpoint, following `next_cursor` page by page."""
    rows: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(10_000):
        query = dict(params)
        if limit is not None:
            query["limit"] = limit
        if cursor is not None:
            query["cursor"] = cursor
        page = ok(client.get(f"{API}/{resource}", params=query, headers=headers(ws)))
        rows.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return rows
    raise AssertionError(f"/{resource} never stops paginating")


def dump(client: Any, ws: str | None = None) -> dict[str, Any]:
    """Everything the API lists for a workspace (with each key result's history), plus the
    workspaces themselves: compare two dumps to prove that nothing changed."""
    found: dict[str, Any] = {"workspaces": list_all(client, "workspaces")}
    for resource in LISTED:
        found[resource] = list_all(client, resource, ws=ws)
    for kr in found["key-results"]:
        found[f"history/{kr['id']}"] = list_all(client, f"key-results/{kr['id']}/history", ws=ws)
    return found


def db_dump(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in primary-key order: the strongest "nothing changed"."""
    import service.models  # noqa: F401 - registers every table

    with engine.connect() as conn:
        return {
            table.name: [
                tuple(row)
                for row in conn.execute(select(table).order_by(*table.primary_key.columns))
            ]
            for table in SQLModel.metadata.sorted_tables
        }


def run_to_end(
    client: Any,
    queued: httpx.Response,
    headers: dict[str, str] | None = None,
    timeout_seconds: float = 60,
) -> dict[str, Any]:
    """The run that `POST /connectors/{id}/sync` queued (202 + Location), polled at its
    Location until it is no longer queued or running (a real server's own worker runs it),
    or `timeout_seconds` of real time."""
    import time

    assert queued.status_code == 202, (queued.status_code, queued.text)
    run: dict[str, Any] = queued.json()
    # Location is a path from the server's root; the client's base URL may carry one.
    location = str(client.base_url.join(queued.headers["Location"]))
    deadline = time.monotonic() + timeout_seconds
    while run["status"] in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.2)
        run = client.get(location, headers=headers).json()
    return run


def sync_over_api(
    client: Any, connector_id: int, headers: dict[str, str] | None = None
) -> httpx.Response:
    """`POST /connectors/{id}/sync` (202 + Location), one worker tick of the app's own
    sync engine (test apps play the `api` role: no scheduler thread), then the run read at
    its Location: the response of the finished run."""
    from service.sync.scheduler import tick

    queued = client.post(f"{API}/connectors/{connector_id}/sync", headers=headers)
    assert queued.status_code == 202, (queued.status_code, queued.text)
    assert queued.json()["status"] in ("queued", "running")
    tick(client.app.state.sync_engine)
    response: httpx.Response = client.get(queued.headers["Location"], headers=headers)
    return response
