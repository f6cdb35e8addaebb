"""Progress pushed over server-sent events (`GET /api/v1/stream`).

One `Watcher` per (process, workspace) keeps what the workspace's stream shows: the
progress object of every key result of the current period (and of those a client named
with `key_result=`) as the bytes `GET /key-results/{id}/progress` serves, and the ETag of
the current period's tree. It reads the workspace's change counter
(`service.progress.versions`) every `OKR_PROGRESS_VERSION_CHECK_SECONDS`, at once after
this process's own commits, and rebuilds only when the counter moved or the time a build
said it holds for (a step of expected progress, a source turning stale, a new local day)
has passed. Builds run in the thread pool with a session of their own; between them a
stream holds no connection and no thread, only a queue.

Event ids are the workspace's counter, which every process reads from the same database
row: all the events of one rebuild share its id. A client resuming with `Last-Event-ID: N`
is sent, if this process's history saw version N, the current state of everything that
changed from version N on (events state a current value, so sending one again is
harmless); otherwise a full snapshot.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from fastapi import Request
from sqlalchemy import Engine
from sqlmodel import Session, col, select
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from service.admission import Admission
from service.clock import Clock
from service.errors import DomainError, NotFoundError
from service.http_cache import Representation, representation
from service.okr.models import KeyResult, Objective
from service.okr.service import CURRENT_PERIOD, find_period
from service.progress.polling import UNTAGGED, PollScope, progress_cache
from service.progress.service import (
    Horizon,
    key_result_progress,
    next_local_day,
    period_progress,
)
from service.progress.versions import on_commit, read_versions
from service.settings import Settings
from service.workspaces.models import Workspace

log = logging.getLogger(__name__)

MEDIA_TYPE = "text/event-stream"
#: Changes a watcher remembers for clients that resume (one per version it saw, and one
#: per time step that changed something).
HISTORY_CHANGES = 1024
#: Key results one stream may name with `key_result=`.
MAX_FILTERED = 100
#: The most a watcher waits between version checks, whatever the setting (0 means "on
#: every read" for polled reads; a watcher has no reads to wait for).
MIN_CHECK_SECONDS = 0.1
HEARTBEAT = b": ping\n\n"
_LAST_EVENT_ID = re.compile(r"[0-9]{1,18}")


class StreamsFullError(DomainError):
    """This process serves as many streams as it may (`OKR_STREAM_MAX_CLIENTS`)."""

    status = 503
    title = "Service unavailable"

    def __init__(self, detail: str, *, retry_after_seconds: int) -> None:
        super().__init__(detail)
        self.headers = {"Retry-After": str(retry_after_seconds)}


class WorkspaceGone(Exception):
    """The watched workspace was deleted."""


# ---------------------------------------------------------------------------- state


@dataclass(frozen=True, slots=True)
class Tree:
    """What a `tree` event says: the current period and its tree's ETag (all None when
    no period contains today)."""

    period_id: int | None
    period: str | None
    etag: str | None


@dataclass(frozen=True, slots=True)
class State:
    """What one build of a workspace showed."""

    version: int
    #: When time alone changes something shown (None: never).
    until: datetime | None
    #: Every key result watched: the current period's and those clients named.
    key_results: dict[int, Representation]
    #: Those of the current period.
    current: frozenset[int]
    tree: Tree


@dataclass(frozen=True, slots=True)
class Change:
    """What one rebuild changed, as the history keeps it."""

    version: int
    #: Key results whose tag changed, that appeared, left the current period or are gone.
    touched: frozenset[int] = frozenset()
    #: Key results that left the current period or are gone.
    left: frozenset[int] = frozenset()
    tree: bool = False
    #: The watcher's first build (nothing before it to compare with).
    first: bool = False

    @property
    def empty(self) -> bool:
        return not self.touched and not self.tree


def diff(old: State, new: State) -> Change:
    """What changed from `old` to `new`."""
    touched = {
        kr
        for kr, found in new.key_results.items()
        if (before := old.key_results.get(kr)) is None or before.etag != found.etag
    }
    gone = old.key_results.keys() - new.key_results.keys()
    left = (old.current - new.current) | gone
    touched |= gone | (old.current ^ new.current)
    return Change(new.version, frozenset(touched), frozenset(left), old.tree != new.tree)


def build_state(engine: Engine, workspace_id: int, named: frozenset[int], now: datetime) -> State:
    """The workspace's stream content now (runs in the thread pool)."""
    with Session(engine) as session:
        # The version first: data read after it is at least as new.
        version = read_versions(session, [workspace_id])[workspace_id]
        ws = session.get(Workspace, workspace_id)
        if ws is None:
            raise WorkspaceGone(workspace_id)
        horizon = Horizon()
        # `current` may name another period tomorrow.
        horizon.note(next_local_day(ws, now))
        tree = Tree(None, None, None)
        current: list[int] = []
        try:
            period = find_period(session, ws, CURRENT_PERIOD, now)
        except NotFoundError:
            period = None
        if period is not None:
            payload = period_progress(session, ws, period, now, None, horizon)
            tree = Tree(period.id, period.name, representation(payload, UNTAGGED).etag)
            current = [
                kr
                for kr in session.exec(
                    select(KeyResult.id)
                    .join(Objective, col(Objective.id) == KeyResult.objective_id)
                    .where(KeyResult.workspace_id == ws.id, Objective.period_id == period.id)
                )
                if kr is not None
            ]
        wanted = set(current) | named
        rows = []
        if wanted:
            rows = list(
                session.exec(
                    select(KeyResult)
                    .where(KeyResult.workspace_id == ws.id, col(KeyResult.id).in_(wanted))
                    .order_by(col(KeyResult.id))
                )
            )
        # As `GET /key-results/{id}/progress` builds them: the same bytes, the same tags.
        found = {
            p.key_result_id: representation(p, UNTAGGED)
            for p in key_result_progress(session, ws, rows, now, horizon)
        }
    return State(version, horizon.until, found, frozenset(current), tree)


