"""Vendor accounts' request budgets shared by every process, in the database.

`connectors.governor.Governor` keeps an account under its rate limit within one process.
Two worker processes syncing connectors of one HubSpot portal would each use the whole
limit; through `DatabaseBudget` they lease cells of one schedule per (account, lane)
instead (the scheme is described in `connectors.governor`).

Each (account, lane) is one `rate_budget` row: where the next free cell starts and until
when a 429 paused the lane. A reservation is one `INSERT ... ON CONFLICT DO UPDATE ...
RETURNING` statement, atomic on both databases (PostgreSQL locks the row it updates and
re-reads it; SQLite's write lock serialises writers), on a connection checked out for
that statement and committed at once: never held across a vendor call, and at most one
at a time per reserving thread, which the pool's reserved headroom covers
(`service.admission.RESERVED_CONNECTIONS`).

Times are the database's clock, not the service's injected one: every process must read
the same clock (hosts' clocks differ; PostgreSQL's is one), the vendor's windows run in
real time whatever a test freezes, and the answers are durations, so no process mixes
the two clocks. Within one statement the clock reads the same everywhere
(`statement_timestamp()`; SQLite's `'now'` is fixed per statement step).
"""

from __future__ import annotations

import threading
import time
import weakref
from dataclasses import dataclass

from sqlalchemy import Engine, text

from connectors.governor import Grant

#: Rows whose schedule and pause ended this long ago are deleted (an account no
#: process synced for a day); checked at most this often by each process.
PURGE_AFTER_SECONDS = 86_400.0
PURGE_EVERY_SECONDS = 3_600.0

_NOW = {
    # statement_timestamp() is fixed for the statement (clock_timestamp() is not).
    "postgresql": "CAST(EXTRACT(EPOCH FROM statement_timestamp()) AS DOUBLE PRECISION)",
    "sqlite": "((julianday('now') - 2440587.5) * 86400.0)",
}
_GREATEST = {"postgresql": "GREATEST", "sqlite": "max"}


@dataclass(frozen=True)
class Lease:
    """A reservation's outcome in the database's clock (seconds since the epoch)."""

    #: Where the cells granted start; None: none granted.
    start: float | None
    now: float
    next_free: float
    paused_until: float


class DatabaseBudget:
    """`connectors.governor.SharedBudget` on the `rate_budget` table (thread-safe)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        dialect = engine.dialect.name
        if dialect not in _NOW:
            raise ValueError(f"no shared rate budget on {dialect}")
        now, greatest = _NOW[dialect], _GREATEST[dialect]
        start = f"{greatest}(rate_budget.next_free, {now})"
        grant = f"rate_budget.paused_until <= {now} AND {start} <= {now} + :horizon"  # noqa: S608
        self._reserve = text(
            "INSERT INTO rate_budget (account, lane, next_free, paused_until, granted_from) "
            f"VALUES (:account, :lane, {now} + :need, 0, {now}) "
            "ON CONFLICT (account, lane) DO UPDATE SET "
            f"next_free = CASE WHEN {grant} THEN {start} + :need "
            "ELSE rate_budget.next_free END, "
            f"granted_from = CASE WHEN {grant} THEN {start} ELSE NULL END "
            f"RETURNING next_free, paused_until, granted_from, {now}"
        )
        self._pause = text(
            "INSERT INTO rate_budget (account, lane, next_free, paused_until) "
            f"VALUES (:account, :lane, {now}, {now} + :seconds) "
            "ON CONFLICT (account, lane) DO UPDATE SET "
            f"paused_until = {greatest}(rate_budget.paused_until, {now} + :seconds)"
        )
        self._purge = text(
            f"DELETE FROM rate_budget WHERE next_free < {now} - :age "  # noqa: S608
            f"AND paused_until < {now} - :age"
        )
        self._purged_at: float | None = None
        self._lock = threading.Lock()

    def reserve(
        self,
        account: str,
        lane: str,
        *,
        slots: int,
        spacing_seconds: float,
        horizon_seconds: float,
    ) -> Grant:
        lease = self.lease(
            account, lane, need_seconds=slots * spacing_seconds, horizon_seconds=horizon_seconds
        )
        if lease.start is not None:
            return Grant(slots=slots, wait_seconds=max(0.0, lease.start - lease.now))
        if lease.paused_until > lease.now:
            return Grant(slots=0, wait_seconds=lease.paused_until - lease.now)
        return Grant(slots=0, wait_seconds=max(0.0, lease.next_free - lease.now - horizon_seconds))

    def lease(
        self, account: str, lane: str, *, need_seconds: float, horizon_seconds: float
    ) -> Lease:
        """Take `need_seconds` of the lane's schedule (one statement, committed)."""
        params = {
            "account": account,
            "lane": lane,
            "need": need_seconds,
            "horizon": horizon_seconds,
        }
        with self.engine.begin() as conn:
            row = conn.execute(self._reserve, params).one()
        self._maybe_purge()
        return Lease(
            start=None if row[2] is None else float(row[2]),
            now=float(row[3]),
            next_free=float(row[0]),
            paused_until=float(row[1]),
        )

    def pause(self, account: str, lane: str, seconds: float) -> None:
        with self.engine.begin() as conn:
            conn.execute(self._pause, {"account": account, "lane": lane, "seconds": seconds})

    def purge(self) -> int:
        """Delete rows idle for `PURGE_AFTER_SECONDS`; how many went."""
        with self.engine.begin() as conn:
            return conn.execute(self._purge, {"age": PURGE_AFTER_SECONDS}).rowcount

    def _maybe_purge(self) -> None:
        with self._lock:
            now = time.monotonic()
            if self._purged_at is not None and now - self._purged_at < PURGE_EVERY_SECONDS:
                return
            self._purged_at = now
        self.purge()


_BUDGETS: weakref.WeakKeyDictionary[Engine, DatabaseBudget] = weakref.WeakKeyDictionary()
_BUDGETS_LOCK = threading.Lock()


def budget_for(engine: Engine) -> DatabaseBudget:
    """The process's one `DatabaseBudget` on `engine`: the sync engine and the API's
    connector checks share it, so a governor is not re-shared back and forth."""
    with _BUDGETS_LOCK:
        budget = _BUDGETS.get(engine)
        if budget is None:
            budget = _BUDGETS[engine] = DatabaseBudget(engine)
        return budget
