"""The service's notion of "now", injectable so tests can freeze time."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The current time, time-zone aware (UTC)."""
    return datetime.now(UTC)
