"""Tokens and roles: 401 without a valid token, 403 below the route's role, a workspace
token confined to its workspace, tokens shown once and stored hashed, rate limit, audit."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from service.auth.models import Role
from service.cli import app as cli
from tests.conftest import TEST_SECRET_KEY, FrozenClock, bearer, issue_token, make_settings
from tests.factories import (
    API,
    assert_problem,
    make_key_result,
    make_objective,
    make_period,
    make_workspace,
    ok,
)


def _as(client: TestClient, token: str | None) -> dict[str, str]:
    """Headers replacing the client's own deployment token."""
    return bearer(token) if token else {"Authorization": ""}


def test_given_no_unknown_or_malformed_token_when_calling_the_api_then_401_with_challenge(
    client: TestClient,
) -> None:
    make_workspace(client)
    for auth in ("", "Bearer", "Bearer okr_not-a-token", "Basic dXNlcjpwYXNz"):
        response = client.get(f"{API}/objectives", headers={"Authorization": auth})
        assert_problem(response, 401)
        assert response.headers["www-authenticate"].startswith("Bearer")
    # Probes stay open.
    assert client.get("/healthz", headers={"Authorization": ""}).status_code == 200


def test_given_roles_when_reading_and_writing_then_each_role_gets_what_it_is_for(
    client: TestClient, engine: Engine
) -> None:
    make_workspace(client)
    period = make_period(client)
    viewer = issue_token(engine, Role.viewer, "acme")
    editor = issue_token(engine, Role.editor, "acme")
    admin = issue_token(engine, Role.admin, "acme")
    objective = {"title": "Grow", "period_id": period["id"]}
    connector = {"name": "crm", "type": "demo", "config": {}, "secrets": {}}
    # viewer: reads OKRs and progress; no writes.
    ok(client.get(f"{API}/objectives", headers=_as(client, viewer)))
    ok(client.get(f"{API}/progress", params={"period": "2026"}, headers=_as(client, viewer)))
    assert_problem(
        client.post(f"{API}/objectives", json=objective, headers=_as(client, viewer)), 403
    )
    assert_problem(client.get(f"{API}/connectors", headers=_as(client, viewer)), 403)
    # editor: OKRs, not connectors nor tokens.
    ok(client.post(f"{API}/objectives", json=objective, headers=_as(client, editor)), 201)
    assert_problem(
        client.post(f"{API}/connectors", json=connector, headers=_as(client, editor)), 403
    )
    assert_problem(client.get(f"{API}/tokens", headers=_as(client, editor)), 403)
    # admin: connectors, tokens, workspace settings; but not new workspaces.
    ok(client.post(f"{API}/connectors", json=connector, headers=_as(client, admin)), 201)
    ok(client.patch(f"{API}/workspaces/acme", json={"name": "Acme SA"}, headers=_as(client, admin)))
    body = {"slug": "other", "name": "Other"}
    assert_problem(client.post(f"{API}/workspaces", json=body, headers=_as(client, admin)), 403)


def test_given_a_workspace_token_when_naming_another_workspace_then_it_is_not_found(
    client: TestClient, engine: Engine
) -> None:
    make_workspace(client, "acme")
    make_workspace(client, "rival")
    rival_period = make_period(client, ws="rival")
    rival_objective = make_objective(client, rival_period["id"], ws="rival")
    token = issue_token(engine, Role.admin, "acme")
    mine = _as(client, token)
    listed = ok(client.get(f"{API}/workspaces", headers=mine))
    assert [w["slug"] for w in listed["items"]] == ["acme"]
    assert_problem(client.get(f"{API}/workspaces/rival", headers=mine), 404)
    assert_problem(client.get(f"{API}/objectives", headers=mine | {"X-Workspace": "rival"}), 404)
    assert_problem(client.get(f"{API}/objectives/{rival_objective['id']}", headers=mine), 404)
    assert ok(client.get(f"{API}/objectives", headers=mine))["items"] == []


def test_given_a_token_created_over_the_api_then_shown_once_stored_hashed_and_revocable(
    client: TestClient, engine: Engine, clock: FrozenClock, tmp_path: Path
) -> None:
    make_workspace(client)
    created = ok(client.post(f"{API}/tokens", json={"name": "wall", "role": "viewer"}), 201)
    token = created["token"]
    assert token.startswith("okr_")
    assert len(token) > 40
    listed = ok(client.get(f"{API}/tokens"))["items"]
    assert [t["name"] for t in listed] == ["wall"]
    assert "token" not in listed[0]
    assert "token_hash" not in listed[0]
    with engine.connect() as conn:
        stored = conn.execute(
            text("SELECT token_hash, prefix FROM api_token WHERE name = 'wall'")
        ).all()
    [(token_hash, prefix)] = stored
    assert token not in token_hash
    assert token.startswith(prefix)
    assert len(prefix) < 10
    ok(client.get(f"{API}/objectives", headers=_as(client, token)))
    clock.now += timedelta(minutes=5)
    ok(client.get(f"{API}/objectives", headers=_as(client, token)))
    used = ok(client.get(f"{API}/tokens"))["items"][0]["last_used_at"]
    assert datetime.fromisoformat(used) == clock.now
    revoked = ok(client.delete(f"{API}/tokens/{created['id']}"))
    assert revoked["revoked_at"] is not None
    assert_problem(client.get(f"{API}/objectives", headers=_as(client, token)), 401)


