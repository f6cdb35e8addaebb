"""How requests share the database pool without ever waiting on each other in a cycle.

FastAPI runs each synchronous dependency and the endpoint in its own trip through the
thread pool, and a SQLAlchemy session keeps its connection between them. Under load the
threads can all be taken by requests waiting for a connection while every connection is
held by a request waiting for a thread: nothing moves until the pool times out (measured
before this: 60 clients, 0 answers for 15-30 s, then 500s).

A request that uses the database therefore takes a *slot* before its first query, in the
event loop, where waiting costs neither a thread nor a connection. There are fewer slots
than connections (`db_request_slots`), so an admitted request always finds a connection
at once, and its threads only wait for CPU. Requests beyond the slots wait in line in the
event loop; probes (`/healthz`, `/readyz`) and cached progress reads that need no query
never take one. A request that calls a vendor gives its slot back first
(`RequestDb.release`), so a silent vendor host cannot hold the database from others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Engine
from sqlmodel import Session

from service.settings import Settings

T = TypeVar("T")

#: Connections kept out of the request slots: the scheduler's syncs in this process (a
#: sync uses up to two at once, its page writer and its prefetch) and headroom.
RESERVED_CONNECTIONS = 4


def db_request_slots(settings: Settings) -> int:
    """Requests that may use the database at once in one process."""
    connections = settings.db_pool_size + settings.db_max_overflow
    return max(1, connections - RESERVED_CONNECTIONS)


class Admission:
    """The request slots of one process (created per app, used from its event loop)."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self._semaphore = asyncio.Semaphore(slots)
        self._loop: asyncio.AbstractEventLoop | None = None

    async def acquire(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self._semaphore.acquire()

    def release(self) -> None:
        """Give a slot back, from the event loop or from a worker thread."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._semaphore.release)
        else:
            self._semaphore.release()

    @property
    def in_use(self) -> int:
        """Slots in use (for tests and metrics)."""
        return self.slots - self._semaphore._value

    async def run(self, work: Callable[..., T], *args: Any) -> T:
        """`work(*args)` in the thread pool, holding a slot (it opens its own session)."""
        await self.acquire()
        try:
            return await run_in_threadpool(work, *args)
        finally:
            self.release()


class RequestDb:
    """A request's session and the slot it holds; `release` gives both back early."""

    def __init__(self, engine: Engine, admission: Admission) -> None:
        self.engine = engine
        self.session = Session(engine, expire_on_commit=False)
        self._admission = admission
        self._held = True

    def release(self) -> None:
        """Return the connection and the slot, e.g. before a vendor call. Idempotent;
        objects already loaded stay readable (detached)."""
        self.session.close()
        if self._held:
            self._held = False
            self._admission.release()

    async def aclose(self) -> None:
        """End of the request: the connection back to the pool (in a worker thread when
        the session still holds one: that is a rollback, a round trip), then the slot."""
        if self.session.in_transaction():
            await run_in_threadpool(self.session.close)
        self.release()
