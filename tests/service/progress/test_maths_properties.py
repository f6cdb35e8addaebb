"""Property tests of the progress maths of PRODUCT.md ("Progress — canonical semantics")."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from service.okr.models import KeyResultKind, Unit
from service.progress.maths import (
    FORECAST_MIN_ELAPSED,
    Margins,
    Status,
    clamp01,
    compute,
    elapsed_fraction,
    forecast_of,
    progress_of,
    status_of,
    weighted_mean,
    window_bounds,
)

PARIS = ZoneInfo("Europe/Paris")
#: Better statuses rank higher.
RANK = {Status.off_track: 0, Status.at_risk: 1, Status.on_track: 2, Status.achieved: 3}

kinds = st.sampled_from(list(KeyResultKind))
units = st.sampled_from(list(Unit))
any_float = st.floats()  # NaN and infinities included: the maths must be total
numbers = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)
fractions = st.floats(min_value=0.0, max_value=1.0)
instants = st.datetimes(
    min_value=datetime(2020, 1, 1),  # noqa: DTZ001 - hypothesis bounds are naive
    max_value=datetime(2032, 12, 31),  # noqa: DTZ001
    timezones=st.just(UTC),
)
ACCUMULATING = {
    (k, u)
    for k in (KeyResultKind.increase, KeyResultKind.decrease)
    for u in (Unit.count, Unit.currency)
}


@st.composite
def margins(draw: st.DrawFn) -> Margins:
    on_track = draw(fractions)
    at_risk = draw(st.floats(min_value=on_track, max_value=1.0))
    return Margins(on_track=on_track, at_risk=at_risk)


def linear(s: float, t: float, c: float) -> float:
    """PRODUCT.md: clamp((c - s) / (t - s), 0, 1)."""
    return min(1.0, max(0.0, (c - s) / (t - s)))


# ---------------------------------------------------------------------------- progress


@given(kind=kinds, start=st.none() | any_float, target=any_float, value=st.none() | any_float)
def test_given_any_numbers_when_progress_is_computed_then_it_lies_in_0_1(
    kind: KeyResultKind, start: float | None, target: float, value: float | None
) -> None:
    progress = progress_of(kind, start, target, value)
    assert 0.0 <= progress <= 1.0


@given(s=numbers, t=numbers, c=numbers)
def test_given_an_increase_when_progress_is_computed_then_it_is_the_clamped_fraction(
    s: float, t: float, c: float
) -> None:
    assume(t > s)
    progress = progress_of(KeyResultKind.increase, s, t, c)
    assert progress == linear(s, t, c)
    if c >= t:
        assert progress == 1.0
    if c <= s:
        assert progress == 0.0


@given(s=numbers, t=numbers, c=numbers)
def test_given_a_decrease_when_the_value_falls_then_progress_rises_to_1_at_the_target(
    s: float, t: float, c: float
) -> None:
    assume(t < s)
    progress = progress_of(KeyResultKind.decrease, s, t, c)
    assert progress == linear(s, t, c)
    if c <= t:
        assert progress == 1.0
    if c >= s:
        assert progress == 0.0


@given(kind=st.sampled_from([KeyResultKind.increase, KeyResultKind.decrease]), s=numbers, t=numbers)
def test_given_a_linear_kind_when_the_value_moves_towards_the_target_then_progress_never_drops(
    kind: KeyResultKind, s: float, t: float
) -> None:
    assume(t != s)
    path = sorted([s - abs(t - s), s, (s + t) / 2, t, t + (t - s)], reverse=t < s)
    progresses = [progress_of(kind, s, t, c) for c in path]
    assert progresses == sorted(progresses)


@given(s=st.none() | numbers, t=numbers, c=numbers)
def test_given_at_least_when_the_value_reaches_the_threshold_then_only_then_it_is_achieved(
    s: float | None, t: float, c: float
) -> None:
    assume(s is None or s < t)
    progress = progress_of(KeyResultKind.at_least, s, t, c)
    status = status_of(c, progress, 0.0, Margins())
    assert (progress == 1.0) is (c >= t)
    assert (status is Status.achieved) is (c >= t)
    if c < t:
        assert progress <= (0.0 if s is None else linear(s, t, c))


@given(s=st.none() | numbers, t=numbers, c=numbers)
def test_given_at_most_when_the_value_falls_to_the_threshold_then_only_then_it_is_achieved(
    s: float | None, t: float, c: float
) -> None:
    assume(s is None or s > t)
    progress = progress_of(KeyResultKind.at_most, s, t, c)
    status = status_of(c, progress, 0.0, Margins())
    assert (progress == 1.0) is (c <= t)
    assert (status is Status.achieved) is (c <= t)
    if c > t:
        assert progress <= (0.0 if s is None else linear(s, t, c))


offsets = st.floats(min_value=0.0, max_value=1e6)


@given(
    kind=st.sampled_from([KeyResultKind.at_least, KeyResultKind.at_most]),
    t=numbers,
    past=offsets,
    short=offsets.filter(lambda x: x > 0),
)
def test_given_a_threshold_whose_start_is_past_it_when_unmet_then_progress_is_0_not_achieved(
    kind: KeyResultKind, t: float, past: float, short: float
) -> None:
    # at_least 80 "starting" at 90 (or at_most 5 starting at 2): no way to measure progress.
    sign = 1 if kind is KeyResultKind.at_least else -1
    s, c = t + sign * past, t - sign * short
    assume(c != t)
    assert progress_of(kind, s, t, c) == 0.0


@given(start=st.none() | numbers, value=numbers)
def test_given_a_milestone_when_progress_is_computed_then_it_is_0_or_1(
    start: float | None, value: float
) -> None:
    progress = progress_of(KeyResultKind.milestone, start, 1.0, value)
    assert progress == (1.0 if value >= 1.0 else 0.0)


@given(kind=kinds, unit=units, start=st.none() | numbers, target=numbers, m=margins())
def test_given_no_value_when_figures_are_computed_then_status_is_no_data_without_forecast(
    kind: KeyResultKind, unit: Unit, start: float | None, target: float, m: Margins
) -> None:
    figures = compute(
        kind=kind,
        unit=unit,
        start=start,
        target=target,
        value=None,
        window_start=datetime(2026, 1, 1, tzinfo=UTC),
        window_end=datetime(2027, 1, 1, tzinfo=UTC),
        now=datetime(2026, 7, 2, 12, tzinfo=UTC),
        margins=m,
    )
    assert figures.status is Status.no_data
    assert figures.progress == 0.0
    assert figures.forecast is None
    assert figures.expected_progress == 0.5


# ---------------------------------------------------------------------------- status


@given(value=numbers, progress=fractions, expected=fractions, m=margins())
def test_given_progress_and_expected_when_status_is_computed_then_margins_decide_it(
    value: float, progress: float, expected: float, m: Margins
) -> None:
    status = status_of(value, progress, expected, m)
    if progress >= 1.0:
        assert status is Status.achieved
    elif progress >= expected - m.on_track:
        assert status is Status.on_track
    elif progress >= expected - m.at_risk:
        assert status is Status.at_risk
    else:
        assert status is Status.off_track


@given(value=numbers, p1=fractions, p2=fractions, expected=fractions, m=margins())
def test_given_more_progress_when_status_is_computed_then_it_is_never_worse(
    value: float, p1: float, p2: float, expected: float, m: Margins
) -> None:
    low, high = sorted([p1, p2])
    assert RANK[status_of(value, low, expected, m)] <= RANK[status_of(value, high, expected, m)]


@given(value=numbers, progress=fractions, e1=fractions, e2=fractions, m=margins())
def test_given_more_time_elapsed_when_progress_stands_still_then_status_is_never_better(
    value: float, progress: float, e1: float, e2: float, m: Margins
) -> None:
    early, late = sorted([e1, e2])
    before = RANK[status_of(value, progress, early, m)]
    assert RANK[status_of(value, progress, late, m)] <= before


# ---------------------------------------------------------------------------- expected progress


@given(start=instants, end=instants, now=instants)
def test_given_any_window_when_expected_progress_is_computed_then_it_lies_in_0_1(
    start: datetime, end: datetime, now: datetime
) -> None:
    assert 0.0 <= elapsed_fraction(start, end, now) <= 1.0


@given(start=instants, length=st.timedeltas(min_value=timedelta(0)), t1=instants, t2=instants)
def test_given_a_window_when_time_passes_then_expected_progress_never_decreases(
    start: datetime, length: timedelta, t1: datetime, t2: datetime
) -> None:
    assume(length < timedelta(days=3650))
    early, late = sorted([t1, t2])
    end = start + length
    assert elapsed_fraction(start, end, early) <= elapsed_fraction(start, end, late)


@given(start=instants, length=st.integers(min_value=1, max_value=10**9), at=fractions)
def test_given_now_inside_a_window_when_expected_progress_is_computed_then_it_is_the_elapsed_share(
    start: datetime, length: int, at: float
) -> None:
    end = start + timedelta(seconds=length)
    now = start + timedelta(seconds=length * at)
    exact = (now - start).total_seconds() / length
    assert elapsed_fraction(start, end, now) == pytest.approx(exact, abs=1e-9)


@given(start=instants, now=instants)
def test_given_a_zero_length_window_when_expected_progress_is_computed_then_it_is_0_then_1(
    start: datetime, now: datetime
) -> None:
    assert elapsed_fraction(start, start, now) == (1.0 if now >= start else 0.0)


@given(
    start=instants, length=st.integers(min_value=0, max_value=10**9), early=st.integers(1, 10**9)
)
def test_given_a_window_in_the_future_when_expected_progress_is_computed_then_it_is_0(
    start: datetime, length: int, early: int
) -> None:
    end = start + timedelta(seconds=length)
    assert elapsed_fraction(start, end, start - timedelta(seconds=early)) == 0.0


@given(
    first=st.dates(),
    last=st.dates(),
    zone=st.sampled_from(
        ["UTC", "Europe/Paris", "Asia/Tokyo", "Pacific/Kiritimati", "America/Adak"]
    ),
    now=instants,
)
@example(
    first=date(1, 1, 1),  # Tokyo's local mean time is UTC+9:18: that instant is in year 0
    last=date(2030, 1, 1),
    zone="Asia/Tokyo",
    now=datetime(2026, 7, 2, 12, tzinfo=UTC),
)
def test_given_any_days_in_any_zone_when_expected_progress_is_computed_then_it_never_fails(
    first: date, last: date, zone: str, now: datetime
) -> None:
    start, end = window_bounds(first, last, ZoneInfo(zone))
    assert 0.0 <= elapsed_fraction(start, end, now) <= 1.0


# ---------------------------------------------------------------------------- forecast


@given(kind=kinds, unit=units, start=st.none() | numbers, value=numbers, elapsed=fractions)
def test_given_less_than_10_percent_elapsed_when_forecasting_then_there_is_none(
    kind: KeyResultKind, unit: Unit, start: float | None, value: float, elapsed: float
) -> None:
    forecast = forecast_of(kind, unit, start, value, elapsed)
    if elapsed < FORECAST_MIN_ELAPSED:
        assert forecast is None
    else:
        assert forecast is not None
        assert math.isfinite(forecast)


@given(
    kind=st.sampled_from([KeyResultKind.increase, KeyResultKind.decrease]),
    unit=st.sampled_from([Unit.count, Unit.currency]),
    start=numbers,
    value=numbers,
    elapsed=st.floats(min_value=FORECAST_MIN_ELAPSED, max_value=1.0),
)
@example(kind=KeyResultKind.increase, unit=Unit.count, start=131073.0, value=1e-05, elapsed=1.0)
def test_given_an_accumulation_when_forecasting_then_the_trend_since_start_is_extended(
    kind: KeyResultKind, unit: Unit, start: float, value: float, elapsed: float
) -> None:
    forecast = forecast_of(kind, unit, start, value, elapsed)
    assert forecast is not None
    # The projection keeps the pace: what was gained so far, scaled to the whole window.
    scale = 1e-9 * max(1.0, abs(start), abs(value))  # floating error grows with magnitude
    assert (forecast - start) * elapsed == pytest.approx(value - start, abs=scale)
    assert forecast_of(kind, unit, start, value, 1.0) == pytest.approx(value, abs=scale)


@given(
    kind=kinds,
    unit=units,
    start=st.none() | numbers,
    value=numbers,
    elapsed=st.floats(min_value=FORECAST_MIN_ELAPSED, max_value=1.0),
)
def test_given_a_level_when_forecasting_then_the_value_is_carried_flat(
    kind: KeyResultKind, unit: Unit, start: float | None, value: float, elapsed: float
) -> None:
    assume((kind, unit) not in ACCUMULATING)
    assert forecast_of(kind, unit, start, value, elapsed) == value


@given(kind=kinds, unit=units, start=st.none() | any_float, value=any_float, elapsed=fractions)
def test_given_any_numbers_when_forecasting_then_nan_never_comes_out(
    kind: KeyResultKind, unit: Unit, start: float | None, value: float, elapsed: float
) -> None:
    forecast = forecast_of(kind, unit, start, value, elapsed)
    assert forecast is None or not math.isnan(forecast)


# ---------------------------------------------------------------------------- roll-up


@given(st.lists(st.tuples(fractions, st.floats(min_value=1e-3, max_value=1e3)), max_size=20))
def test_given_weighted_progresses_when_rolled_up_then_the_mean_lies_between_min_and_max(
    pairs: list[tuple[float, float]],
) -> None:
    mean = weighted_mean(pairs)
    if not pairs:
        assert mean == 0.0
    else:
        progresses = [p for p, _ in pairs]
        assert min(progresses) - 1e-9 <= mean <= max(progresses) + 1e-9


@given(st.floats(allow_nan=True))
def test_given_any_number_when_clamped_then_it_lies_in_0_1(x: float) -> None:
    assert 0.0 <= clamp01(x) <= 1.0


# ---------------------------------------------------------------------------- time zones


def _noon_utc_offset_hours(day: int) -> int:
    """Hours from local midnight on 2026-03-01 (Paris) to local noon on March `day`,
    in absolute time: the clocks jump from 02:00 to 03:00 on March 29."""
    return (day - 1) * 24 + 12 - (1 if day >= 29 else 0)


def test_given_march_2026_in_paris_when_bounded_then_the_window_is_one_hour_short() -> None:
    start, end = window_bounds(date(2026, 3, 1), date(2026, 4, 1), PARIS)
    assert start.astimezone(UTC) == datetime(2026, 2, 28, 23, tzinfo=UTC)
    assert end.astimezone(UTC) == datetime(2026, 3, 31, 22, tzinfo=UTC)
    assert end.timestamp() - start.timestamp() == (31 * 24 - 1) * 3600


def test_given_october_2026_in_paris_when_bounded_then_the_window_is_one_hour_long() -> None:
    start, end = window_bounds(date(2026, 10, 1), date(2026, 11, 1), PARIS)
    assert end.timestamp() - start.timestamp() == (31 * 24 + 1) * 3600


@given(
    first=st.dates(min_value=date(2024, 1, 1), max_value=date(2028, 12, 31)),
    days=st.integers(min_value=1, max_value=800),
)
def test_given_a_paris_window_when_bounded_then_its_length_counts_the_dst_hours(
    first: date, days: int
) -> None:
    last = first + timedelta(days=days)
    start, end = window_bounds(first, last, PARIS)
    shift = (end.utcoffset() or timedelta(0)) - (start.utcoffset() or timedelta(0))
    assert end.timestamp() - start.timestamp() == days * 86400 - shift.total_seconds()
    assert start.hour == end.hour == 0


@pytest.mark.parametrize("day", range(1, 32))
def test_given_local_noon_in_paris_when_expected_progress_is_computed_then_time_is_absolute(
    day: int,
) -> None:
    start, end = window_bounds(date(2026, 3, 1), date(2026, 4, 1), PARIS)
    noon = datetime(2026, 3, day, 12, tzinfo=PARIS)
    exact = _noon_utc_offset_hours(day) / (31 * 24 - 1)
    # The same instant, however it is expressed.
    assert elapsed_fraction(start, end, noon) == pytest.approx(exact, abs=1e-12)
    assert elapsed_fraction(start, end, noon.astimezone(UTC)) == pytest.approx(exact, abs=1e-12)


def test_given_local_noons_across_the_dst_change_when_computed_then_expected_rises_each_day() -> (
    None
):
    start, end = window_bounds(date(2026, 3, 1), date(2026, 4, 1), PARIS)
    noons = [datetime(2026, 3, d, 12, tzinfo=PARIS) for d in range(1, 32)]
    expected = [elapsed_fraction(start, end, n) for n in noons]
    assert all(a < b for a, b in zip(expected, expected[1:], strict=False))
    # Noon on March 29 comes 23 absolute hours after noon on March 28, not 24.
    assert (expected[28] - expected[27]) * (31 * 24 - 1) == pytest.approx(23)