def test_given_an_expired_token_then_401(client: TestClient, clock: FrozenClock) -> None:
    make_workspace(client)
    expires = (clock.now + timedelta(days=1)).isoformat()
    body = {"name": "temp", "role": "viewer", "expires_at": expires}
    token = ok(client.post(f"{API}/tokens", json=body), 201)["token"]
    ok(client.get(f"{API}/objectives", headers=_as(client, token)))
    clock.now += timedelta(days=1)
    response = client.get(f"{API}/objectives", headers=_as(client, token))
    assert "expired" in assert_problem(response, 401)["detail"]


def test_given_a_low_rate_limit_when_a_token_exceeds_it_then_429_with_retry_after(
    database_url: str, engine: Engine, clock: FrozenClock
) -> None:
    from service.main import create_app

    app = create_app(
        make_settings(database_url, rate_limit_requests_per_minute=3), engine, clock=clock
    )
    token, other = issue_token(engine), issue_token(engine, name="other")
    with TestClient(app, raise_server_exceptions=False) as client:
        for _ in range(3):
            ok(client.get(f"{API}/workspaces", headers=bearer(token)))
        response = client.get(f"{API}/workspaces", headers=bearer(token))
        assert_problem(response, 429)
        assert 1 <= int(response.headers["retry-after"]) <= 60
        # Per token: another token is not held back.
        ok(client.get(f"{API}/workspaces", headers=bearer(other)))


def test_given_changes_when_the_audit_log_is_read_then_who_what_when_old_and_new(
    client: TestClient, engine: Engine, clock: FrozenClock
) -> None:
    make_workspace(client)
    editor = issue_token(engine, Role.editor, "acme", name="ops bot")
    period = make_period(client)
    objective = make_objective(client, period["id"], "Grow")
    kr = make_key_result(client, objective["id"], "Deals", target=10)
    ok(
        client.patch(
            f"{API}/key-results/{kr['id']}", json={"target": 12}, headers=_as(client, editor)
        )
    )
    connector = {"name": "crm", "type": "demo", "config": {}, "secrets": {}}
    ok(client.post(f"{API}/connectors", json=connector), 201)
    assert_problem(client.get(f"{API}/audit", headers=_as(client, editor)), 403)
    events = ok(client.get(f"{API}/audit", params={"limit": 500}))["items"]
    change = next(e for e in events if e["entity"] == "key_result" and e["action"] == "update")
    assert change["actor"].startswith("ops bot")
    assert change["changes"] == {"target": [10.0, 12.0]}
    assert datetime.fromisoformat(change["at"]) == clock.now
    created = next(e for e in events if e["entity"] == "connector")
    assert created["action"] == "create"
    assert created["changes"]["secrets"][1] in (None, "***")
    assert {e["entity"] for e in events} >= {"period", "objective", "key_result", "connector"}


def test_given_the_cli_when_creating_a_token_then_it_works_once_and_revoke_stops_it(
    client: TestClient, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_workspace(client)
    monkeypatch.setenv("OKR_DATABASE_URL", database_url)
    monkeypatch.setenv("OKR_SECRET_KEYS", TEST_SECRET_KEY)
    runner = CliRunner()
    result = runner.invoke(
        cli, ["tokens", "create", "--workspace", "acme", "--role", "editor", "--name", "cli made"]
    )
    assert result.exit_code == 0, result.output
    token = result.stdout.strip().splitlines()[-1]
    assert token.startswith("okr_")
    ok(client.get(f"{API}/objectives", headers=_as(client, token)))
    listed = ok(client.get(f"{API}/tokens"))["items"]
    [row] = [t for t in listed if t["name"] == "cli made"]
    assert row["role"] == "editor"
    result = runner.invoke(cli, ["tokens", "revoke", str(row["id"])])
    assert result.exit_code == 0, result.output
    assert_problem(client.get(f"{API}/objectives", headers=_as(client, token)), 401)
    denied = runner.invoke(cli, ["tokens", "create", "--role", "viewer", "--name", "x"])
    assert denied.exit_code == 2
