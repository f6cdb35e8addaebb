"""Connector secrets at rest: encrypted in the database, never returned, never logged,
rotated between keys, and a connector whose keys are lost still lists but cannot sync."""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text
from sqlmodel import Session
from typer.testing import CliRunner

from connectors.base import Connector as VendorConnector
from service import db
from service.cli import app as cli
from service.main import create_app, upgrade
from service.settings import Settings
from service.sync import secrets as secret_store
from service.sync.models import Connector
from tests.conftest import bearer, issue_token, make_settings
from tests.connectors.harness import SourceHarness
from tests.connectors.hubspot.harness import GOOD_TOKEN, HubSpotHarness
from tests.factories import API, CREATED_AT, assert_problem, make_workspace, ok, sync_over_api
from tests.fakes.hubspot import Fault, on_path
from tests.harnesses import open_harness

KEY_A = "6n_Ph6ad00BMWUNXc8UnbOlQiXBWydAX5ImPqsNeOZ8="
KEY_B = "Hvfb5L12WiIQWzE-pw6PsLZD1HggIKnrA9ua5kqifVE="
POSIX = pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")


@pytest.fixture(params=["delighted", "hubspot", "salesforce"])
def vendor(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SourceHarness]:
    """Each connector that has secrets, against its fake vendor."""
    with open_harness(request.param, tmp_path) as h:
        yield h


@pytest.fixture
def hubspot(tmp_path: Path) -> Iterator[HubSpotHarness]:
    with open_harness("hubspot", tmp_path) as h:
        assert isinstance(h, HubSpotHarness)
        yield h


def serve(engine: Engine, database_url: str, harness: SourceHarness, keys: str = KEY_A) -> Any:
    """The API (a TestClient context) on the harness's clock, trusting its fake's CA."""
    settings = make_settings(
        database_url,
        secret_keys=keys,
        connector_ca_bundle=harness.connector().runtime.ca_bundle,
        connector_max_attempts=2,
    )
    app = create_app(settings, engine, clock=harness.now)
    client = TestClient(app, raise_server_exceptions=False)
    client.headers.update(bearer(issue_token(engine)))
    return client


def body_for(vendor: VendorConnector, harness: SourceHarness) -> dict[str, Any]:
    return {
        "name": harness.name,
        "type": vendor.type_name,
        "config": vendor.config.model_dump(mode="json"),
        "secrets": secret_store.plain(vendor.secrets),
        "kinds": [k.value for k in harness.kinds],
    }


def secret_values(vendor: VendorConnector) -> list[str]:
    values = [str(v) for v in secret_store.plain(vendor.secrets).values() if v]
    assert values
    return values


def stored_bytes(database_url: str, engine: Engine) -> bytes:
    """Everything the database holds at rest: the SQLite files (WAL included), or the
    connector table's text on PostgreSQL."""
    path = db.sqlite_path(database_url)
    if path is not None:
        files = [path, path.with_name(path.name + "-wal")]
        return b"".join(f.read_bytes() for f in files if f.exists())
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM connector")).all()
    return repr(rows).encode()


def stored_secrets(engine: Engine, connector_id: int) -> dict[str, Any]:
    with Session(engine) as session:
        row = session.get(Connector, connector_id)
        assert row is not None
        return row.secrets


def store_plain(engine: Engine, vendor: VendorConnector, slug: str = "legacy") -> int:
    """A connector row as stored before encryption existed: secrets in plain."""
    with Session(engine) as session:
        ws = make_workspace_row(session, slug)
        row = Connector(
            workspace_id=ws,
            name=f"{vendor.type_name} legacy",
            type=vendor.type_name,
            config=vendor.config.model_dump(mode="json"),
            secrets=secret_store.plain(vendor.secrets),
            created_at=CREATED_AT,
        )
        session.add(row)
        session.commit()
        assert row.id is not None
        return row.id


def make_workspace_row(session: Session, slug: str) -> int:
    from service.workspaces.models import Workspace

    ws = Workspace(slug=slug, name=slug.title(), created_at=CREATED_AT)
    session.add(ws)
    session.flush()
    assert ws.id is not None
    return ws.id


# ---------------------------------------------------------------------------- at rest


def test_given_connectors_created_over_the_api_when_the_database_is_read_then_no_secret_is_in_it(
    engine: Engine, database_url: str, vendor: SourceHarness
) -> None:
    good = vendor.connector()
    for kind in vendor.kinds:
        vendor.seed(kind, 5)
    with serve(engine, database_url, vendor) as client:
        make_workspace(client)
        created = ok(client.post(f"{API}/connectors", json=body_for(good, vendor)), 201)
        assert created["secrets_set"] == sorted(secret_store.plain(good.secrets))
        run = ok(sync_over_api(client, created["id"]))
        assert run["status"] == "succeeded", run
        assert run["inserted"] > 0
        shown = client.get(f"{API}/connectors/{created['id']}").text
    at_rest = stored_bytes(database_url, engine)
    for value in secret_values(good):
        assert value.encode() not in at_rest
        assert value not in shown
    assert secret_store.is_sealed(stored_secrets(engine, created["id"]))