# ---------------------------------------------------------------------------- events


def event(name: str, data: bytes, event_id: int) -> bytes:
    """One event in the wire format (`data` is one line of JSON)."""
    return b"event: %s\nid: %d\ndata: %s\n\n" % (name.encode(), event_id, data)


def parse_last_event_id(value: str | None) -> int | None:
    """The version a resuming client saw; None (a fresh start) for anything else."""
    if value is None or not _LAST_EVENT_ID.fullmatch(value.strip()):
        return None
    return int(value.strip())


class Subscriber:
    """One open stream: what it asked for, and the events waiting for it (bounded)."""

    def __init__(self, named: frozenset[int] | None, max_events: int) -> None:
        #: The key results it named (None: those of the current period, and the tree).
        self.named = named
        self.max_events = max_events
        self.pending: deque[bytes] = deque()
        #: Its queue overflowed: it is sent a snapshot instead of what it missed.
        self.resync = False
        self.closed = False
        self.wake = asyncio.Event()

    def wants(self, kr: int, state: State) -> bool:
        if kr not in state.key_results:
            return False
        return kr in self.named if self.named is not None else kr in state.current

    def push(self, events: list[bytes]) -> None:
        if not events or self.resync:
            return
        if len(self.pending) + len(events) > self.max_events:
            self.reset()
        else:
            self.pending.extend(events)
            self.wake.set()

    def reset(self) -> None:
        """Send a snapshot next, not what was queued."""
        self.pending.clear()
        self.resync = True
        self.wake.set()

    def close(self) -> None:
        self.closed = True
        self.wake.set()


