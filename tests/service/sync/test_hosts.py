"""Connector credentials only go where they were meant to: URL changes need the secrets,
URLs name the vendor's hosts (or the deployment's allowlist), and what another host answers
is not echoed back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from service.main import create_app
from tests.conftest import FrozenClock, bearer, issue_token, make_settings
from tests.connectors.hubspot.harness import GOOD_TOKEN, HubSpotHarness
from tests.connectors.salesforce.harness import SalesforceHarness
from tests.factories import sync_over_api
from tests.fakes.recorder import Recorder
from tests.fakes.server import Served, serve
from tests.harnesses import open_harness
from tests.service.sync.test_routes import assert_problem, hubspot_body, make_workspace

CONNECTORS = "/api/v1/connectors"


@pytest.fixture
def hubspot(tmp_path: Path) -> Iterator[HubSpotHarness]:
    with open_harness("hubspot", tmp_path) as h:
        assert isinstance(h, HubSpotHarness)
        yield h


@pytest.fixture
def sf(tmp_path: Path) -> Iterator[SalesforceHarness]:
    (tmp_path / "sf").mkdir()
    with open_harness("salesforce", tmp_path / "sf") as h:
        assert isinstance(h, SalesforceHarness)
        yield h


@pytest.fixture
def attacker(tmp_path: Path) -> Iterator[tuple[Served, Recorder]]:
    """A second host on loopback, reachable as "localhost", recording what it receives."""
    recorder = Recorder()
    (tmp_path / "attacker").mkdir()
    with serve(recorder, tls=True, tmp_dir=str(tmp_path / "attacker")) as served:
        yield served, recorder


def create(client: TestClient, headers: dict[str, str], body: dict[str, Any]) -> int:
    response = client.post(CONNECTORS, json=body, headers=headers)
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def salesforce_body(sf: SalesforceHarness) -> dict[str, Any]:
    secrets = sf.secrets()
    return {
        "name": "Salesforce",
        "type": "salesforce",
        "config": {"login_url": sf.served.base_url, "bulk_threshold": None},
        "secrets": {k: v.get_secret_value() for k, v in secrets if v is not None},
        "kinds": ["lead"],
    }


# ------------------------------------------------------------------ URL changes need the secrets


def test_given_a_patch_of_only_the_url_then_422_names_the_secrets_and_nothing_changes(
    client: TestClient, hubspot: HubSpotHarness
) -> None:
    headers = make_workspace(client)
    connector_id = create(client, headers, hubspot_body(hubspot))

    response = client.patch(
        f"{CONNECTORS}/{connector_id}",
        json={"config": {"base_url": "https://api-eu1.hubapi.com"}},
        headers=headers,
    )

    assert_problem(response, 422, "secrets.access_token")
    assert "config.base_url" in response.json()["detail"]
    stored = client.get(f"{CONNECTORS}/{connector_id}", headers=headers).json()
    assert stored["config"]["base_url"] == hubspot.served.base_url


def test_given_a_salesforce_login_url_patch_without_secrets_then_every_secret_is_named(
    client: TestClient, sf: SalesforceHarness
) -> None:
    headers = make_workspace(client)
    connector_id = create(client, headers, salesforce_body(sf))

    response = client.patch(
        f"{CONNECTORS}/{connector_id}",
        json={"config": {"login_url": "https://acme.my.salesforce.com"}},
        headers=headers,
    )

    assert_problem(response, 422, "secrets.client_id")
    detail = response.json()["detail"]
    for name in ("client_id", "client_secret", "password", "security_token", "username"):
        assert f"secrets.{name}" in detail
    # Some secrets are not enough: all of them must come again.
    partial = client.patch(
        f"{CONNECTORS}/{connector_id}",
        json={
            "config": {"login_url": "https://acme.my.salesforce.com"},
            "secrets": {"client_id": "other", "client_secret": "other-secret"},
        },
        headers=headers,
    )
    assert_problem(partial, 422, "secrets.password")


def test_given_a_delighted_base_url_patch_without_the_key_then_422(client: TestClient) -> None:
    headers = make_workspace(client)
    body = {"name": "NPS", "type": "delighted", "config": {}, "secrets": {"api_key": "k-123"}}
    connector_id = create(client, headers, body)

    response = client.patch(
        f"{CONNECTORS}/{connector_id}",
        json={"config": {"base_url": "https://api.delighted.com/v2"}},
        headers=headers,
    )

    assert_problem(response, 422, "secrets.api_key")


def test_given_a_patch_that_keeps_the_urls_then_no_secrets_are_needed(
    client: TestClient, hubspot: HubSpotHarness
) -> None:
    headers = make_workspace(client)
    connector_id = create(client, headers, hubspot_body(hubspot))

    response = client.patch(
        f"{CONNECTORS}/{connector_id}",
        json={"config": {"base_url": hubspot.served.base_url, "default_currency": "USD"}},
        headers=headers,
    )

    assert response.status_code == 200, response.text
    assert response.json()["config"]["default_currency"] == "USD"


def test_given_the_url_and_the_secrets_to_an_allowlisted_host_then_200(
    client: TestClient, hubspot: HubSpotHarness, tmp_path: Path
) -> None:
    headers = make_workspace(client)
    connector_id = create(client, headers, hubspot_body(hubspot))
    with serve(Recorder(), tmp_dir=str(tmp_path)) as other:
        response = client.patch(
            f"{CONNECTORS}/{connector_id}",
            json={"config": {"base_url": other.base_url}, "secrets": {"access_token": "new"}},
            headers=headers,
        )
    assert response.status_code == 200, response.text
    assert response.json()["config"]["base_url"] == other.base_url


def test_given_an_attacker_url_with_the_secrets_then_422_names_the_url(
    client: TestClient, hubspot: HubSpotHarness
) -> None:
    headers = make_workspace(client)
    connector_id = create(client, headers, hubspot_body(hubspot))

    response = client.patch(
        f"{CONNECTORS}/{connector_id}",
        json={"config": {"base_url": "https://attacker.example"}, "secrets": {"access_token": "t"}},
        headers=headers,
    )

    assert_problem(response, 422, "config.base_url")


# ------------------------------------------------------------------ only the vendor's hosts


@pytest.mark.parametrize(
    "url",
    [
        "https://attacker.example",
        "http://api.hubapi.com",
        "https://localhost",
        "https://127.0.0.2",
        "https://[::1]",
        "https://169.254.169.254",
        "https://[fd00:ec2::254]",
        "https://192.168.1.10",
        "https://0.0.0.0",
        "file:///etc/passwd",
    ],
)
def test_given_a_url_off_the_vendor_when_created_then_422_names_the_field(
    client: TestClient, hubspot: HubSpotHarness, url: str
) -> None:
    headers = make_workspace(client)
    response = client.post(
        CONNECTORS, json=hubspot_body(hubspot, config={"base_url": url}), headers=headers
    )
    assert_problem(response, 422, "config.base_url")
    assert GOOD_TOKEN not in response.text
    assert client.get(CONNECTORS, headers=headers).json()["items"] == []


@pytest.mark.parametrize(
    ("field", "url"),
    [
        ("login_url", "https://attacker.example"),
        ("login_url", "https://[::1]:8443"),
        ("instance_url", "https://169.254.169.254"),
        ("login_url", "https://salesforce.com.attacker.example"),
    ],
)
def test_given_a_salesforce_url_off_salesforce_when_created_then_422(
    client: TestClient, sf: SalesforceHarness, field: str, url: str
) -> None:
    headers = make_workspace(client)
    body = salesforce_body(sf)
    body["config"][field] = url
    response = client.post(CONNECTORS, json=body, headers=headers)
    assert_problem(response, 422, f"config.{field}")


def test_given_a_refused_host_then_an_open_and_a_closed_port_answer_alike(
    client: TestClient, hubspot: HubSpotHarness, attacker: tuple[Served, Recorder]
) -> None:
    served, recorder = attacker
    headers = make_workspace(client)
    answers = []
    for port in (served.port, 9):
        body = hubspot_body(hubspot, config={"base_url": f"https://localhost:{port}"})
        response = client.post(CONNECTORS, json=body, headers=headers)
        assert_problem(response, 422, "config.base_url")
        answers.append(response.json()["detail"])
    assert answers[0] == answers[1]
    assert recorder.received == []


# ------------------------------------------------------------------ at run time


def test_given_a_login_answering_a_disallowed_instance_url_then_the_run_fails_and_sends_nothing(
    database_url: str,
    engine: Engine,
    clock: FrozenClock,
    sf: SalesforceHarness,
    attacker: tuple[Served, Recorder],
) -> None:
    served, recorder = attacker
    settings = make_settings(database_url, connector_ca_bundle=sf.served.ca_bundle)
    app = create_app(settings, engine, clock=clock)
    with TestClient(app, raise_server_exceptions=False) as client:
        client.headers.update(bearer(issue_token(engine)))
        headers = make_workspace(client)
        connector_id = create(client, headers, salesforce_body(sf))
        sf.fake.instance_url = f"https://localhost:{served.port}"

        run = sync_over_api(client, connector_id, headers)
        check = client.post(f"{CONNECTORS}/{connector_id}/check", headers=headers)

    assert run.status_code == 200, run.text
    assert run.json()["status"] == "failed"
    assert run.json()["error_class"] == "config"
    assert "instance_url" in run.json()["error_message"]
    assert check.json()["ok"] is False
    assert check.json()["detail"].startswith("config:")
    # The org's login saw the credentials; the instance it named saw nothing at all.
    assert recorder.received == []


def test_given_another_service_answering_then_its_reply_is_not_echoed(
    client: TestClient, hubspot: HubSpotHarness, tmp_path: Path
) -> None:
    internal = Recorder(
        status=404,
        body=b"<html>admin console: db password hunter2</html>",
        content_type="text/html",
    )
    headers = make_workspace(client)
    with serve(internal, tmp_dir=str(tmp_path)) as served:
        connector_id = create(
            client, headers, hubspot_body(hubspot, config={"base_url": served.base_url})
        )
        check = client.post(f"{CONNECTORS}/{connector_id}/check", headers=headers)
        run = sync_over_api(client, connector_id, headers)

    assert check.json()["ok"] is False
    assert run.json()["status"] == "failed"
    for text in (check.text, run.text):
        assert "hunter2" not in text
        assert "admin console" not in text
    assert len(internal.received) >= 1
