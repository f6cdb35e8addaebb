"""`GET /api/v1/stream`: progress pushed as server-sent events, over a real server (uvicorn
on a loopback port, in a thread) read with httpx as a dashboard would: a snapshot first,
each change within a second, a resumed stream replays what it missed, a change written by
another process shows within the version check delay, heartbeats, the client cap, and the
same token and workspace rules as the polled reads."""

from __future__ import annotations

import json
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Engine
from sqlmodel import Session

from service import db
from service.auth.models import Role
from service.main import create_app
from service.okr import service as okr_service
from service.okr.models import CheckInCreate, KeyResult
from service.progress.stream import Subscriber, end_streams
from tests.conftest import (
    FROZEN_NOW,
    FrozenClock,
    bearer,
    issue_token,
    make_settings,
)
from tests.factories import (
    API,
    assert_problem,
    check_in,
    make_key_result,
    make_objective,
    make_period,
    make_workspace,
    ok,
)
from tests.fakes.server import serve
from tests.service.test_serve_e2e import served_process

STREAM = f"{API}/stream"
#: Short, so that readers wake often (they stop at the next line) and pings are seen.
HEARTBEAT_SECONDS = 0.2


@dataclass(frozen=True)
class Event:
    """An event (`name` set) or a comment (`name` None, the text in `data`)."""

    name: str | None
    data: str
    id: str | None = None

    def json(self) -> Any:
        return json.loads(self.data)