def test_given_a_sealed_row_when_read_then_it_is_versioned_and_names_its_secrets(
    database_url: str,
) -> None:
    settings = make_settings(database_url, secret_keys=KEY_A)
    stored = secret_store.seal({"access_token": "tok-123456", "unused": ""}, settings)
    assert stored["_sealed"] == secret_store.SEALED
    assert secret_store.secret_names(stored) == ["access_token"]
    assert "tok-123456" not in json.dumps(stored)
    assert secret_store.unseal(stored, settings) == {"access_token": "tok-123456", "unused": ""}
    assert secret_store.seal({}, settings) == {}


def test_given_legacy_plain_rows_when_upgraded_then_they_are_encrypted_and_still_sync(
    engine: Engine, database_url: str, hubspot: HubSpotHarness
) -> None:
    connector_id = store_plain(engine, hubspot.connector())
    assert not secret_store.is_sealed(stored_secrets(engine, connector_id))
    upgrade(make_settings(database_url, secret_keys=KEY_A), engine)
    assert secret_store.is_sealed(stored_secrets(engine, connector_id))
    assert GOOD_TOKEN.encode() not in stored_bytes(database_url, engine)
    with serve(engine, database_url, hubspot) as client:
        run = ok(sync_over_api(client, connector_id, {"X-Workspace": "legacy"}))
    assert run["status"] == "succeeded", run


# ---------------------------------------------------------------------------- never logged


def assert_nowhere(secrets: list[str], *texts: str) -> None:
    for value in secrets:
        for where in texts:
            assert value not in where


def test_given_wrong_credentials_when_the_sync_fails_then_no_secret_is_logged_or_stored(
    engine: Engine,
    database_url: str,
    vendor: SourceHarness,
    caplog: pytest.LogCaptureFixture,
) -> None:
    bad = vendor.bad_credentials_connector()
    caplog.set_level(logging.DEBUG)
    with serve(engine, database_url, vendor) as client:
        make_workspace(client)
        created = ok(client.post(f"{API}/connectors", json=body_for(bad, vendor)), 201)
        run = sync_over_api(client, created["id"])
        check = client.post(f"{API}/connectors/{created['id']}/check")
        runs = client.get(f"{API}/connectors/{created['id']}/runs")
    assert run.json()["status"] == "failed", run.text
    assert run.json()["error_class"] in ("auth", "config"), run.text
    assert check.json()["ok"] is False
    assert_nowhere(secret_values(bad), caplog.text, run.text, check.text, runs.text)


def test_given_a_vendor_500_echoing_the_token_when_syncing_then_it_is_neither_logged_nor_stored(
    engine: Engine,
    database_url: str,
    hubspot: HubSpotHarness,
    caplog: pytest.LogCaptureFixture,
) -> None:
    echo = {"status": "error", "message": f"upstream failed for Bearer {GOOD_TOKEN} ({GOOD_TOKEN})"}
    hubspot.fake.inject(Fault(when=on_path("/crm/"), status=500, body=echo, times=None))
    caplog.set_level(logging.DEBUG)
    with serve(engine, database_url, hubspot) as client:
        make_workspace(client)
        created = ok(
            client.post(f"{API}/connectors", json=body_for(hubspot.connector(), hubspot)), 201
        )
        run = sync_over_api(client, created["id"])
    assert run.json()["status"] == "failed", run.text
    with Session(engine) as session:
        stored = session.execute(text("SELECT error_message FROM sync_run")).scalars().all()
    assert stored
    assert_nowhere([GOOD_TOKEN], caplog.text, run.text, *map(str, stored))


# ---------------------------------------------------------------------------- rotation


