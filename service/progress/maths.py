"""Progress, expected progress, status and forecast: the maths of PRODUCT.md, pure.

Every function here is total: no input makes it raise or return NaN.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from service.okr.models import KeyResultKind, Unit

#: Forecasts start once this fraction of the window has elapsed (PRODUCT.md).
FORECAST_MIN_ELAPSED = 0.10
#: Reads show expected progress in steps of 1/EXPECTED_STEPS of the window (0.1%), and
#: round accumulating forecasts to 1/FORECAST_STEPS of the target range, so that what a
#: dashboard polls changes only when a person would see a difference.
EXPECTED_STEPS = 1000
FORECAST_STEPS = 1000


class Status(enum.StrEnum):
    no_data = "no_data"
    achieved = "achieved"
    on_track = "on_track"
    at_risk = "at_risk"
    off_track = "off_track"


@dataclass(frozen=True, slots=True)
class Margins:
    """How far below expected progress a key result may be and still be on track / at risk."""

    on_track: float = 0.10
    at_risk: float = 0.25


@dataclass(frozen=True, slots=True)
class Figures:
    progress: float
    expected_progress: float
    status: Status
    forecast: float | None


def clamp01(x: float) -> float:
    """`x` clamped to [0, 1]; NaN counts as 0."""
    if math.isnan(x):
        return 0.0
    return min(1.0, max(0.0, x))


def window_bounds(start: date, end: date, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """The half-open window `[start, end)` of local days as aware datetimes.

    Local midnight is taken in `tz`, so a window in Europe/Paris across the March DST change
    is one hour shorter in absolute time, as it really is.
    """
    return (
        datetime.combine(start, time.min, tzinfo=tz),
        datetime.combine(end, time.min, tzinfo=tz),
    )


def elapsed_fraction(window_start: datetime, window_end: datetime, now: datetime) -> float:
    """Expected progress: the elapsed fraction of the window at `now`, clamped to 0..1."""
    if now >= window_end:
        return 1.0
    if now <= window_start:
        return 0.0
    total = _seconds_between(window_start, window_end)
    return clamp01(_seconds_between(window_start, now) / total)


def stepped_elapsed(
    window_start: datetime, window_end: datetime, now: datetime
) -> tuple[float, datetime | None]:
    """Expected progress rounded down to a step of the window, and when the next step
    begins (None once the window is over, or beyond the last representable date)."""
    raw = elapsed_fraction(window_start, window_end, now)
    if raw >= 1.0:
        return 1.0, None
    # The epsilon keeps 0.5 computed as 0.49999999 in its own step.
    step = math.floor(raw * EXPECTED_STEPS + 1e-9)
    total = _seconds_between(window_start, window_end)
    elapsed = _seconds_between(window_start, now)
    for following in (step + 1, step + 2):
        wait = total * following / EXPECTED_STEPS - elapsed
        if wait > 0:
            break
    try:
        # From `now` (UTC), not from the window's start: year-1 starts have no UTC form.
        return step / EXPECTED_STEPS, now + timedelta(seconds=wait)
    except OverflowError:
        return step / EXPECTED_STEPS, None


def round_forecast(forecast: float, start: float | None, target: float) -> float:
    """`forecast` rounded to 1/FORECAST_STEPS of the target range |target - start|."""
    span = abs(target - (start if start is not None else 0.0))
    if not math.isfinite(span) or span <= 0:
        return forecast
    step = span / FORECAST_STEPS
    steps = forecast / step
    if not math.isfinite(steps):
        return forecast
    # Enough decimals to show the step, and none of the float noise of the multiplication.
    return round(round(steps) * step, max(0, -math.floor(math.log10(step))))


def _seconds_between(earlier: datetime, later: datetime) -> float:
    """Absolute seconds from `earlier` to `later`.

    Not `later - earlier`: two datetimes of the same ZoneInfo subtract as wall-clock time,
    ignoring the hour a DST change adds or removes. Offsets are applied as timedeltas, so
    no intermediate datetime can fall out of range (year 1, year 9999).
    """
    wall = later.replace(tzinfo=None) - earlier.replace(tzinfo=None)
    shift = (later.utcoffset() or timedelta(0)) - (earlier.utcoffset() or timedelta(0))
    return (wall - shift).total_seconds()


def _linear(start: float, target: float, value: float) -> float:
    if target == start:
        return 0.0
    return clamp01((value - start) / (target - start))


#: The largest progress of a threshold not yet met: only meeting it is "achieved".
_BELOW_ONE = math.nextafter(1.0, 0.0)


def _unmet(start: float | None, target: float, value: float, *, upward: bool) -> float:
    """Progress towards a threshold not met yet: from `start` when it lies on the far side."""
    if start is None or (start >= target if upward else start <= target):
        return 0.0
    return min(_linear(start, target, value), _BELOW_ONE)


def progress_of(
    kind: KeyResultKind, start: float | None, target: float, value: float | None
) -> float:
    """Progress of `value` from `start` to `target`, 0..1 (0 when there is no value)."""
    if value is None or math.isnan(value):
        return 0.0
    if kind is KeyResultKind.milestone:
        return 1.0 if value >= target else 0.0
    if kind is KeyResultKind.at_least:
        return 1.0 if value >= target else _unmet(start, target, value, upward=True)
    if kind is KeyResultKind.at_most:
        return 1.0 if value <= target else _unmet(start, target, value, upward=False)
    # increase / decrease: the sign of (target - start) carries the direction.
    return _linear(start if start is not None else 0.0, target, value)


def status_of(value: float | None, progress: float, expected: float, margins: Margins) -> Status:
    """The status of PRODUCT.md from progress and expected progress."""
    if value is None:
        return Status.no_data
    if progress >= 1.0:
        return Status.achieved
    if progress >= expected - margins.on_track:
        return Status.on_track
    if progress >= expected - margins.at_risk:
        return Status.at_risk
    return Status.off_track


def accumulates(kind: KeyResultKind, unit: Unit) -> bool:
    """Whether the value grows over the window (counts, sums) rather than being a level.

    Levels (rates in percent, scores such as NPS, thresholds, milestones) carry no trend in
    a single value, so their linear projection is flat; accumulations project linearly from
    where they started.
    """
    return kind in (KeyResultKind.increase, KeyResultKind.decrease) and unit in (
        Unit.count,
        Unit.currency,
    )


def forecast_of(
    kind: KeyResultKind,
    unit: Unit,
    start: float | None,
    value: float | None,
    elapsed: float,
) -> float | None:
    """Linear projection of `value` to the end of the window, once 10% of it has elapsed."""
    if value is None or math.isnan(value) or elapsed < FORECAST_MIN_ELAPSED:
        return None
    if not accumulates(kind, unit):
        return value
    base = start if start is not None else 0.0
    projected = base + (value - base) / elapsed
    return projected if math.isfinite(projected) else None  # e.g. an infinite start


def compute(
    *,
    kind: KeyResultKind,
    unit: Unit,
    start: float | None,
    target: float,
    value: float | None,
    window_start: datetime,
    window_end: datetime,
    now: datetime,
    margins: Margins,
) -> Figures:
    """All progress figures of one key result at `now`."""
    expected = elapsed_fraction(window_start, window_end, now)
    progress = progress_of(kind, start, target, value)
    return Figures(
        progress=progress,
        expected_progress=expected,
        status=status_of(value, progress, expected, margins),
        forecast=forecast_of(kind, unit, start, value, expected),
    )


def weighted_mean(pairs: list[tuple[float, float]]) -> float:
    """Weighted mean of (progress, weight) pairs; 0 for none."""
    total = sum(w for _, w in pairs)
    if total <= 0:
        return 0.0
    return clamp01(sum(p * w for p, w in pairs) / total)
