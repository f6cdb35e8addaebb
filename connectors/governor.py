"""Request-rate governors: one per vendor account, shared by every connector of it in a process.

A vendor's rate limit belongs to the account (HubSpot: the portal, shared by every app and
token of it), not to one connector or one record kind. Two connectors of one account that
each throttle alone can exceed it together; so every request of an account first takes a
slot from the account's one `Governor`, looked up by `governor_for(key, ...)`.

A governor keeps a sliding log of the send times of its own requests per *lane* (a limit:
HubSpot's 10-second burst limit for every request, and search's per-second limit for search
requests) and admits a request when every lane it uses has room, a small margin under the
limit so that network jitter between our send times and the vendor's arrival times does not
tip a window over; sends are also spaced evenly over the interval, never in bursts.
Responses feed it back: the vendor's announced limit and interval replace the configured
ones, and the remaining count reveals requests other apps of the account made in the
window, which are subtracted from our share. A 429 pauses the lane for every other
thread; the one that got it waits and retries in `connectors.retry`, the one place that
retries.

Until the first response arrives only one request is in flight, so a limit lower than the
configured tier is learnt before a burst is sent.

Several processes (worker processes, the API's own syncs) share an account's budget
through a `SharedBudget` injected with `Governor.share` (the service keeps one in its
database). Every process then sends only in *cells* it leased from the shared schedule:
the account's lane is one global sequence of cells `interval / allowed` apart, and a
process reserves a few of the next ones at a time (at most half a second's worth, so
one round trip to the store serves several requests) and sends each request within its
cell. However many processes lease, the cells never overlap, so the account's rolling
window holds at most `allowed` requests plus the one or two cells a window's edges cut.
A 429 pauses the lane in the store too, so every process holds back. The in-process
lanes still apply (a process never exceeds the limit alone), but without their even
spacing, which the cells provide. With a shared budget the vendor's remaining count no
longer shrinks our share: it counts our other processes' requests as well, which the
cells already keep apart; other apps on the account are left to the margin and to 429s.
Without a shared budget (tests, a single process) nothing of this applies.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from connectors.errors import QuotaExceededError

log = logging.getLogger(__name__)

#: A process leases at most this much of a lane's schedule at a time: enough that one
#: round trip to the shared store serves several requests, little enough that cells a
#: process leased but does not use (its sync ended) cost the account only a moment.
LEASE_SECONDS = 0.5
#: How far ahead of now a process may lease: with the schedule taken further than this
#: by other processes, it waits rather than queue behind them for seconds.
HORIZON_SECONDS = 1.0


@dataclass(frozen=True)
class Grant:
    """The answer of `SharedBudget.reserve`."""

    #: Cells granted: the first starts `wait_seconds` from now, the next ones follow
    #: `spacing_seconds` (as asked) apart. 0: none now, ask again after `wait_seconds`.
    slots: int
    wait_seconds: float


class SharedBudget(Protocol):
    """An account's request schedule shared by every process that sends on its behalf.

    Implementations must make `reserve` atomic across processes: two reservers never
    get overlapping cells. Times are the store's own clock (the same for every
    process); the answers are durations from now, so callers keep their own clocks.
    """

    def reserve(
        self,
        account: str,
        lane: str,
        *,
        slots: int,
        spacing_seconds: float,
        horizon_seconds: float,
    ) -> Grant:
        """Take up to `slots` cells `spacing_seconds` apart after every cell already
        taken, unless the first would start more than `horizon_seconds` from now or
        the lane is paused: then none, and how long until asking again makes sense."""
        ...

    def pause(self, account: str, lane: str, seconds: float) -> None:
        """The vendor answered 429 on `lane`: no process gets cells for `seconds`."""
        ...


def account_key(key: Hashable) -> str:
    """The text an account's governor is known by in a shared store: the parts of the
    registry key joined, hashed when long (keys hold no secrets, only a token's hash)."""
    parts = key if isinstance(key, tuple) else (key,)
    text = " ".join(str(part) for part in parts)
    if len(text) > 200:
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    return text


@dataclass
class Lane:
    """One limit: at most `limit` requests per `interval_seconds`, less `margin`."""

    name: str
    limit: int
    interval_seconds: float
    #: Requests kept free for jitter (None: 3 % of the limit, at least 1; 2 from 10 on).
    margin: int | None = None
    #: Requests other clients of the account made in the current window (from headers).
    external: int = 0
    paused_until: float = 0.0
    #: The thread whose request got the 429: it waits in the retry policy, not here.
    paused_by: int | None = None
    sent: deque[float] = field(default_factory=deque)
    last_sent: float | None = None
    #: Start times (monotonic) of the cells leased from the shared budget, oldest first.
    leased: deque[float] = field(default_factory=deque)
    #: A thread of this process is asking the shared budget for cells.
    leasing: bool = False
    #: Monotonic time before which asking the shared budget again is pointless.
    lease_after: float = 0.0

    def spacing(self) -> float:
        """Seconds between two sends at the allowed rate."""
        return self.interval_seconds / self.allowed()

    def allowed(self) -> int:
        """Requests of ours the lane admits per interval."""
        if self.margin is not None:
            margin = self.margin
        else:
            margin = max(2 if self.limit >= 10 else 1, math.ceil(self.limit * 0.03))
        return max(1, self.limit - margin - self.external)

    def purge(self, now: float) -> None:
        while self.sent and now - self.sent[0] >= self.interval_seconds:
            self.sent.popleft()

    def wait_seconds(self, now: float, *, spaced: bool = True) -> float:
        """0 when a request may go now, else how long until it may (`spaced`: sends
        evenly spaced, unless leased cells already space them)."""
        if now < self.paused_until and threading.get_ident() != self.paused_by:
            return self.paused_until - now
        self.purge(now)
        if spaced and self.last_sent is not None:
            # Evenly spaced sends: a burst of a whole window's requests would reach the
            # vendor bunched by queueing and jitter and overlap the next burst in its
            # rolling window, while even spacing keeps any window at `allowed` (+1).
            due = self.last_sent + self.interval_seconds / self.allowed()
            if now < due:
                return due - now
        if len(self.sent) < self.allowed():
            return 0.0
        # The oldest sends leave the window first.
        excess = len(self.sent) - self.allowed()
        return max(0.001, self.sent[excess] + self.interval_seconds - now)

    def cell_wait(self, now: float) -> float | None:
        """0 when a leased cell is open now, the wait for the next leased one, or None
        when none is leased. A cell is open for half a spacing from its start: a request
        sent later would come close to the next cell's, perhaps another process's (any
        window then holds at most `allowed` + 1.5 of our requests, within the margin)."""
        width = self.spacing() / 2
        while self.leased and self.leased[0] + width <= now:
            self.leased.popleft()
        if not self.leased:
            return None
        return max(0.0, self.leased[0] - now)


class Governor:
    """Admits the requests of one vendor account under its rate limits (thread-safe)."""

    def __init__(
        self,
        lanes: Mapping[str, Lane],
        *,
        daily_limit: int | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lanes = dict(lanes)
        self.daily_limit = daily_limit
        #: The vendor's last word on today's remaining requests, counted down as we send.
        self.daily_remaining: int | None = None
        self._monotonic = monotonic
        self._cond = threading.Condition()
        self._in_flight = 0
        self._calibrated = False
        #: The store several processes share the account's budget through, and the
        #: account's name in it (see `share`).
        self._shared: SharedBudget | None = None
        self.account: str | None = None
        #: Threads waiting in `acquire` (how many cells to lease at once).
        self._waiting = 0
        #: The store's last answer was an error (logged once, not per lease).
        self._store_failing = False
        #: Requests admitted and 429s reported, for tests and metrics.
        self.admitted = 0
        self.rate_limited = 0

    def share(self, budget: SharedBudget | None, account: str | None = None) -> None:
        """Send only in cells leased from `budget` (None: this process's lanes alone).

        `account` names the account in the store; by default the key `governor_for`
        registered this governor under."""
        with self._cond:
            if account is not None:
                self.account = account
            if budget is not None and self.account is None:
                raise ValueError("a shared budget needs the account's name")
            self._shared = budget
            for lane in self.lanes.values():
                lane.leased.clear()
                lane.lease_after = 0.0
            self._cond.notify_all()

    @property
    def shared(self) -> SharedBudget | None:
        return self._shared

    def acquire(self, *lanes: str, stop: threading.Event | None = None) -> None:
        """Block until a request using `lanes` may be sent, then count it as sent."""
        with self._cond:
            self._waiting += 1
            try:
                self._acquire(lanes, stop)
            finally:
                self._waiting -= 1

    def _acquire(self, lanes: tuple[str, ...], stop: threading.Event | None) -> None:
        while True:
            if stop is not None and stop.is_set():
                raise InterruptedError("stopped while waiting for a request slot")
            if self.daily_remaining is not None and self.daily_remaining <= 0:
                raise QuotaExceededError(
                    "the account's daily API limit is spent (by the vendor's count)",
                    used=self.daily_limit,
                    limit=self.daily_limit,
                )
            now = self._monotonic()
            shared = self._shared
            wait = max(self.lanes[name].wait_seconds(now, spaced=shared is None) for name in lanes)
            if not self._calibrated and self._in_flight > 0:
                wait = max(wait, 0.05)
            if wait <= 0 and shared is not None:
                cell = self._cell_wait(shared, lanes)
                if cell is None:
                    continue  # leased (the lock was let go meanwhile): look again
                wait = cell
            if wait <= 0:
                for name in lanes:
                    lane = self.lanes[name]
                    lane.sent.append(now)
                    lane.last_sent = now
                    if shared is not None:
                        lane.leased.popleft()
                self._in_flight += 1
                self.admitted += 1
                if self.daily_remaining is not None:
                    self.daily_remaining -= 1
                return
            self._cond.wait(min(wait, 0.25))

    def _cell_wait(self, shared: SharedBudget, lanes: tuple[str, ...]) -> float | None:
        """With the lock held: 0 when every lane has a cell open now, else the wait; None
        after leasing cells (the lock was let go for it)."""
        now = self._monotonic()
        wait = 0.0
        for name in lanes:
            lane = self.lanes[name]
            cell = lane.cell_wait(now)
            if cell is not None:
                wait = max(wait, cell)
                continue
            if lane.leasing or now < lane.lease_after:
                # Another thread is asking, or the store said when to ask again.
                wait = max(wait, 0.01 if lane.leasing else lane.lease_after - now)
                continue
            self._lease(shared, lane)
            return None
        return wait

    def _lease(self, shared: SharedBudget, lane: Lane) -> None:
        """Lease cells for `lane` from the store, without the lock during the round trip
        (other lanes and threads go on)."""
        spacing = lane.spacing()
        slots = max(1, min(self._waiting, math.floor(LEASE_SECONDS / spacing)))
        account = self.account
        assert account is not None
        lane.leasing = True
        self._cond.release()
        try:
            grant: Grant | None = shared.reserve(
                account,
                lane.name,
                slots=slots,
                spacing_seconds=spacing,
                horizon_seconds=max(HORIZON_SECONDS, 2 * spacing),
            )
        except Exception as exc:  # noqa: BLE001 - the store failing must not stop the sync
            # The process's own lanes still hold it to the limit alone; the vendor's 429s
            # (shared through this governor) catch the rest until the store answers.
            if not self._store_failing:
                log.warning(
                    "shared rate budget unavailable (%s); this process throttles alone",
                    type(exc).__name__,
                )
            self._store_failing = True
            grant = None
        else:
            self._store_failing = False
        finally:
            self._cond.acquire()
            lane.leasing = False
            self._cond.notify_all()
        now = self._monotonic()
        if grant is None:
            lane.leased.extend(now + i * spacing for i in range(slots))
        elif grant.slots > 0:
            first = now + grant.wait_seconds
            lane.leased.extend(first + i * spacing for i in range(grant.slots))
        else:
            lane.lease_after = now + max(0.005, grant.wait_seconds)

    def release(self) -> None:
        """The request admitted last by this caller has its answer (or failed)."""
        with self._cond:
            self._in_flight = max(0, self._in_flight - 1)
            self._cond.notify_all()

    def observe(
        self,
        lane: str,
        *,
        limit: int | None,
        interval_seconds: float | None,
        remaining: int | None,
        daily_remaining: int | None = None,
        daily_limit: int | None = None,
    ) -> None:
        """Take in what a successful response said about the account's limits."""
        with self._cond:
            self._calibrated = True
            target = self.lanes[lane]
            if limit is not None and limit > 0:
                target.limit = limit
            if interval_seconds is not None and interval_seconds > 0:
                target.interval_seconds = interval_seconds
            if remaining is not None and self._shared is None:
                target.purge(self._monotonic())
                # The vendor counted (limit - remaining) requests in its window; ours in
                # flight may not be counted yet, so this underestimates the others a little.
                target.external = max(0, target.limit - remaining - len(target.sent))
            if daily_limit is not None:
                self.daily_limit = daily_limit
            if daily_remaining is not None:
                self.daily_remaining = daily_remaining
            self._cond.notify_all()

    def throttled(self, lane: str, pause_seconds: float) -> None:
        """The vendor answered 429 on `lane`: nobody sends on it for `pause_seconds` (in
        every process, with a shared budget)."""
        with self._cond:
            self._calibrated = True
            self.rate_limited += 1
            target = self.lanes[lane]
            target.paused_until = max(target.paused_until, self._monotonic() + pause_seconds)
            target.paused_by = threading.get_ident()
            # Cells leased before the 429 would be sent into the vendor's pause.
            target.leased.clear()
            shared, account = self._shared, self.account
            self._cond.notify_all()
        if shared is not None and account is not None:
            try:
                shared.pause(account, lane, pause_seconds)
            except Exception:  # noqa: BLE001 - this process pauses anyway
                log.warning("could not record a rate-limit pause in the shared budget")


_REGISTRY: dict[Hashable, Governor] = {}
_REGISTRY_LOCK = threading.Lock()


def governor_for(key: Hashable, factory: Callable[[], Governor]) -> Governor:
    """The process's governor for account `key`, made by `factory` on first use."""
    with _REGISTRY_LOCK:
        governor = _REGISTRY.get(key)
        if governor is None:
            governor = _REGISTRY[key] = factory()
            if governor.account is None:
                governor.account = account_key(key)
        return governor
