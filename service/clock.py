"""The service's notion of "now", injectable so tests can freeze time."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The current time, time-zone aware (UTC)."""
    return datetime.now(UTC)


def in_utc(clock: Clock) -> Clock:
    """`clock`, its readings converted to UTC.

    Arithmetic on aware datetimes is wall-clock arithmetic in their own zone: 02:59 in
    Paris plus five minutes on the night clocks go forward is 03:04 CEST, an hour earlier.
    The service only adds and subtracts in UTC, whatever zone a clock answers in.
    """

    def now() -> datetime:
        return clock().astimezone(UTC)

    return now
