"""Example-based tests of the progress maths, each number computed by hand."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from service.okr.models import KeyResultKind, Unit
from service.progress.maths import (
    Margins,
    Status,
    compute,
    elapsed_fraction,
    forecast_of,
    progress_of,
    status_of,
    weighted_mean,
    window_bounds,
)

inc, dec = KeyResultKind.increase, KeyResultKind.decrease
at_least, at_most, milestone = (
    KeyResultKind.at_least,
    KeyResultKind.at_most,
    KeyResultKind.milestone,
)
YEAR_2026 = (datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))


@pytest.mark.parametrize(
    ("kind", "start", "target", "value", "progress"),
    [
        (inc, 0, 1000, 250, 0.25),  # 250 leads of 1000
        (inc, 100, 200, 150, 0.5),  # halfway from 100 to 200
        (inc, 100, 200, 50, 0.0),  # below the start: clamped to 0
        (inc, 100, 200, 300, 1.0),  # past the target: clamped to 1
        (dec, 50, 10, 30, 0.5),  # churn from 50 down to 10, now 30
        (dec, 50, 10, 60, 0.0),  # worse than the start
        (dec, 50, 10, 5, 1.0),  # better than the target
        (at_least, None, 80, 79, 0.0),  # NPS 79 < 80, no start: 0
        (at_least, None, 80, 80, 1.0),  # NPS 80 meets "at least 80"
        (at_least, 20, 80, 50, 0.5),  # from 20 towards 80: halfway
        (at_least, 90, 80, 70, 0.0),  # a start past the threshold measures nothing
        (at_most, 15, 5, 10, 0.5),  # cost ratio 15% -> at most 5%, now 10%
        (at_most, 15, 5, 5, 1.0),
        (at_most, 15, 5, 20, 0.0),
        (at_most, None, 5, 6, 0.0),
        (milestone, None, 1, 0, 0.0),
        (milestone, None, 1, 1, 1.0),
        (inc, 0, 100, None, 0.0),  # no value yet
    ],
)
def test_given_a_key_result_when_progress_is_computed_then_it_matches_the_hand_computation(
    kind: KeyResultKind, start: float | None, target: float, value: float | None, progress: float
) -> None:
    assert progress_of(kind, start, target, value) == pytest.approx(progress)


def test_given_a_threshold_a_hair_short_when_rounding_says_1_then_it_is_not_achieved() -> None:
    # (c - s) / (t - s) rounds to exactly 1.0 in floating point here, yet c < t.
    start, target, value = -1e9, 1.0, 1.0 - 1e-10
    assert (value - start) / (target - start) == 1.0
    progress = progress_of(at_least, start, target, value)
    assert progress < 1.0
    assert status_of(value, progress, 0.5, Margins()) is Status.on_track


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (datetime(2025, 12, 31, tzinfo=UTC), 0.0),  # before the window
        (datetime(2026, 1, 1, tzinfo=UTC), 0.0),
        (datetime(2026, 4, 1, tzinfo=UTC), 90 / 365),  # 31 + 28 + 31 days
        (datetime(2026, 7, 2, 12, tzinfo=UTC), 0.5),  # 181.5 + 1 = 182.5 days of 365
        (datetime(2027, 1, 1, tzinfo=UTC), 1.0),  # the end is excluded: all elapsed
        (datetime(2030, 1, 1, tzinfo=UTC), 1.0),
    ],
)
def test_given_the_year_2026_when_expected_progress_is_computed_then_it_is_the_elapsed_share(
    now: datetime, expected: float
) -> None:
    assert elapsed_fraction(*YEAR_2026, now) == pytest.approx(expected)


def test_given_2026_in_paris_when_it_is_noon_utc_on_july_2_then_one_more_hour_has_elapsed() -> None:
    # Paris midnight on 2026-01-01 is 2025-12-31T23:00Z; both bounds are in winter time.
    start, end = window_bounds(date(2026, 1, 1), date(2027, 1, 1), ZoneInfo("Europe/Paris"))
    now = datetime(2026, 7, 2, 12, tzinfo=UTC)
    assert elapsed_fraction(start, end, now) == pytest.approx((182.5 * 24 + 1) / (365 * 24))


def test_given_the_dst_day_in_paris_when_it_is_local_noon_then_23_hours_passed_since_midnight() -> (
    None
):
    start, end = window_bounds(date(2026, 3, 29), date(2026, 3, 30), ZoneInfo("Europe/Paris"))
    noon = datetime(2026, 3, 29, 12, tzinfo=ZoneInfo("Europe/Paris"))
    # Midnight (UTC+1) to noon (UTC+2) is 11 absolute hours of a 23-hour day.
    assert elapsed_fraction(start, end, noon) == pytest.approx(11 / 23)


@pytest.mark.parametrize(
    ("progress", "status"),
    [
        (1.0, Status.achieved),
        (0.9, Status.on_track),
        (0.4, Status.on_track),  # exactly expected - 0.10
        (0.39, Status.at_risk),
        (0.25, Status.at_risk),  # exactly expected - 0.25
        (0.24, Status.off_track),
        (0.0, Status.off_track),
    ],
)
def test_given_half_the_year_elapsed_when_status_is_computed_then_default_margins_apply(
    progress: float, status: Status
) -> None:
    assert status_of(10.0, progress, 0.5, Margins()) is status


@pytest.mark.parametrize(
    ("progress", "status"),
    [
        (0.45, Status.on_track),
        (0.44, Status.at_risk),
        (0.3, Status.at_risk),
        (0.29, Status.off_track),
    ],
)
def test_given_workspace_margins_when_status_is_computed_then_they_replace_the_defaults(
    progress: float, status: Status
) -> None:
    assert status_of(10.0, progress, 0.5, Margins(on_track=0.05, at_risk=0.2)) is status


def test_given_no_value_when_status_is_computed_then_it_is_no_data_even_if_far_behind() -> None:
    assert status_of(None, 0.0, 1.0, Margins()) is Status.no_data


@pytest.mark.parametrize(
    ("kind", "unit", "start", "value", "elapsed", "forecast"),
    [
        (inc, Unit.count, 0, 300, 0.25, 1200),  # 300 leads in a quarter of the year
        (inc, Unit.currency, 100, 400, 0.5, 700),  # +300 in half the year: +600 by the end
        (inc, Unit.count, 0, 10, 0.1, 100),  # exactly 10% elapsed: forecasts start
        (inc, Unit.count, 0, 10, 0.0999, None),  # just before
        (dec, Unit.count, 50, 40, 0.5, 30),  # -10 in half the year
        (inc, Unit.percent, 0, 30, 0.5, 30),  # a rate is a level: carried flat
        (at_least, Unit.score, None, 42, 0.5, 42),  # an NPS too
        (inc, Unit.count, 0, None, 0.5, None),  # no value, no forecast
    ],
)
def test_given_a_value_when_forecasting_then_it_matches_the_hand_computation(
    kind: KeyResultKind,
    unit: Unit,
    start: float | None,
    value: float | None,
    elapsed: float,
    forecast: float | None,
) -> None:
    got = forecast_of(kind, unit, start, value, elapsed)
    assert got == (None if forecast is None else pytest.approx(forecast))


def test_given_leads_at_a_quarter_of_the_year_when_computed_then_every_figure_is_as_by_hand() -> (
    None
):
    figures = compute(
        kind=inc,
        unit=Unit.count,
        start=0,
        target=1000,
        value=150,
        window_start=YEAR_2026[0],
        window_end=YEAR_2026[1],
        now=datetime(2026, 4, 1, tzinfo=UTC),
        margins=Margins(),
    )
    assert figures.progress == pytest.approx(0.15)
    assert figures.expected_progress == pytest.approx(90 / 365)  # 0.2466
    assert figures.status is Status.on_track  # 0.15 >= 0.2466 - 0.10 = 0.1466
    assert figures.forecast == pytest.approx(150 * 365 / 90)  # 608.3


def test_given_weights_when_rolled_up_then_the_mean_is_weighted() -> None:
    assert weighted_mean([(0.5, 1), (1.0, 3), (0.0, 1)]) == pytest.approx(0.7)  # 3.5 / 5
    assert weighted_mean([]) == 0.0