class Reader:
    """One stream, read in a thread; events are taken from a queue."""

    def __init__(
        self, base_url: str, headers: dict[str, str], params: dict[str, Any] | None = None
    ) -> None:
        self.events: queue.Queue[Event] = queue.Queue()
        self.status = 0
        self.headers: httpx.Headers = httpx.Headers()
        self.body = b""
        self.retry: int | None = None
        self.ended = threading.Event()
        #: The server ended the stream properly (not a broken connection).
        self.ended_cleanly = False
        self._ready = threading.Event()
        self._stop = False
        self._thread = threading.Thread(
            target=self._run, args=(base_url, headers, params), daemon=True
        )
        self._thread.start()
        assert self._ready.wait(10), "no response headers"

    def _run(self, base_url: str, headers: dict[str, str], params: dict[str, Any] | None) -> None:
        try:
            with (
                httpx.Client(base_url=base_url, timeout=10) as client,
                client.stream("GET", STREAM, headers=headers, params=params) as response,
            ):
                self.status, self.headers = response.status_code, response.headers
                if response.status_code != 200:
                    self.body = response.read()
                    self._ready.set()
                    return
                self._ready.set()
                fields: dict[str, str] = {}
                for line in response.iter_lines():
                    if self._stop:
                        return
                    if line.startswith(":"):
                        self.events.put(Event(None, line[1:].strip()))
                    elif line:
                        name, _, value = line.partition(":")
                        fields[name] = value.removeprefix(" ")
                    else:
                        if "retry" in fields:
                            self.retry = int(fields["retry"])
                        if "data" in fields:
                            self.events.put(
                                Event(fields.get("event", "message"), fields["data"], fields["id"])
                            )
                        fields = {}
                self.ended_cleanly = not self._stop
        except httpx.HTTPError:
            pass
        finally:
            self._ready.set()
            self.ended.set()

    def next(self, timeout: float = 3.0, *, comments: bool = False) -> Event:
        """The next event (comments skipped unless asked for)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                found = self.events.get(timeout=max(left, 0.001))
            except queue.Empty:
                raise AssertionError(f"no event within {timeout}s") from None
            if found.name is not None or comments:
                return found

    def until(self, done: Callable[[Event], bool], timeout: float = 3.0) -> list[Event]:
        """Events up to the first that is `done`, included."""
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            found = self.next(max(deadline - time.monotonic(), 0.001))
            seen.append(found)
            if done(found):
                return seen

    def snapshot(self) -> dict[str, Any]:
        """The snapshot a stream starts with: its set, the progress bodies, the tree."""
        first = self.next()
        assert first.name == "snapshot", first
        ids = first.json()["key_results"]
        progress = {}
        for _ in ids:
            found = self.next()
            assert found.name == "progress", found
            assert found.id == first.id
            progress[found.json()["key_result_id"]] = found
        assert sorted(progress) == ids
        return {"id": first.id, "ids": ids, "progress": progress}

    def quiet(self, seconds: float) -> list[Event]:
        """The events (not comments) that came within `seconds`."""
        deadline = time.monotonic() + seconds
        seen = []
        while (left := deadline - time.monotonic()) > 0:
            try:
                found = self.events.get(timeout=left)
            except queue.Empty:
                break
            if found.name is not None:
                seen.append(found)
        return seen

    def close(self) -> None:
        self._stop = True
        self._thread.join(10)
        assert not self._thread.is_alive()


@dataclass
class Server:
    app: FastAPI
    base: str
    http: httpx.Client
    clock: FrozenClock

    @contextmanager
    def stream(
        self, token: str | None = None, params: dict[str, Any] | None = None, **headers: str
    ) -> Iterator[Reader]:
        sent = dict(self.http.headers) if token is None else bearer(token)
        sent |= {k.replace("_", "-"): v for k, v in headers.items()}
        reader = Reader(self.base, sent, params)
        try:
            yield reader
        finally:
            reader.close()

    def clients(self) -> int:
        hub = getattr(self.app.state, "stream_hub", None)
        return 0 if hub is None else int(hub.clients)


@pytest.fixture
def start(database_url: str, engine: Engine, clock: FrozenClock) -> Iterator[Callable[..., Server]]:
    """Serve the app (settings overridable) on a loopback port; an admin client for it."""
    stack: list[Any] = []

    def started(**overrides: Any) -> Server:
        settings = make_settings(
            database_url,
            allowed_hosts=["127.0.0.1"],
            stream_heartbeat_seconds=HEARTBEAT_SECONDS,
            **overrides,
        )
        app = create_app(settings, engine, clock=clock)
        served = serve(app)
        base = served.__enter__().base_url
        http = httpx.Client(base_url=base, timeout=10, headers=bearer(issue_token(engine)))
        stack.append((served, http))
        return Server(app, base, http, clock)

    yield started
    for served, http in reversed(stack):
        http.close()
        served.__exit__(None, None, None)


@pytest.fixture
def server(start: Callable[..., Server]) -> Server:
    return start()


def _setup(http: httpx.Client, slug: str = "acme") -> dict[str, Any]:
    """`slug`'s 2026 (current at the frozen clock): two key results, one checked in; and a
    key result of 2025."""
    if slug != "acme":
        make_workspace(http, slug)
    else:
        make_workspace(http)
    ws = slug if slug != "acme" else None
    year = make_period(http, ws=ws)
    objective = make_objective(http, year["id"], ws=ws)
    a = make_key_result(http, objective["id"], "a", ws=ws)
    b = make_key_result(http, objective["id"], "b", ws=ws)
    check_in(http, a["id"], 40, ws=ws)
    last = make_period(http, "2025", "2025-01-01", "2026-01-01", ws=ws)
    old = make_key_result(http, make_objective(http, last["id"], "Old", ws=ws)["id"], ws=ws)
    return {"a": a["id"], "b": b["id"], "old": old["id"], "year": year, "objective": objective}


def _get(http: httpx.Client, path: str, **params: Any) -> httpx.Response:
    response = http.get(f"{API}{path}", params=params)
    assert response.status_code == 200, response.text
    return response


# ---------------------------------------------------------------------------- content


def test_given_a_stream_then_it_starts_with_a_snapshot_of_exactly_what_polling_serves(
    server: Server,
) -> None:
    made = _setup(server.http)
    with server.stream() as reader:
        assert reader.headers["content-type"].startswith("text/event-stream")
        assert reader.headers["cache-control"] == "no-cache"
        assert reader.headers["x-accel-buffering"] == "no"
        snap = reader.snapshot()
        assert reader.retry == 3000
        # The current period's key results, not 2025's.
        assert snap["ids"] == [made["a"], made["b"]]
        for kr, found in snap["progress"].items():
            polled = _get(server.http, f"/key-results/{kr}/progress")
            assert found.data.encode() == polled.content
        tree = reader.next()
        assert tree.name == "tree"
        assert tree.id == snap["id"]
        polled_tree = _get(server.http, "/progress")
        assert tree.json() == {
            "period_id": made["year"]["id"],
            "period": "2026",
            "etag": polled_tree.headers["etag"],
        }
        assert _get(server.http, "/progress", period="2026").headers["etag"] == tree.json()["etag"]
        # Ids are the workspace's change counter.
        assert int(snap["id"]) > 0


def test_given_a_stream_when_a_check_in_is_made_then_its_progress_arrives_within_a_second(
    server: Server,
) -> None:
    made = _setup(server.http)
    with server.stream() as reader:
        snap = reader.snapshot()
        reader.next()  # the tree
        check_in(server.http, made["a"], 55)
        started = time.monotonic()
        changed = reader.next(timeout=1.0)
        assert time.monotonic() - started < 1.0
        assert changed.name == "progress"
        assert changed.json()["key_result_id"] == made["a"]
        assert changed.json()["value"] == 55
        assert int(changed.id or 0) > int(snap["id"])
        polled = _get(server.http, f"/key-results/{made['a']}/progress")
        assert changed.data.encode() == polled.content
        tree = reader.next(timeout=1.0)
        assert tree.name == "tree"
        assert tree.id == changed.id
        assert tree.json()["etag"] == _get(server.http, "/progress").headers["etag"]
        # b did not change: nothing about it.
        assert reader.quiet(0.5) == []


def test_given_a_key_result_deleted_or_added_then_the_stream_says_so(server: Server) -> None:
    made = _setup(server.http)
    with server.stream() as reader:
        reader.snapshot()
        reader.next()
        assert server.http.delete(f"{API}/key-results/{made['b']}").status_code == 204
        removed, tree = reader.next(1.0), reader.next(1.0)
        assert (removed.name, removed.json()) == ("removed", {"key_result_id": made["b"]})
        assert tree.name == "tree"
        created = make_key_result(server.http, made["objective"]["id"], "c")
        added = reader.next(1.0)
        assert (added.name, added.json()["key_result_id"]) == ("progress", created["id"])
        assert reader.next(1.0).name == "tree"


def test_given_time_passing_a_step_of_expected_progress_then_the_stream_shows_it(
    server: Server,
) -> None:
    """No write, so the same id: time alone moved what a poll would now answer."""
    made = _setup(server.http)
    with server.stream() as reader:
        snap = reader.snapshot()
        reader.next()
        assert snap["progress"][made["a"]].json()["expected_progress"] == 0.5
        server.clock.now += timedelta(hours=9)  # a step of a year is 8.76 h
        stepped = reader.until(lambda e: e.name == "tree", timeout=2.5)
        assert [e.name for e in stepped] == ["progress", "progress", "tree"]
        assert {e.id for e in stepped} == {snap["id"]}
        for found in stepped[:2]:
            assert found.json()["expected_progress"] == 0.501
            kr = found.json()["key_result_id"]
            assert found.data.encode() == _get(server.http, f"/key-results/{kr}/progress").content


def test_given_named_key_results_then_only_theirs_come_of_any_period_and_no_tree(
    server: Server,
) -> None:
    made = _setup(server.http)
    params = {"key_result": [made["b"], made["old"]]}
    with server.stream(params=params) as reader:
        snap = reader.snapshot()
        assert snap["ids"] == sorted([made["b"], made["old"]])
        check_in(server.http, made["a"], 60)  # not named
        check_in(server.http, made["old"], 7)
        changed = reader.next(1.0)
        assert (changed.name, changed.json()["key_result_id"]) == ("progress", made["old"])
        assert reader.quiet(0.5) == []


# ---------------------------------------------------------------------------- resuming


def test_given_a_client_that_reconnects_with_last_event_id_then_it_gets_what_it_missed(
    server: Server,
) -> None:
    made = _setup(server.http)
    with server.stream() as reader:
        snap = reader.snapshot()
        last = reader.next().id
    assert last == snap["id"]
    check_in(server.http, made["b"], 30)
    with server.stream(last_event_id=str(last)) as reader:
        missed = reader.next()
        # Not a snapshot: only what changed, with the new id.
        assert missed.name == "progress"
        assert missed.json()["key_result_id"] == made["b"]
        assert missed.json()["value"] == 30
        assert int(missed.id or 0) > int(last or 0)
        tree = reader.next()
        assert (tree.name, tree.id) == ("tree", missed.id)
        assert reader.quiet(0.3) == []
        # ... and it goes on with the changes that follow.
        check_in(server.http, made["a"], 41)
        assert reader.next(1.0).json()["value"] == 41
        latest = reader.next(1.0)
    # Up to date: the change of that id is sent again (events state current values, so
    # that is harmless, and covers a process that built that version a moment later),
    # nothing older.
    with server.stream(last_event_id=latest.id or "") as reader:
        again = reader.quiet(0.5)
        assert [(e.name, e.id) for e in again] == [("progress", latest.id), ("tree", latest.id)]
        assert again[0].json()["key_result_id"] == made["a"]


def test_given_a_last_event_id_this_process_never_saw_then_a_snapshot(
    server: Server, start: Callable[..., Server]
) -> None:
    made = _setup(server.http)
    with server.stream() as reader:
        old = reader.snapshot()["id"]
    check_in(server.http, made["a"], 42)
    # Another process, started since: the id means the same there, but it has no history
    # that far back.
    other = start()
    with other.stream(last_event_id=old) as reader:
        snap = reader.snapshot()
        assert snap["ids"] == [made["a"], made["b"]]
        assert snap["progress"][made["a"]].json()["value"] == 42


@pytest.mark.parametrize(
    "last_event_id",
    ["garbage", "-1", "1.5", "1e3", "", "12 13", "99999999999999999999999", "999999", "7x"],
)
def test_given_a_malformed_or_future_last_event_id_then_a_fresh_stream(
    server: Server, last_event_id: str
) -> None:
    made = _setup(server.http)
    with server.stream(last_event_id=last_event_id) as reader:
        assert reader.status == 200
        assert reader.snapshot()["ids"] == [made["a"], made["b"]]


@pytest.mark.parametrize("if_none_match", ["garbage", '"unterminated', "W/", "*", '"x"'])
def test_given_an_if_none_match_then_it_is_ignored(server: Server, if_none_match: str) -> None:
    made = _setup(server.http)
    with server.stream(if_none_match=if_none_match) as reader:
        assert reader.status == 200
        assert reader.snapshot()["ids"] == [made["a"], made["b"]]


# ---------------------------------------------------------------------------- processes


def test_given_a_change_written_by_another_process_then_the_stream_shows_it_within_two_seconds(
    server: Server, database_url: str
) -> None:
    made = _setup(server.http)
    other = db.make_engine(database_url)
    try:
        with server.stream() as reader:
            reader.snapshot()
            reader.next()
            # Through the service layer on an engine of its own: no commit hook of the
            # server's fires; only the version counter tells.
            with Session(other) as session:
                kr = session.get(KeyResult, made["a"])
                assert kr is not None
                okr_service.check_in(session, kr, CheckInCreate(value=77), FROZEN_NOW)
                session.commit()
            started = time.monotonic()
            changed = reader.next(timeout=2.5)
            assert time.monotonic() - started < 2.0
            assert (changed.name, changed.json()["value"]) == ("progress", 77)
    finally:
        other.dispose()


def test_given_two_servers_then_their_event_ids_agree(
    server: Server, start: Callable[..., Server]
) -> None:
    made = _setup(server.http)
    other = start()
    with server.stream() as one, other.stream() as two:
        assert one.snapshot()["id"] == two.snapshot()["id"]
        one.next(), two.next()
        check_in(server.http, made["a"], 50)
        first, second = one.next(1.0), two.next(2.5)
        assert (first.id, first.data) == (second.id, second.data)


# ---------------------------------------------------------------------------- keeping alive


def test_given_an_idle_stream_then_pings_arrive(server: Server) -> None:
    _setup(server.http)
    with server.stream() as reader:
        reader.snapshot()
        reader.next()
        started = time.monotonic()
        ping = reader.next(timeout=2.0, comments=True)
        assert ping == Event(None, "ping")
        assert time.monotonic() - started < 1.0


def test_given_the_client_cap_then_one_more_is_a_503_until_one_leaves(
    start: Callable[..., Server],
) -> None:
    server = start(stream_max_clients=1)
    _setup(server.http)
    with server.stream() as reader:
        reader.snapshot()
        with server.stream() as refused:
            assert refused.status == 503
            assert refused.headers["content-type"] == "application/problem+json"
            assert int(refused.headers["retry-after"]) >= 1
            assert json.loads(refused.body)["status"] == 503
        assert server.clients() == 1
    # The closed stream gave its place back, and nothing watches the workspace any more.
    deadline = time.monotonic() + 3
    hub = server.app.state.stream_hub
    while (server.clients() or any(w.running for w in hub.watchers.values())) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.05)
    assert server.clients() == 0
    assert not any(w.running for w in hub.watchers.values())
    with server.stream() as again:
        assert again.status == 200


def test_given_a_revoked_token_then_its_stream_ends(server: Server) -> None:
    _setup(server.http)
    created = ok(
        server.http.post(
            f"{API}/tokens",
            json={"name": "wall", "role": "viewer"},
            headers={"X-Workspace": "acme"},
        ),
        201,
    )
    with server.stream(created["token"]) as reader:
        reader.snapshot()
        deleted = server.http.delete(
            f"{API}/tokens/{created['id']}", headers={"X-Workspace": "acme"}
        )
        assert deleted.status_code in (200, 204)
        # Checked again once the token cache delay has passed (the injected clock).
        server.clock.now += timedelta(seconds=5)
        assert reader.ended.wait(3)
    with server.stream(created["token"]) as again:
        assert again.status == 401


def test_given_a_deleted_workspace_then_its_streams_end(server: Server) -> None:
    _setup(server.http)
    with server.stream(X_Workspace="acme") as reader:
        reader.snapshot()
        assert server.http.delete(f"{API}/workspaces/acme").status_code == 204
        assert reader.ended.wait(3)


def test_given_a_server_that_stops_then_its_streams_end_and_new_ones_are_refused(
    server: Server,
) -> None:
    _setup(server.http)
    with server.stream() as reader:
        reader.snapshot()
        # What `okr-sync serve` does on SIGINT / SIGTERM (from the signal handler).
        end_streams(server.app)
        assert reader.ended.wait(3)
        assert reader.ended_cleanly
    with server.stream() as refused:
        assert refused.status == 503


def test_given_okr_sync_serve_when_it_stops_then_its_streams_end_and_it_exits_at_once(
    tmp_path: Path,
) -> None:
    settings = {
        # Far longer than the test waits: exiting in time means the streams were ended,
        # not cut when the grace period ran out.
        "OKR_SHUTDOWN_GRACE_SECONDS": "60",
        "OKR_STREAM_HEARTBEAT_SECONDS": str(HEARTBEAT_SECONDS),
    }
    database = f"sqlite:///{tmp_path / 'okr-sync.db'}"
    with served_process(tmp_path, database, settings=settings) as served:
        assert served.token is not None
        reader = Reader(served.base, bearer(served.token) | {"X-Workspace": "tartempion"})
        try:
            # The demo's key results (none if the wall clock crossed into a new year
            # since the demo was loaded for the year it started in).
            reader.snapshot()
            assert reader.next().name == "tree"
            served.process.send_signal(signal.SIGINT)
            assert reader.ended.wait(10)
            assert reader.ended_cleanly
        finally:
            if served.process.poll() is None and not reader.ended.is_set():
                served.process.kill()
            reader.close()
        assert served.process.wait(timeout=20) == 0
        assert "Exception in ASGI application" not in served.log.read_text()


def test_given_a_slow_client_when_its_queue_overflows_then_it_is_sent_a_snapshot_instead() -> None:
    sub = Subscriber(None, max_events=3)
    sub.push([b"1", b"2"])
    assert (list(sub.pending), sub.resync) == ([b"1", b"2"], False)
    sub.push([b"3", b"4"])
    assert (list(sub.pending), sub.resync) == ([], True)
    sub.push([b"5"])  # a snapshot is due: nothing else is kept
    assert (list(sub.pending), sub.resync) == ([], True)
    assert sub.wake.is_set()


# ---------------------------------------------------------------------------- who sees what


def test_given_no_token_or_a_bad_one_then_401(server: Server) -> None:
    _setup(server.http)
    for headers in ({}, {"Authorization": "Bearer okr_nope"}):
        response = httpx.get(f"{server.base}{STREAM}", headers=headers, timeout=10)
        assert_problem(response, 401)


def test_given_a_viewer_token_of_the_workspace_then_it_streams(
    server: Server, engine: Engine
) -> None:
    made = _setup(server.http)
    with server.stream(issue_token(engine, Role.viewer, "acme")) as reader:
        assert reader.snapshot()["ids"] == [made["a"], made["b"]]


def test_given_another_workspace_then_its_key_results_are_never_streamed(
    server: Server, engine: Engine
) -> None:
    mine = _setup(server.http)
    theirs = _setup(server.http, "rival")
    token = issue_token(engine, Role.viewer, "acme")
    with server.stream(token) as reader:
        assert reader.snapshot()["ids"] == [mine["a"], mine["b"]]
        reader.next()
        check_in(server.http, theirs["a"], 99, ws="rival")
        assert reader.quiet(0.5) == []
    with server.stream(token, params={"key_result": theirs["a"]}) as refused:
        assert refused.status == 404
        assert json.loads(refused.body)["field"] == "key_result"
    with server.stream(token, X_Workspace="rival") as refused:
        assert refused.status == 404
        assert json.loads(refused.body)["field"] == "X-Workspace"
    # A deployment token picks the workspace with X-Workspace.
    with server.stream(X_Workspace="rival") as reader:
        assert reader.snapshot()["ids"] == [theirs["a"], theirs["b"]]


@pytest.mark.parametrize("value", ["0", "x", str(2**31)])
def test_given_an_invalid_key_result_parameter_then_a_422_naming_it(
    server: Server, value: str
) -> None:
    _setup(server.http)
    response = server.http.get(STREAM, params={"key_result": ["1", value]})
    assert_problem(response, 422, "key_result")
