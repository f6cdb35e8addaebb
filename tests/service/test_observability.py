"""Logs and metrics: `/metrics` parsed by prometheus-client's own parser, the JSON log
lines of requests and sync runs, and secrets that never reach a log line."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine
from sqlmodel import Session

from connectors.errors import AuthError
from service.auth.models import Role
from service.demo import demo_connector_id, load_tartempion
from service.observability import configure_logging, redact
from service.sync.engine import SyncEngine
from tests.conftest import TEST_SECRET_KEY, FrozenClock, bearer, issue_token, make_settings
from tests.connectors.harness import SourceHarness
from tests.factories import API
from tests.harnesses import open_harness
from tests.service.sync.test_engine import make_engine_for, store_connector

DEMO = {"X-Workspace": "tartempion"}

FAMILIES = {
    "okr_http_request_duration_seconds",
    "okr_http_requests",
    "okr_sync_runs",
    "okr_sync_run_duration_seconds",
    "okr_sync_records",
    "okr_vendor_requests",
    "okr_vendor_retries",
    "okr_vendor_rate_limited",
    "okr_key_result_value",
    "okr_key_result_progress_ratio",
    "okr_key_result_expected_progress_ratio",
    "okr_key_result_status",
}


def _demo(engine: Engine, database_url: str, clock: FrozenClock) -> int:
    with Session(engine, expire_on_commit=False) as s:
        assert load_tartempion(s, clock.now) is not None
        s.commit()
        connector_id = demo_connector_id(s)
    assert connector_id is not None
    run = SyncEngine(engine, make_settings(database_url), clock=clock).run(connector_id)
    assert run.status == "succeeded"
    return connector_id


def _families(text: str) -> dict[str, Any]:
    return {family.name: family for family in text_string_to_metric_families(text)}


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """JSON logging into a buffer, the logging set-up restored afterwards."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    buffer = io.StringIO()
    import sys

    real, sys.stderr = sys.stderr, buffer
    try:
        configure_logging(make_settings("sqlite://", log_format="json"))
    finally:
        sys.stderr = real
    yield buffer
    root.handlers, level = saved
    root.setLevel(level)


def _events(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]


def test_given_the_demo_synced_then_metrics_parse_and_carry_every_family(
    client: TestClient, engine: Engine, database_url: str, clock: FrozenClock
) -> None:
    connector_id = _demo(engine, database_url, clock)
    tree = client.get(f"{API}/progress", headers=DEMO)
    assert tree.status_code == 200
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    families = _families(response.text)
    assert FAMILIES <= set(families), FAMILIES - set(families)

    runs = families["okr_sync_runs"].samples
    assert any(
        s.labels["connector"] == str(connector_id)
        and s.labels["outcome"] == "succeeded"
        and s.labels["workspace"] == "tartempion"
        and s.value >= 1
        for s in runs
        if s.name == "okr_sync_runs_total"
    )
    inserted = [
        s
        for s in families["okr_sync_records"].samples
        if s.name == "okr_sync_records_total"
        and s.labels["action"] == "inserted"
        and s.labels["connector"] == str(connector_id)
    ]
    assert {s.labels["kind"] for s in inserted} >= {"lead", "opportunity", "survey_response"}

    # The key result gauges say what the progress tree says.
    expected = {
        str(kr["key_result_id"]): kr
        for objective in tree.json()["objectives"]
        for kr in objective["key_results"]
    }
    values = {s.labels["key_result"]: s.value for s in families["okr_key_result_value"].samples}
    for kr_id, kr in expected.items():
        if kr["value"] is not None:
            assert values[kr_id] == pytest.approx(kr["value"])
    status = {
        s.labels["key_result"]: s.labels["status"]
        for s in families["okr_key_result_status"].samples
        if s.value == 1
    }
    assert status == {kr_id: kr["status"] for kr_id, kr in expected.items()}
    assert {s.labels["workspace"] for s in families["okr_key_result_value"].samples} == {
        "tartempion"
    }

    # Requests by route template, never by raw path.
    routes = {s.labels["route"] for s in families["okr_http_requests"].samples}
    assert "/api/v1/progress" in routes
    assert not any(route.endswith("/1/progress") for route in routes)


