"""The request body size limit (413, enforced while the body streams), the Host check, and
the per-token rate limiter (a sliding-window counter on the caller's clock)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from starlette.types import Message, Receive, Scope, Send

from service.limits import BodySizeLimit, RateLimiter
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


# ---------------------------------------------------------------------------- rate limiter

T0 = 1_800_000_000.0 - 1_800_000_000.0 % 60  # the start of a minute


def test_given_a_minute_when_the_limit_is_reached_then_the_next_hit_waits_for_the_next_minute() -> (
    None
):
    limiter = RateLimiter()
    assert [limiter.hit("a", 3, T0 + 10) for _ in range(3)] == [None, None, None]
    assert limiter.hit("a", 3, T0 + 10) == 50.0  # all three in this minute: at T0 + 60
    assert limiter.hit("b", 3, T0 + 10) is None  # per key


def test_given_a_full_minute_when_the_window_slides_then_hits_come_back_as_its_weight_falls() -> (
    None
):
    limiter = RateLimiter()
    for _ in range(4):
        assert limiter.hit("a", 4, T0 + 59) is None
    # At T0 + 75 the sliding minute still covers 3/4 of the previous one: 4 * 0.75 = 3.
    assert limiter.hit("a", 4, T0 + 75) is None  # 3 + 0 + 1 <= 4
    wait = limiter.hit("a", 4, T0 + 75)  # 3 + 1 + 1 > 4: until 4 * w + 1 + 1 <= 4, w = 1/2
    assert wait == 15.0
    assert limiter.hit("a", 4, T0 + 75 + wait) is None
    # Two minutes idle: nothing left of it.
    assert [limiter.hit("a", 4, T0 + 240) for _ in range(4)] == [None] * 4


def test_given_refused_hits_then_they_are_not_counted() -> None:
    limiter = RateLimiter()
    assert limiter.hit("a", 1, T0) is None
    for _ in range(10):
        assert limiter.hit("a", 1, T0 + 1) is not None
    assert limiter.hit("a", 1, T0 + 120) is None


def test_given_the_clock_going_back_then_the_later_minute_keeps_counting() -> None:
    limiter = RateLimiter()
    assert limiter.hit("a", 2, T0 + 130) is None
    assert limiter.hit("a", 2, T0 + 5) is None  # counted in the minute it already had
    assert limiter.hit("a", 2, T0 + 5) is not None


def test_given_many_keys_then_idle_ones_are_forgotten() -> None:
    limiter = RateLimiter()
    limiter.MAX_KEYS = 100
    for i in range(100):
        limiter.hit(f"old{i}", 5, T0)
    limiter.hit("new", 5, T0 + 180)
    assert len(limiter._counts) == 1  # noqa: SLF001 (the bound is the point)


def test_given_hits_from_threads_then_exactly_the_limit_passes() -> None:
    limiter = RateLimiter()
    passed: list[bool] = []

    def hammer() -> None:
        for _ in range(500):
            passed.append(limiter.hit("a", 1000, T0 + 30) is None)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert passed.count(True) == 1000