def test_given_rows_under_key_a_when_rotated_to_b_then_b_alone_decrypts_them(
    engine: Engine, database_url: str, hubspot: HubSpotHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    with serve(engine, database_url, hubspot, keys=KEY_A) as client:
        make_workspace(client)
        created = ok(
            client.post(f"{API}/connectors", json=body_for(hubspot.connector(), hubspot)), 201
        )
    legacy_id = store_plain(engine, hubspot.connector())
    monkeypatch.setenv("OKR_DATABASE_URL", database_url)
    monkeypatch.setenv("OKR_SECRET_KEYS", f"{KEY_B},{KEY_A}")
    runner = CliRunner()
    first = runner.invoke(cli, ["secrets", "rotate"])
    assert first.exit_code == 0, first.output
    assert "1 connector(s) with the first key" in first.output
    assert "encrypted 1 stored in plain" in first.output
    again = runner.invoke(cli, ["secrets", "rotate"])
    assert again.exit_code == 0, again.output
    assert "encrypted 0 stored in plain" in again.output

    only_b = make_settings(database_url, secret_keys=KEY_B)
    only_a = make_settings(database_url, secret_keys=KEY_A)
    for connector_id in (created["id"], legacy_id):
        stored = stored_secrets(engine, connector_id)
        assert secret_store.unseal(stored, only_b) == {"access_token": GOOD_TOKEN}
        with pytest.raises(secret_store.UnreadableSecretsError):
            secret_store.unseal(stored, only_a)
    with serve(engine, database_url, hubspot, keys=KEY_B) as client:
        run = ok(sync_over_api(client, created["id"]))
    assert run["status"] == "succeeded", run


def test_given_a_row_no_key_decrypts_when_rotated_then_it_is_reported_and_kept(
    engine: Engine, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored = secret_store.seal(
        {"api_key": "k-0123456789"}, make_settings(database_url, secret_keys=KEY_A)
    )
    with Session(engine) as session:
        row = Connector(
            workspace_id=make_workspace_row(session, "acme"),
            name="lost",
            type="delighted",
            config={},
            secrets=stored,
            created_at=CREATED_AT,
        )
        session.add(row)
        session.commit()
        connector_id = row.id
    monkeypatch.setenv("OKR_DATABASE_URL", database_url)
    monkeypatch.setenv("OKR_SECRET_KEYS", KEY_B)
    result = CliRunner().invoke(cli, ["secrets", "rotate"])
    assert result.exit_code == 1
    assert f"connector(s) {connector_id} " in result.output
    assert stored_secrets(engine, connector_id) == stored


# ---------------------------------------------------------------------------- lost keys


def test_given_secrets_no_key_decrypts_then_the_connector_lists_and_its_sync_fails_saying_why(
    engine: Engine, database_url: str, hubspot: HubSpotHarness
) -> None:
    with serve(engine, database_url, hubspot, keys=KEY_A) as client:
        make_workspace(client)
        created = ok(
            client.post(f"{API}/connectors", json=body_for(hubspot.connector(), hubspot)), 201
        )
    path = f"{API}/connectors/{created['id']}"
    with serve(engine, database_url, hubspot, keys=KEY_B) as client:
        listed = ok(client.get(f"{API}/connectors"))["items"]
        assert [c["secrets_set"] for c in listed] == [["access_token"]]
        assert ok(client.get(path))["secrets_set"] == ["access_token"]
        run = ok(sync_over_api(client, created["id"]))
        assert run["status"] == "failed"
        assert run["error_class"] == "config"
        assert "OKR_SECRET_KEYS" in run["error_message"]
        check = ok(client.post(f"{path}/check"))
        assert check["ok"] is False
        assert "cannot be decrypted" in check["detail"]
        # Renaming or disabling needs no secrets; a config change cannot be checked
        # without them; giving the secrets again repairs the connector.
        assert ok(client.patch(path, json={"enabled": False}))["enabled"] is False
        assert_problem(client.patch(path, json={"config": created["config"]}), 422, "secrets")
        repaired = client.patch(
            path, json={"enabled": True, "secrets": {"access_token": GOOD_TOKEN}}
        )
        ok(repaired)
        assert ok(sync_over_api(client, created["id"]))["status"] == "succeeded"


# ---------------------------------------------------------------------------- keys


def test_given_no_key_on_sqlite_when_first_started_then_a_private_key_file_is_made_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path / 'okr-sync.db'}"
    settings = Settings(database_url=url, load_demo=False)
    caplog.set_level(logging.WARNING, logger=secret_store.__name__)
    first = secret_store.keyring(settings)
    key_file = tmp_path / "okr-sync.key"
    assert secret_store.key_file_for(url) == key_file
    assert [r for r in caplog.records if str(key_file) in r.getMessage()]
    if os.name == "posix":
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    token = first.encrypt(b"x")
    # A later start (a fresh process: nothing cached) reads the same key, silently.
    secret_store._keyring.cache_clear()
    caplog.clear()
    assert secret_store.keyring(settings).decrypt(token) == b"x"
    assert not caplog.records


def test_given_no_key_on_postgresql_when_starting_then_it_refuses_saying_how_to_fix_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = "postgresql://okr:pg-pass-w0rd@db.invalid/okr"
    with pytest.raises(secret_store.SecretKeyError, match="OKR_SECRET_KEYS"):
        secret_store.keyring(Settings(database_url=url))
    monkeypatch.setenv("OKR_DATABASE_URL", url)
    monkeypatch.delenv("OKR_SECRET_KEYS", raising=False)
    monkeypatch.delenv("OKR_SECRET_KEY", raising=False)
    result = CliRunner().invoke(cli, ["serve"])
    assert result.exit_code == 2
    assert "OKR_SECRET_KEYS" in result.output
    assert "pg-pass-w0rd" not in result.output


def test_given_okr_secret_key_when_settings_are_read_then_it_is_the_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OKR_SECRET_KEYS", raising=False)
    monkeypatch.setenv("OKR_SECRET_KEY", KEY_A)
    keys = Settings().secret_keys
    assert keys is not None
    assert keys.get_secret_value() == KEY_A
    assert KEY_A not in repr(Settings())


def test_given_a_malformed_key_when_settings_are_read_then_the_error_names_it_not_echoes_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OKR_SECRET_KEYS", f"{KEY_A}, not-a-key-but-a-secret")
    with pytest.raises(ValueError, match="key 2 of OKR_SECRET_KEYS") as raised:
        Settings()
    assert "not-a-key-but-a-secret" not in str(raised.value)


def test_new_key_command_prints_a_usable_key() -> None:
    result = CliRunner().invoke(cli, ["secrets", "new-key"])
    assert result.exit_code == 0
    Fernet(result.output.strip())


# ---------------------------------------------------------------------------- file modes


@POSIX
def test_given_a_new_sqlite_database_when_created_then_its_files_are_private(
    tmp_path: Path,
) -> None:
    path = tmp_path / "fresh.db"
    engine = db.make_engine(f"sqlite:///{path}")
    db.upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (x INTEGER)"))
    wal = path.with_name(path.name + "-wal")
    assert wal.exists()
    for made in (path, wal):
        assert stat.S_IMODE(made.stat().st_mode) == 0o600, made
    engine.dispose()


def test_given_a_full_crud_walk_when_every_answer_is_read_then_no_secret_or_token_is_in_it(
    engine: Engine, database_url: str, vendor: SourceHarness
) -> None:
    """Create, read, list, change, sync, audit and delete over the API: no answer but the
    token's own creation ever carries a secret value or a token, nor does the database."""
    good = vendor.connector()
    for kind in vendor.kinds:
        vendor.seed(kind, 3)
    answers: list[str] = []
    with serve(engine, database_url, vendor) as client:
        deployment_token = client.headers["Authorization"].removeprefix("Bearer ")
        make_workspace(client)
        created = ok(client.post(f"{API}/connectors", json=body_for(good, vendor)), 201)
        token = ok(client.post(f"{API}/tokens", json={"name": "wall", "role": "viewer"}), 201)
        cid = created["id"]
        calls = [
            ("GET", f"{API}/connectors"),
            ("GET", f"{API}/connectors/{cid}"),
            ("PATCH", f"{API}/connectors/{cid}", {"name": "renamed"}),
            ("POST", f"{API}/connectors/{cid}/check"),
            ("POST", f"{API}/connectors/{cid}/sync"),
            ("GET", f"{API}/connectors/{cid}/runs"),
            ("GET", f"{API}/tokens"),
            ("GET", f"{API}/audit"),
            ("GET", f"{API}/workspaces"),
            ("DELETE", f"{API}/tokens/{token['id']}"),
            ("DELETE", f"{API}/connectors/{cid}"),
            ("GET", f"{API}/audit"),
        ]
        for method, url, *body in calls:
            response = client.request(method, url, json=body[0] if body else None)
            assert response.status_code < 300, (method, url, response.text)
            answers.append(response.text + json.dumps(dict(response.headers)))
    at_rest = stored_bytes(database_url, engine)
    audit = next(a for a in reversed(answers) if '"entity"' in a)
    assert '"connector"' in audit
    for value in [*secret_values(good), token["token"], deployment_token]:
        assert all(value not in answer for answer in answers), value
        assert value.encode() not in at_rest, value


def test_given_a_cross_site_post_without_a_token_when_syncing_then_401_and_nothing_runs(
    engine: Engine, database_url: str, vendor: SourceHarness
) -> None:
    """The repro: a body-less POST from another site's page. With no cookie auth, a page
    cannot add the bearer token, so the request is refused before anything runs."""
    with serve(engine, database_url, vendor) as client:
        make_workspace(client)
        cid = ok(client.post(f"{API}/connectors", json=body_for(vendor.connector(), vendor)), 201)[
            "id"
        ]
        response = client.post(
            f"{API}/connectors/{cid}/sync",
            headers={"Authorization": "", "Origin": "https://evil.example"},
        )
        assert_problem(response, 401)
        assert ok(client.get(f"{API}/connectors/{cid}/runs"))["items"] == []