def test_given_a_workspace_token_or_none_then_metrics_are_refused(
    client: TestClient, engine: Engine, database_url: str, clock: FrozenClock
) -> None:
    _demo(engine, database_url, clock)
    workspace_admin = bearer(issue_token(engine, Role.admin, "tartempion", "ws"))
    refused = client.get("/metrics", headers=workspace_admin)
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"
    assert client.get("/metrics", headers={"Authorization": ""}).status_code == 401
    viewer = bearer(issue_token(engine, Role.viewer, None, "prometheus"))
    assert client.get("/metrics", headers=viewer).status_code == 200


def test_given_json_logs_then_requests_and_runs_log_one_line_each_with_their_fields(
    log_lines: io.StringIO,
    client: TestClient,
    engine: Engine,
    database_url: str,
    clock: FrozenClock,
) -> None:
    connector_id = _demo(engine, database_url, clock)
    assert client.get(f"{API}/objectives", headers=DEMO).status_code == 200
    assert client.get(f"{API}/key-results/999999", headers=DEMO).status_code == 404
    events = _events(log_lines)

    started = [e for e in events if e.get("event") == "sync_started"]
    finished = [e for e in events if e.get("event") == "sync_finished"]
    assert len(started) == len(finished) == 1
    assert started[0]["connector_id"] == connector_id
    assert set(started[0]["kinds"]) >= {"lead", "opportunity"}
    run = finished[0]
    assert run["level"] == "INFO"
    assert run["workspace"] == "tartempion"
    assert run["inserted"] > 0
    assert run["fetched"] >= run["inserted"]
    assert run["duration_seconds"] >= 0
    assert run["error_class"] is None

    requests = [e for e in events if e.get("event") == "request"]
    listed = next(e for e in requests if e["route"] == "/api/v1/objectives")
    assert listed["method"] == "GET"
    assert listed["status"] == 200
    assert listed["workspace"] == "tartempion"
    assert listed["latency_ms"] >= 0
    missing = next(e for e in requests if e["route"] == "/api/v1/key-results/{key_result_id}")
    assert missing["status"] == 404


@pytest.fixture
def salesforce(tmp_path: Path) -> Iterator[SourceHarness]:
    with open_harness("salesforce", tmp_path) as h:
        yield h


def test_given_a_failing_run_then_one_warning_line_names_the_error_class_and_hides_secrets(
    log_lines: io.StringIO, engine: Engine, database_url: str, salesforce: SourceHarness
) -> None:
    from service.sync.secrets import plain

    connector_id = store_connector(engine, salesforce)
    secret_values = [str(v) for v in plain(salesforce.connector().secrets).values() if v]

    def leak(_kind: str, _page: int) -> None:
        raise AuthError(f"login refused for {secret_values[0]} on {database_url}")

    for kind in salesforce.kinds:
        salesforce.seed(kind, 3)
    run = make_engine_for(engine, database_url, salesforce, after_commit=leak).run(connector_id)
    assert run.error_class == "auth"
    failed = [e for e in _events(log_lines) if e.get("event") == "sync_failed"]
    assert len(failed) == 1
    assert failed[0]["level"] == "WARNING"
    assert failed[0]["error_class"] == "auth"
    text = log_lines.getvalue()
    for secret in secret_values:
        assert secret not in text


def test_given_secrets_in_a_message_then_the_log_masks_them() -> None:
    line = redact(
        "token okr_abcdefghijklmnopqrstuvwxyz012345 key "
        f"{TEST_SECRET_KEY} db postgresql://okr:s3cret-pw@db.internal:5432/okr"
    )
    assert "abcdefghijklmnop" not in line
    assert TEST_SECRET_KEY not in line
    assert "s3cret-pw" not in line
    assert "postgresql://okr:***@db.internal:5432/okr" in line


def test_given_an_exception_quoting_secrets_when_logged_then_its_traceback_is_masked(
    log_lines: io.StringIO,
) -> None:
    try:
        raise ValueError(
            "connect postgresql://okr:s3cret-pw@db.internal/okr with okr_abcdefghijklmnopqrstuvwx"
        )
    except ValueError:
        logging.getLogger("okr_sync").exception("failed")
    (event,) = _events(log_lines)
    assert "ValueError" in event["exc_info"]
    assert "s3cret-pw" not in log_lines.getvalue()
    assert "abcdefghijklmnop" not in log_lines.getvalue()