def _events(
    sub: Subscriber, state: State, touched: Iterable[int], left: set[int], tree: bool
) -> list[bytes]:
    out = []
    for kr in sorted(touched):
        if sub.wants(kr, state):
            out.append(event("progress", state.key_results[kr].body, state.version))
        elif (kr in sub.named) if sub.named is not None else (kr in left):
            out.append(event("removed", orjson.dumps({"key_result_id": kr}), state.version))
    if tree and sub.named is None:
        out.append(tree_event(state))
    return out


def tree_event(state: State) -> bytes:
    data = {"period_id": state.tree.period_id, "period": state.tree.period, "etag": state.tree.etag}
    return event("tree", orjson.dumps(data), state.version)


def snapshot(sub: Subscriber, state: State) -> bytes:
    """Everything `sub` watches: its set of key results, each one's progress, the tree."""
    ids = sorted(kr for kr in state.key_results if sub.wants(kr, state))
    out = [event("snapshot", orjson.dumps({"key_results": ids}), state.version)]
    out += [event("progress", state.key_results[kr].body, state.version) for kr in ids]
    if sub.named is None:
        out.append(tree_event(state))
    return b"".join(out)


# ---------------------------------------------------------------------------- watching


class Watcher:
    """One workspace's stream content in this process, and its recent changes."""

    def __init__(self, hub: StreamHub, workspace_id: int) -> None:
        self.hub = hub
        self.workspace_id = workspace_id
        self.state: State | None = None
        self.history: deque[Change] = deque(maxlen=HISTORY_CHANGES)
        self.subscribers: set[Subscriber] = set()
        #: Key results clients named (beyond the current period's); kept while the
        #: watcher lives, so that one leaving does not read as a deletion.
        self.named: frozenset[int] = frozenset()
        self.wake = asyncio.Event()
        self.lock = asyncio.Lock()
        self.task: asyncio.Task[None] | None = None
        self._failing = False

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    async def subscribe(
        self, named: frozenset[int] | None, last_seen: int | None
    ) -> tuple[Subscriber, bytes]:
        """A new subscriber and what it is sent first: what it missed since `last_seen`
        when the history tells, else a snapshot."""
        async with self.lock:
            # Not watched since the last client left, or a client that comes from a
            # process which saw a newer version already: check the version first.
            check = not self.running or (
                last_seen is not None and self.state is not None and last_seen > self.state.version
            )
            # Nothing built yet, or key results not built so far: build.
            build = self.state is None
            if named is not None and not named <= self.named:
                self.named |= named
                build = True
            if build or check:
                await self._refresh(force=build)
            state = self.state
            assert state is not None
            if named is not None:
                missing = named - state.key_results.keys()
                if missing:
                    self.named -= missing
                    raise NotFoundError("key result", min(missing), field="key_result")
            sub = Subscriber(named, self.hub.settings.stream_client_queue_max_events)
            first = self._replay(sub, state, last_seen)
            if first is None:
                first = snapshot(sub, state)
            self.subscribers.add(sub)
        if not self.running:
            self.task = asyncio.create_task(self._run())
        return sub, first

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)
        if not self.subscribers:
            # The loop ends; state and history stay for clients that come back.
            self.wake.set()

    def _replay(self, sub: Subscriber, state: State, last_seen: int | None) -> bytes | None:
        if last_seen is None or last_seen > state.version:
            return None
        changes = list(self.history)
        start = None
        for i, change in enumerate(changes):
            if change.version == last_seen:
                # Only from the first change at that version: earlier ones may be gone.
                if i > 0 or change.first:
                    start = i
                break
            if change.version > last_seen:
                break
        if start is None:
            return None
        touched: set[int] = set()
        left: set[int] = set()
        tree = False
        for change in changes[start:]:
            touched |= change.touched
            left |= change.left
            tree = tree or change.tree
        return b"".join(_events(sub, state, touched, left, tree))

    async def _run(self) -> None:
        interval = max(self.hub.settings.progress_version_check_seconds, MIN_CHECK_SECONDS)
        try:
            while self.subscribers:
                try:
                    await asyncio.wait_for(self.wake.wait(), interval)
                except TimeoutError:
                    pass
                self.wake.clear()
                if not self.subscribers:
                    break
                async with self.lock:
                    await self._refresh(force=False)
        except WorkspaceGone:
            self.hub.forget(self)
            for sub in list(self.subscribers):
                sub.close()

    async def _refresh(self, *, force: bool) -> None:
        """Rebuild if the version moved, time passed `until`, or `force`; tell subscribers
        what changed. Call with the lock held."""
        now = self.hub.clock()
        state = self.state
        try:
            if (
                not force
                and state is not None
                and (state.until is None or now < state.until)
                and await self.hub.admission.run(self._version) == state.version
            ):
                return
            new = await self.hub.admission.run(
                build_state, self.hub.engine, self.workspace_id, self.named, now
            )
        except WorkspaceGone:
            raise
        except Exception:
            if force or state is None:
                raise
            # The database may be away for a while: keep the streams, try again.
            if not self._failing:
                log.exception("progress stream of workspace %d: refresh failed", self.workspace_id)
            self._failing = True
            return
        self._failing = False
        self._publish(new)

    def _version(self) -> int:
        with Session(self.hub.engine) as session:
            return read_versions(session, [self.workspace_id])[self.workspace_id]

    def _publish(self, new: State) -> None:
        old = self.state
        self.state = new
        if old is None or new.version < old.version:
            # A first build; or the workspace was deleted and its id taken again, so its
            # counter started over: nothing to compare with, no history to resume from.
            self.history.clear()
            self.history.append(Change(new.version, first=True))
            for sub in self.subscribers:
                sub.reset()
            return
        change = diff(old, new)
        if change.empty and new.version == old.version:
            return
        # Every version seen is remembered, even one that changed nothing shown: a client
        # that resumes from it is known to miss nothing before it.
        self.history.append(change)
        if change.empty:
            return
        left = set(change.left)
        for sub in list(self.subscribers):
            sub.push(_events(sub, new, change.touched, left, change.tree))


