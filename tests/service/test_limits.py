"""The request body size limit (413, enforced while the body streams) and the Host check."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from starlette.types import Message, Receive, Scope, Send

from service.limits import BodySizeLimit
from service.main import create_app
from service.settings import Settings
from tests.conftest import TEST_SECRET_KEY, FrozenClock, bearer, issue_token, make_settings
from tests.factories import API, assert_problem, list_all, ok

LIMIT = 10_000
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def small(database_url: str, engine: Engine, clock: FrozenClock) -> Iterator[TestClient]:
    app = create_app(make_settings(database_url, max_body_bytes=LIMIT), engine, clock=clock)
    with TestClient(app, raise_server_exceptions=False) as client:
        client.headers.update(bearer(issue_token(engine)))
        yield client


def workspace_body(size: int) -> bytes:
    """A valid workspace creation, padded with spaces to `size` bytes."""
    body = json.dumps({"slug": "acme", "name": "Acme"}).encode()
    return body + b" " * (size - len(body))


def test_given_a_body_at_the_limit_when_sent_then_it_is_read(small: TestClient) -> None:
    ok(small.post(f"{API}/workspaces", content=workspace_body(LIMIT), headers=JSON), 201)


def test_given_a_declared_length_over_the_limit_when_sent_then_it_is_a_413_and_not_read(
    small: TestClient,
) -> None:
    response = small.post(f"{API}/workspaces", content=workspace_body(LIMIT + 1), headers=JSON)
    assert "bytes" in assert_problem(response, 413)["detail"]
    assert list_all(small, "workspaces") == []


def test_given_a_chunked_body_over_the_limit_when_streamed_then_it_is_a_413(
    small: TestClient,
) -> None:
    body = workspace_body(3 * LIMIT)

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 1000):
            yield body[start : start + 1000]

    response = small.post(f"{API}/workspaces", content=chunks(), headers=JSON)
    assert "content-length" not in response.request.headers
    assert_problem(response, 413)
    assert list_all(small, "workspaces") == []


def test_given_an_endless_chunked_body_when_read_then_reading_stops_past_the_limit() -> None:
    received: list[int] = []
    sent: list[Message] = []

    async def reader(scope: Scope, receive: Receive, send: Send) -> None:
        while (await receive()).get("more_body"):
            pass  # an app that reads everything, as JSON parsing does

    async def endless() -> Message:
        received.append(1000)
        return {"type": "http.request", "body": b"x" * 1000, "more_body": True}

    async def send(message: Message) -> None:
        sent.append(message)

    scope: dict[str, Any] = {"type": "http", "method": "POST", "path": "/", "headers": []}
    asyncio.run(BodySizeLimit(reader, max_body_bytes=LIMIT)(scope, endless, send))
    assert sum(received) == LIMIT + 1000  # the chunk that crossed the limit, and no more
    assert sent[0]["status"] == 413
    assert json.loads(sent[1]["body"])["status"] == 413


def test_given_the_default_settings_when_read_then_bodies_stop_at_a_megabyte() -> None:
    assert Settings(_env_file=None).max_body_bytes == 1_000_000  # type: ignore[call-arg]


# ---------------------------------------------------------------------------- Host


@pytest.mark.parametrize(
    ("allowed", "host", "status"),
    [
        (None, "localhost", 200),
        (None, "127.0.0.1:8000", 200),
        (None, "[::1]:8000", 200),
        (None, "evil.example", 400),
        (None, "localhost.evil.example", 400),
        ("okr.example.com", "okr.example.com", 200),
        ("okr.example.com", "localhost", 400),
        ("*.example.com, okr.internal", "api.example.com", 200),
        ("*.example.com, okr.internal", "okr.internal:8000", 200),
        ("*.example.com, okr.internal", "example.org", 400),
        ("*", "anything.example", 200),
    ],
)
def test_given_allowed_hosts_when_a_request_names_a_host_then_only_those_are_served(
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
    engine: Engine,
    allowed: str | None,
    host: str,
    status: int,
) -> None:
    if allowed is None:
        monkeypatch.delenv("OKR_ALLOWED_HOSTS", raising=False)
    else:
        monkeypatch.setenv("OKR_ALLOWED_HOSTS", allowed)
    settings = Settings(
        database_url=database_url,
        load_demo=False,
        role="api",
        migrate_on_start=False,
        secret_keys=TEST_SECRET_KEY,
    )
    app = create_app(settings, engine)
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/healthz", headers={"Host": host})
    assert response.status_code == status, response.text


def test_given_a_malformed_wildcard_when_settings_are_read_then_the_setting_is_named() -> None:
    with pytest.raises(ValueError, match="allowed_hosts"):
        Settings(allowed_hosts=["api.*.example.com"])
