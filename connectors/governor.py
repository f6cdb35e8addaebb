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

Cross-process sharing (several worker processes on one account) is not implemented: each
process has its own governor, and the vendor's remaining count is what keeps them apart.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field

from connectors.errors import QuotaExceededError


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

    def wait_seconds(self, now: float) -> float:
        """0 when a request may go now, else how long until it may."""
        if now < self.paused_until and threading.get_ident() != self.paused_by:
            return self.paused_until - now
        self.purge(now)
        if self.last_sent is not None:
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
        #: Requests admitted and 429s reported, for tests and metrics.
        self.admitted = 0
        self.rate_limited = 0

    def acquire(self, *lanes: str, stop: threading.Event | None = None) -> None:
        """Block until a request using `lanes` may be sent, then count it as sent."""
        with self._cond:
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
                wait = max(self.lanes[name].wait_seconds(now) for name in lanes)
                if not self._calibrated and self._in_flight > 0:
                    wait = max(wait, 0.05)
                if wait <= 0:
                    for name in lanes:
                        self.lanes[name].sent.append(now)
                        self.lanes[name].last_sent = now
                    self._in_flight += 1
                    self.admitted += 1
                    if self.daily_remaining is not None:
                        self.daily_remaining -= 1
                    return
                self._cond.wait(min(wait, 0.25))

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
            if remaining is not None:
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
        """The vendor answered 429 on `lane`: nobody sends on it for `pause_seconds`."""
        with self._cond:
            self._calibrated = True
            self.rate_limited += 1
            target = self.lanes[lane]
            target.paused_until = max(target.paused_until, self._monotonic() + pause_seconds)
            target.paused_by = threading.get_ident()
            self._cond.notify_all()


_REGISTRY: dict[Hashable, Governor] = {}
_REGISTRY_LOCK = threading.Lock()


def governor_for(key: Hashable, factory: Callable[[], Governor]) -> Governor:
    """The process's governor for account `key`, made by `factory` on first use."""
    with _REGISTRY_LOCK:
        governor = _REGISTRY.get(key)
        if governor is None:
            governor = _REGISTRY[key] = factory()
        return governor
