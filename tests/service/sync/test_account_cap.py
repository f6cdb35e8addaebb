"""At most `OKR_SYNC_MAX_PER_ACCOUNT` syncs of one vendor account at once, across workers:
the connectors of an account over the cap stay due and are claimed once it frees up."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine, update
from sqlmodel import Session, select

from connectors.base import RecordKind, Runtime
from connectors.delighted.connector import DelightedConfig, DelightedConnector, DelightedSecrets
from connectors.hubspot.connector import HubSpotConfig, HubSpotConnector, HubSpotSecrets
from connectors.retry import RetryPolicy
from connectors.salesforce.connector import (
    SalesforceConfig,
    SalesforceConnector,
    SalesforceSecrets,
)
from service import observability
from service.settings import Settings
from service.sync import secrets as secret_store
from service.sync.engine import ACCOUNT_BUSY, SyncEngine
from service.sync.models import Connector, RunStatus
from service.sync.service import account_key
from service.workspaces.models import Workspace
from tests.conftest import make_settings
from tests.connectors.hubspot.harness import GOOD_TOKEN, HubSpotHarness, make_harness
from tests.factories import CREATED_AT
from tests.fakes.server import ALLOWED_HOSTS
from tests.service.sync.test_engine import assert_equals_source
from tests.service.test_cli import okr_sync

CONTACTS = 12


# ---------------------------------------------------------------------------- account keys


def test_given_vendor_configs_then_account_keys_group_by_account_and_hold_no_secret() -> None:
    token = "pat-na1-0b1e2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
    other = "pat-na1-99999999-8888-7777-6666-555555555555"

    def hubspot(access_token: str, **config: str) -> str | None:
        return HubSpotConnector.account_key(
            HubSpotConfig(**config), HubSpotSecrets(access_token=SecretStr(access_token))
        )

    assert hubspot(token) == hubspot(token, tier="professional"), "one token, one account"
    assert hubspot(token) != hubspot(other)
    assert hubspot(token) != hubspot(token, base_url="https://api-eu1.hubapi.com")
    # A portal id names the account whatever the token: two private apps of one portal.
    assert hubspot(token, portal_id="123") == hubspot(other, portal_id="123")
    assert hubspot(token, portal_id="123") == "hubspot:https://api.hubapi.com:portal:123"

    def salesforce(username: str, **config: str) -> str | None:
        return SalesforceConnector.account_key(
            SalesforceConfig(**config),
            SalesforceSecrets(
                client_id=SecretStr("app"),
                client_secret=SecretStr("s3cret"),
                username=SecretStr(username),
                password=SecretStr("pw"),
            ),
        )

    my_domain = "https://acme.my.salesforce.com"
    # One org's My Domain: its connectors share the org whoever logs in.
    assert salesforce("a@acme.com", login_url=my_domain) == f"salesforce:{my_domain}"
    assert salesforce("b@acme.com", instance_url=my_domain) == f"salesforce:{my_domain}"
    # A shared login host names no org: the integration user does (hashed).
    shared = salesforce("a@acme.com")
    assert shared is not None
    assert shared.startswith("salesforce:https://login.salesforce.com:")
    assert "acme" not in shared
    assert shared == salesforce("a@acme.com", instance_url="https://na1.salesforce.com")
    assert shared != salesforce("b@acme.com")

    def delighted(api_key: str) -> str | None:
        return DelightedConnector.account_key(DelightedConfig(), DelightedSecrets(api_key=api_key))

    assert delighted("key-one") == delighted("key-one")
    assert delighted("key-one") != delighted("key-two")
    for key in (hubspot(token), hubspot(other), delighted("key-one")):
        assert key is not None
        assert token not in key
        assert other not in key
        assert "key-one" not in key


def test_given_stored_connectors_then_the_service_derives_keys_from_sealed_secrets(
    database_url: str,
) -> None:
    settings = make_settings(database_url)
    sealed = secret_store.seal({"access_token": GOOD_TOKEN}, settings)
    config = {"base_url": "https://api.hubapi.com"}
    key = account_key(1, "hubspot", config, sealed, settings)
    assert key == account_key(2, "hubspot", config, {"access_token": GOOD_TOKEN}, settings)
    assert GOOD_TOKEN not in key
    # The demo reaches no account, and unreadable secrets none we can name: alone.
    assert account_key(3, "demo", {"seed": 1}, {}, settings) == "connector:3"
    elsewhere = make_settings(database_url, secret_keys=secret_store.new_key())
    unreadable = secret_store.seal({"access_token": GOOD_TOKEN}, elsewhere)
    assert account_key(4, "hubspot", config, unreadable, settings) == "connector:4"


def test_given_a_cap_of_zero_then_the_setting_is_refused_in_one_line(
    tmp_path: Path, database_url: str
) -> None:
    result = okr_sync(tmp_path, database_url, "worker", OKR_SYNC_MAX_PER_ACCOUNT="0")

    assert result.returncode == 2, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("okr-sync: invalid settings: OKR_SYNC_MAX_PER_ACCOUNT: "), line
    assert "greater than or equal to 1" in line


# ---------------------------------------------------------------------------- claims


@pytest.fixture
def accounts(tmp_path: Path) -> Iterator[tuple[HubSpotHarness, HubSpotHarness]]:
    """Two HubSpot accounts (two fakes: different API roots, as NA and EU accounts)."""
    with make_harness(tmp_path / "a") as a, make_harness(tmp_path / "b") as b:
        for harness in (a, b):
            harness.seed(RecordKind.contact, CONTACTS)
            harness.set_page_size(5)
        yield a, b


def store(
    engine: Engine, settings: Settings, base_url: str, names: list[str], due: datetime
) -> list[int]:
    """HubSpot connectors on the account at `base_url` (one token), all due at `due`."""
    with Session(engine) as session:
        ws = session.exec(select(Workspace).where(Workspace.slug == "acme")).first()
        if ws is None:
            ws = Workspace(slug="acme", name="Acme", created_at=CREATED_AT)
            session.add(ws)
            session.flush()
        assert ws.id is not None
        rows = [
            Connector(
                workspace_id=ws.id,
                name=name,
                type="hubspot",
                config={"base_url": base_url},
                secrets=secret_store.seal({"access_token": GOOD_TOKEN}, settings),
                kinds=["contact"],
                created_at=CREATED_AT,
                next_run_at=due,
            )
            for name in names
        ]
        session.add_all(rows)
        session.commit()
        return [r.id for r in rows if r.id is not None]


def worker(
    engine: Engine, settings: Settings, clock: Callable[[], datetime] | None = None
) -> SyncEngine:
    def runtime(_row: Connector) -> Runtime:
        return Runtime(
            retry=RetryPolicy(max_attempts=3, sleep=lambda _s: None),
            timeout_seconds=5,
            clock=clock,
            allowed_hosts=ALLOWED_HOSTS,
        )

    if clock is None:
        return SyncEngine(engine, settings)
    return SyncEngine(engine, settings, clock=clock, runtime_factory=runtime)


def deferred_count(connector_id: int) -> float:
    value = observability.PROCESS.get_sample_value(
        "okr_sync_deferred_total",
        {"connector": str(connector_id), "type": "hubspot", "reason": ACCOUNT_BUSY},
    )
    return value or 0.0


def test_given_two_connectors_of_one_account_when_claimed_then_one_waits_for_the_other(
    engine: Engine,
    database_url: str,
    accounts: tuple[HubSpotHarness, HubSpotHarness],
    caplog: pytest.LogCaptureFixture,
) -> None:
    a, b = accounts
    settings = make_settings(database_url)
    assert settings.sync_max_per_account == 1, "the default"
    now = max(a.now(), b.now())
    first, second = store(engine, settings, a.served.base_url, ["a 1", "a 2"], now)
    (other,) = store(engine, settings, b.served.base_url, ["b 1"], now)
    sync = worker(engine, settings, clock=lambda: max(a.now(), b.now()))
    before = deferred_count(second)

    with caplog.at_level(logging.INFO, logger="service.sync.engine"):
        # Different accounts are claimed together; the account's second connector waits.
        assert sorted(sync.claim(10)) == sorted([first, other])
        assert sync.claim(10) == [], "still busy: the second stays due, unclaimed"
    [line] = [r for r in caplog.records if getattr(r, "event", None) == "sync_deferred"]
    assert line.__dict__["reason"] == ACCOUNT_BUSY
    assert line.__dict__["connector_id"] == second
    assert line.__dict__["account"].startswith(f"hubspot:{a.served.base_url}:token:")
    assert GOOD_TOKEN not in caplog.text
    assert deferred_count(second) == before + 2, "every pass-over is counted"
    with Session(engine) as session:
        waiting = session.get(Connector, second)
        assert waiting is not None
        assert waiting.lease_owner is None
        assert waiting.next_run_at == now, "still due"

    done = sync.work(first)
    assert done is not None
    assert done.status == RunStatus.succeeded, done.error_message
    # The account is free again: the next claim takes the second connector.
    assert sync.claim(10) == [second]
    for connector_id in (second, other):
        run = sync.work(connector_id)
        assert run is not None
        assert run.status == RunStatus.succeeded, run.error_message
    for connector_id, harness in ((first, a), (second, a), (other, b)):
        assert_equals_source(engine, connector_id, harness, (RecordKind.contact,))


def test_given_a_cap_of_two_when_two_workers_claim_at_once_then_the_cap_holds(
    engine: Engine, database_url: str
) -> None:
    """Both workers read the account's count at the same moment unless claims are
    serialised (PostgreSQL: advisory lock; SQLite: write lock): then each would take two."""
    settings = make_settings(database_url, sync_max_per_account=2)
    names = [f"c{i}" for i in range(6)]
    ids = store(engine, settings, "https://api.hubapi.com", names, CREATED_AT)
    workers = [worker(engine, settings), worker(engine, settings)]
    table = Connector.__table__  # type: ignore[attr-defined]
    start = threading.Barrier(len(workers))
    claimed: list[list[int]] = [[] for _ in workers]
    errors: list[BaseException] = []

    def claim(i: int) -> None:
        try:
            start.wait()
            claimed[i] = workers[i].claim(10)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    for _ in range(15):
        threads = [threading.Thread(target=claim, args=(i,)) for i in range(len(workers))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not errors, errors
        taken = claimed[0] + claimed[1]
        assert len(taken) == 2, claimed
        assert len(set(taken)) == 2
        assert set(taken) <= set(ids)
        with Session(engine) as session:
            session.execute(update(table).values(lease_owner=None, lease_until=None))
            session.commit()


def test_given_a_busy_account_ahead_in_the_queue_then_a_claim_reaches_the_connectors_behind(
    engine: Engine, database_url: str
) -> None:
    """Candidates are read in batches (twice the free slots, at least 20): the ones passed
    over for their account do not hide a free account's connector queued behind them."""
    settings = make_settings(database_url)
    busy = store(
        engine, settings, "https://api.hubapi.com", [f"a{i}" for i in range(45)], CREATED_AT
    )
    (free,) = store(engine, settings, "https://api-eu1.hubapi.com", ["b"], CREATED_AT)
    sync = worker(engine, settings)
    assert sync.claim(2) == [busy[0], free]
    assert sync.claim(2) == []
