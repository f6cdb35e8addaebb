"""The one retry policy every connector uses.

Every vendor call goes through `RetryPolicy.call`: it spends the run's request budget,
throttles to the configured rate, retries transient faults with exponential backoff and
full jitter (AWS Architecture Blog, "Exponential Backoff And Jitter"), honours
Retry-After, and refreshes an expired session exactly once. Nothing else retries.
"""

from __future__ import annotations

import email.utils
import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

from connectors.errors import (
    RateLimitedError,
    RequestBudgetExceededError,
    RetriableError,
    SessionExpiredError,
)

T = TypeVar("T")


def retry_after_seconds(value: str | None, date: str | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header: delay-seconds or an HTTP-date.

    RFC 9110 §10.2.3. An HTTP-date is measured against the same response's `Date` header
    (§6.6.1: the origin's clock), never against our own clock, so clock skew between us
    and the vendor cannot stretch or cancel the wait. Without a usable `Date` the date form
    gives None, and the retry policy backs off on its own. Negative waits count as 0.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        when, sent = _http_date(text), _http_date(date)
        if when is None or sent is None:
            return None
        seconds = (when - sent).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def _http_date(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@dataclass
class RetryPolicy:
    """Retry, throttle and budget settings for one sync run (or one check)."""

    max_attempts: int = 5
    base_delay_seconds: float = 0.5
    max_delay_seconds: float = 30.0
    #: A Retry-After longer than this fails the run instead of blocking a worker.
    max_retry_after_seconds: float = 120.0
    #: Total requests this run may make (None = unlimited); protects daily quotas.
    request_budget: int | None = None
    #: At most `rate_requests` per `rate_period_seconds` (None = no throttle).
    rate_requests: int | None = None
    rate_period_seconds: float = 10.0
    sleep: Callable[[float], None] = time.sleep
    monotonic: Callable[[], float] = time.monotonic
    rng: random.Random = field(default_factory=random.Random)
    requests_made: int = 0
    retries: int = 0
    #: Vendor answers that said to slow down (429 and equivalents), retried or not.
    rate_limited: int = 0
    _recent: deque[float] = field(default_factory=deque)
    #: Connectors may call from several threads (HubSpot's parallel list streams): the
    #: counters and the budget are shared by them.
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def call(self, fn: Callable[[], T], *, reauthenticate: Callable[[], None] | None = None) -> T:
        """Run `fn` (one vendor request) under the policy and return its result."""
        refreshed = False
        attempt = 0
        while True:
            attempt += 1
            self._spend()
            try:
                return fn()
            except SessionExpiredError:
                if reauthenticate is None or refreshed:
                    raise
                refreshed = True
                reauthenticate()
                attempt -= 1  # a refresh is not a failed attempt
            except RateLimitedError as exc:
                with self._lock:
                    self.rate_limited += 1
                if attempt >= self.max_attempts:
                    raise
                delay = exc.retry_after_seconds
                if delay is None:
                    delay = self._backoff(attempt)
                elif delay > self.max_retry_after_seconds:
                    raise
                with self._lock:
                    self.retries += 1
                self.sleep(delay)
            except RetriableError:
                if attempt >= self.max_attempts:
                    raise
                with self._lock:
                    self.retries += 1
                self.sleep(self._backoff(attempt))

    def counters(self) -> tuple[int, int, int, list[float]]:
        """Requests made, retries, rate-limited answers and the recent sends the throttle
        counts: what a read in another process (the reader process) hands back."""
        with self._lock:
            return self.requests_made, self.retries, self.rate_limited, list(self._recent)

    def adopt_counters(self, counters: tuple[int, int, int, list[float]]) -> None:
        """Continue from `counters()` taken in another process forked from this one."""
        with self._lock:
            self.requests_made, self.retries, self.rate_limited, recent = counters
            self._recent = deque(recent)

    def _backoff(self, attempt: int) -> float:
        cap = min(self.max_delay_seconds, self.base_delay_seconds * 2 ** (attempt - 1))
        return self.rng.uniform(0, cap)

    def _spend(self) -> None:
        with self._lock:
            self._spend_locked()

    def _spend_locked(self) -> None:
        if self.request_budget is not None and self.requests_made >= self.request_budget:
            raise RequestBudgetExceededError(
                f"request budget of {self.request_budget} requests for this run is spent",
                used=self.requests_made,
                limit=self.request_budget,
            )
        if self.rate_requests is not None:
            now = self.monotonic()
            while self._recent and now - self._recent[0] >= self.rate_period_seconds:
                self._recent.popleft()
            if len(self._recent) >= self.rate_requests:
                self.sleep(self.rate_period_seconds - (now - self._recent[0]))
                now = self.monotonic()
                self._recent.popleft()
            self._recent.append(now)
        self.requests_made += 1