class StreamHub:
    """This process's event streams: one watcher per workspace, and the client count."""

    def __init__(
        self, engine: Engine, settings: Settings, clock: Clock, admission: Admission
    ) -> None:
        #: Builds and version checks take a database slot, as requests do.
        self.admission = admission
        self.engine = engine
        self.settings = settings
        self.clock = clock
        self.loop = asyncio.get_running_loop()
        self.watchers: dict[int, Watcher] = {}
        self.clients = 0
        self.closing = False
        on_commit(engine, self._written)

    def _written(self, workspace_ids: set[int]) -> None:
        # Called in the committing thread: hand over to the event loop.
        if self.loop.is_closed():
            return
        try:
            self.loop.call_soon_threadsafe(self._wake, workspace_ids)
        except RuntimeError:  # the loop closed meanwhile
            pass

    def _wake(self, workspace_ids: set[int]) -> None:
        for workspace_id in workspace_ids:
            watcher = self.watchers.get(workspace_id)
            if watcher is not None:
                watcher.wake.set()

    def end_all(self) -> None:
        """End every stream (the process is shutting down); refuse new ones."""
        self.closing = True
        for watcher in self.watchers.values():
            for sub in list(watcher.subscribers):
                sub.close()

    def forget(self, watcher: Watcher) -> None:
        if self.watchers.get(watcher.workspace_id) is watcher:
            del self.watchers[watcher.workspace_id]

    async def open(
        self,
        request: Request,
        scope: PollScope,
        token: str | None,
        named: list[int] | None,
        last_event_id: str | None,
    ) -> EventStream:
        """The stream of the workspace `scope` names (404 as polled reads), if this process
        may serve one more (503 otherwise)."""
        cache = progress_cache(request)
        ref = await cache.workspace(scope, self.clock())
        retry_after = max(1, self.settings.stream_retry_milliseconds // 1000)
        if self.closing:
            raise StreamsFullError(
                "this process is shutting down; connect again", retry_after_seconds=retry_after
            )
        if self.clients >= self.settings.stream_max_clients:
            raise StreamsFullError(
                f"this process serves {self.settings.stream_max_clients} streams already; "
                "try again later or another process",
                retry_after_seconds=retry_after,
            )
        self.clients += 1
        try:
            watcher = self.watchers.get(ref.id)
            if watcher is None:
                watcher = self.watchers[ref.id] = Watcher(self, ref.id)
            try:
                sub, first = await watcher.subscribe(
                    frozenset(named) if named else None, parse_last_event_id(last_event_id)
                )
            except WorkspaceGone:
                self.forget(watcher)
                raise NotFoundError("workspace", repr(ref.slug), field="X-Workspace") from None
        except BaseException:
            self.clients -= 1
            raise
        retry = b"retry: %d\n\n" % self.settings.stream_retry_milliseconds
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.clients -= 1
                watcher.unsubscribe(sub)

        body = self._pump(request, watcher, sub, retry + first, token, release)
        return EventStream(body, release)

    async def _pump(
        self,
        request: Request,
        watcher: Watcher,
        sub: Subscriber,
        first: bytes,
        token: str | None,
        release: Callable[[], None],
    ) -> AsyncIterator[bytes]:
        heartbeat = self.settings.stream_heartbeat_seconds
        cache = progress_cache(request)
        checked = self.clock()
        try:
            yield first
            while True:
                try:
                    await asyncio.wait_for(sub.wake.wait(), heartbeat)
                except TimeoutError:
                    chunk = HEARTBEAT
                else:
                    sub.wake.clear()
                    if sub.closed:
                        return
                    chunk = self._take(watcher, sub)
                now = self.clock()
                if (now - checked).total_seconds() >= self.settings.token_cache_seconds:
                    # A token revoked or expired meanwhile ends the stream (a reconnection
                    # is then a 401); from the token cache, mostly without a query.
                    checked = now
                    try:
                        await cache.principal(token, now)
                    except DomainError:
                        return
                if chunk:
                    yield chunk
        finally:
            release()

    @staticmethod
    def _take(watcher: Watcher, sub: Subscriber) -> bytes:
        if sub.resync:
            sub.resync = False
            sub.pending.clear()
            return snapshot(sub, watcher.state) if watcher.state is not None else b""
        chunk = b"".join(sub.pending)
        sub.pending.clear()
        return chunk


class EventStream(StreamingResponse):
    """A `text/event-stream` response that gives its stream's place back however it ends
    (even when it never started)."""

    media_type = MEDIA_TYPE

    def __init__(self, content: AsyncIterator[bytes], release: Callable[[], None]) -> None:
        super().__init__(
            content,
            headers={
                "Cache-Control": "no-cache",
                # nginx and alike: pass each event on at once.
                "X-Accel-Buffering": "no",
            },
        )
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


def stream_hub(request: Request) -> StreamHub:
    """The app's hub, for the running event loop (made on first use)."""
    state: Any = request.app.state
    hub: StreamHub | None = getattr(state, "stream_hub", None)
    if hub is None or hub.loop is not asyncio.get_running_loop():
        hub = StreamHub(state.engine, state.settings, state.clock, state.admission)
        state.stream_hub = hub
    return hub


def end_streams(app: Any) -> None:
    """End `app`'s event streams, from any thread (a signal handler, when the server stops):
    their clients reconnect, with `Last-Event-ID`, to a process that still serves."""
    hub: StreamHub | None = getattr(app.state, "stream_hub", None)
    if hub is not None and not hub.loop.is_closed():
        try:
            hub.loop.call_soon_threadsafe(hub.end_all)
        except RuntimeError:  # the loop closed meanwhile
            pass
