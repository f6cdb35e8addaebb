"""The connectors API: configure, check, sync and read runs; secrets stay write-only."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.connectors.hubspot.harness import BAD_TOKEN, GOOD_TOKEN, HubSpotHarness
from tests.factories import sync_over_api
from tests.harnesses import open_harness

PROBLEM = "application/problem+json"


@pytest.fixture
def hubspot(tmp_path: Path) -> Iterator[HubSpotHarness]:
    with open_harness("hubspot", tmp_path) as h:
        assert isinstance(h, HubSpotHarness)
        yield h


def make_workspace(client: TestClient, slug: str = "acme") -> dict[str, str]:
    response = client.post("/api/v1/workspaces", json={"slug": slug, "name": slug.title()})
    assert response.status_code == 201, response.text
    return {"X-Workspace": slug}


def hubspot_body(h: HubSpotHarness, token: str = GOOD_TOKEN, **extra: Any) -> dict[str, Any]:
    return {
        "name": "HubSpot",
        "type": "hubspot",
        "config": {"base_url": h.served.base_url},
        "secrets": {"access_token": token},
        "kinds": ["contact", "deal"],
    } | extra


def assert_problem(response: Any, status: int, field: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["field"] == field, body
    assert body["detail"]


def test_given_a_connector_when_read_back_then_secrets_are_named_never_shown(
    client: TestClient, hubspot: HubSpotHarness
) -> None:
    headers = make_workspace(client)
    created = client.post("/api/v1/connectors", json=hubspot_body(hubspot), headers=headers)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["secrets_set"] == ["access_token"]
    assert GOOD_TOKEN not in created.text
    listed = client.get("/api/v1/connectors", headers=headers)
    assert GOOD_TOKEN not in listed.text
    assert [c["name"] for c in listed.json()["items"]] == ["HubSpot"]
    read = client.get(f"/api/v1/connectors/{body['id']}", headers=headers)
    assert GOOD_TOKEN not in read.text
    assert read.json()["stale"] is True  # never synced yet


def test_given_bad_connector_configs_when_created_then_422_names_the_field(
    client: TestClient, hubspot: HubSpotHarness
) -> None:
    headers = make_workspace(client)
    before = client.get("/api/v1/connectors", headers=headers).json()
    cases = [
        (hubspot_body(hubspot, type="zoho"), "type"),
        (hubspot_body(hubspot, kinds=["lead"]), "kinds"),
        (hubspot_body(hubspot, secrets={}), "secrets.access_token"),
        (hubspot_body(hubspot, config={"base_url": "not a url"}), "config.base_url"),
        (hubspot_body(hubspot, config={"base_url": "ftp://x"}), "config.base_url"),
        (hubspot_body(hubspot, config={"base_url": "https://x", "nope": 1}), "config.nope"),
        (hubspot_body(hubspot, sync_interval_seconds=5), "sync_interval_seconds"),
    ]
    for body, field in cases:
        assert_problem(client.post("/api/v1/connectors", json=body, headers=headers), 422, field)
    assert client.get("/api/v1/connectors", headers=headers).json() == before


def test_given_a_missing_secret_value_when_the_error_is_shown_then_it_does_not_echo_secrets(
    client: TestClient, hubspot: HubSpotHarness
) -> None:
    headers = make_workspace(client)
    body = hubspot_body(hubspot, secrets={"access_token": GOOD_TOKEN, "extra": GOOD_TOKEN})
    response = client.post("/api/v1/connectors", json=body, headers=headers)
    assert response.status_code == 422
    assert GOOD_TOKEN not in response.text


def test_given_good_and_wrong_credentials_when_checked_then_the_check_says_which(
    client: TestClient, hubspot: HubSpotHarness
) -> None:
    headers = make_workspace(client)
    good = client.post("/api/v1/connectors", json=hubspot_body(hubspot), headers=headers).json()
    bad = client.post(
        "/api/v1/connectors",
        json=hubspot_body(hubspot, token=BAD_TOKEN, name="wrong"),
        headers=headers,
    ).json()
    ok = client.post(f"/api/v1/connectors/{good['id']}/check", headers=headers)
    assert ok.status_code == 200, ok.text
    assert ok.json()["ok"] is True
    refused = client.post(f"/api/v1/connectors/{bad['id']}/check", headers=headers)
    assert refused.status_code == 200
    assert refused.json()["ok"] is False
    assert refused.json()["detail"].startswith("auth")
    assert BAD_TOKEN not in refused.text


def test_given_a_connector_when_synced_over_the_api_then_the_run_is_listed(
    client: TestClient, hubspot: HubSpotHarness
) -> None:
    headers = make_workspace(client)
    hubspot.seed(hubspot.kinds[0], 12)
    created = client.post("/api/v1/connectors", json=hubspot_body(hubspot), headers=headers)
    connector_id = created.json()["id"]
    run = sync_over_api(client, connector_id, headers)
    assert run.status_code == 200, run.text
    assert run.json()["status"] == "succeeded", run.json()
    assert run.json()["inserted"] == len(hubspot.live_ids(hubspot.kinds[0]))
    runs = client.get(f"/api/v1/connectors/{connector_id}/runs", headers=headers).json()
    assert [r["id"] for r in runs["items"]] == [run.json()["id"]]
    after = client.get(f"/api/v1/connectors/{connector_id}", headers=headers).json()
    assert after["last_run_status"] == "succeeded"
    assert after["last_success_at"] is not None


def test_given_wrong_credentials_when_synced_then_the_run_fails_saying_why(
    client: TestClient, hubspot: HubSpotHarness
) -> None:
    headers = make_workspace(client)
    created = client.post(
        "/api/v1/connectors", json=hubspot_body(hubspot, token=BAD_TOKEN), headers=headers
    )
    run = sync_over_api(client, created.json()["id"], headers)
    assert run.status_code == 200
    body = run.json()
    assert body["status"] == "failed"
    assert body["error_class"] == "auth"
    assert BAD_TOKEN not in run.text


def test_given_an_update_when_one_secret_is_given_then_the_others_are_kept(
    client: TestClient, hubspot: HubSpotHarness
) -> None:
    headers = make_workspace(client)
    created = client.post("/api/v1/connectors", json=hubspot_body(hubspot), headers=headers)
    connector_id = created.json()["id"]
    patched = client.patch(
        f"/api/v1/connectors/{connector_id}",
        json={"name": "HubSpot EU", "sync_interval_seconds": 3600},
        headers=headers,
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["secrets_set"] == ["access_token"]
    check = client.post(f"/api/v1/connectors/{connector_id}/check", headers=headers)
    assert check.json()["ok"] is True
    bad_patch = client.patch(
        f"/api/v1/connectors/{connector_id}", json={"kinds": ["lead"]}, headers=headers
    )
    assert_problem(bad_patch, 422, "kinds")
    assert client.get(f"/api/v1/connectors/{connector_id}", headers=headers).json()["kinds"] == [
        "contact",
        "deal",
    ]


def test_given_another_workspace_when_reading_its_connector_then_404(
    client: TestClient, hubspot: HubSpotHarness
) -> None:
    mine = make_workspace(client, "mine")
    theirs = make_workspace(client, "theirs")
    created = client.post("/api/v1/connectors", json=hubspot_body(hubspot), headers=theirs)
    connector_id = created.json()["id"]
    for method, path in [
        ("GET", f"/api/v1/connectors/{connector_id}"),
        ("POST", f"/api/v1/connectors/{connector_id}/sync"),
        ("POST", f"/api/v1/connectors/{connector_id}/check"),
        ("GET", f"/api/v1/connectors/{connector_id}/runs"),
        ("DELETE", f"/api/v1/connectors/{connector_id}"),
    ]:
        response = client.request(method, path, headers=mine)
        assert response.status_code == 404, (method, path)
        assert response.headers["content-type"].startswith(PROBLEM)
    assert client.get(f"/api/v1/connectors/{connector_id}", headers=theirs).status_code == 200


def test_given_a_salesforce_password_flow_without_username_when_created_then_422_names_it(
    client: TestClient,
) -> None:
    headers = make_workspace(client)
    body = {
        "name": "Salesforce",
        "type": "salesforce",
        "config": {"login_url": "https://login.salesforce.com", "auth_flow": "password"},
        "secrets": {"client_id": "3MVG9id", "client_secret": "s3cr3t-value"},
    }
    response = client.post("/api/v1/connectors", json=body, headers=headers)
    assert_problem(response, 422, "secrets.username")
    assert "s3cr3t-value" not in response.text
    assert client.get("/api/v1/connectors", headers=headers).json()["items"] == []


def test_given_a_nul_character_in_a_connector_name_when_created_then_422_not_500(
    client: TestClient, hubspot: HubSpotHarness
) -> None:
    headers = make_workspace(client)
    response = client.post(
        "/api/v1/connectors", json=hubspot_body(hubspot, name="Hub\x00Spot"), headers=headers
    )
    assert_problem(response, 422, "name")
