"""Demo dataset: determinism, "as of now" semantics, paging, and Tartempion calibration."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from connectors.base import Page, Record, RecordKind, Runtime, Window
from connectors.demo import dataset
from connectors.demo.connector import DemoConfig, DemoConnector, DemoSecrets
from connectors.errors import AuthError, ConfigError
from tests.connectors.demo.harness import SEED, SIZE, YEAR, live_at, timelines

EVERYTHING = Window(datetime(1970, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
LEAD, OPP, SR = RecordKind.lead, RecordKind.opportunity, RecordKind.survey_response


def make_connector(now: datetime, page_size: int | None = None, **config: Any) -> DemoConnector:
    values: dict[str, Any] = {"seed": SEED, "size": SIZE, "year": YEAR, "now": now, **config}
    return DemoConnector(
        DemoConfig.model_validate(values), DemoSecrets(), Runtime(page_size=page_size)
    )


def read_pages(connector: DemoConnector, kind: RecordKind, **kw: Any) -> list[Page]:
    return list(connector.read(kind, kw.pop("window", EVERYTHING), **kw))


def read_all(
    connector: DemoConnector, kind: RecordKind, window: Window = EVERYTHING
) -> list[Record]:
    return [r for page in connector.read(kind, window) for r in page.records]


def fingerprint(records: list[Record]) -> list[tuple[Any, ...]]:
    return [(r.source_id, r.created_at, r.modified_at, r.deleted, dict(r.raw)) for r in records]


def moment(unix: int) -> datetime:
    return datetime.fromtimestamp(unix, UTC)


def year_end(year: int) -> datetime:
    return datetime(year + 1, 1, 1, tzinfo=UTC)


def test_given_the_same_seed_and_now_when_generating_afresh_then_records_are_identical() -> None:
    now = datetime(YEAR, 7, 14, 10, tzinfo=UTC)
    first = {k: fingerprint(read_all(make_connector(now), k)) for k in (LEAD, OPP, SR)}
    dataset.generate.cache_clear()

    second = {k: fingerprint(read_all(make_connector(now), k)) for k in (LEAD, OPP, SR)}

    assert first == second
    assert all(first.values())
    assert fingerprint(read_all(make_connector(now, seed=SEED + 1), LEAD)) != first[LEAD]


def test_given_a_later_now_when_reading_then_ids_grow_and_some_records_changed() -> None:
    earlier, later = datetime(YEAR, 4, 1, tzinfo=UTC), datetime(YEAR, 6, 1, tzinfo=UTC)
    for kind in (LEAD, OPP, SR):
        before = {r.source_id: r for r in read_all(make_connector(earlier), kind)}
        after = {r.source_id: r for r in read_all(make_connector(later), kind)}

        assert set(before) < set(after)
        changed = [i for i in before if after[i].modified_at != before[i].modified_at]
        assert changed, kind
        assert all(earlier < after[i].modified_at <= later for i in changed)
        assert all(r.created_at <= r.modified_at <= later for r in after.values())


def test_given_a_lead_qualified_after_now_when_reading_then_it_is_not_yet_qualified() -> None:
    lead, qualified_at = next(
        (t, v.at)
        for t in timelines(LEAD)
        for v in t.versions
        if v.raw["Status"] == "Qualified" and not v.deleted
    )

    def state(now: int) -> Record:
        return next(
            r for r in read_all(make_connector(moment(now)), LEAD) if r.source_id == lead.source_id
        )

    assert state(qualified_at - 1).status == "Working"
    assert state(qualified_at).status == "Qualified"
    assert state(qualified_at).modified_at == moment(qualified_at)


def test_given_an_opportunity_closing_later_when_reading_before_then_it_is_open() -> None:
    opp, closed_at = next(
        (t, v.at) for t in timelines(OPP) for v in t.versions if v.raw["StageName"] == "Closed Won"
    )

    def state(now: int) -> Record:
        return next(
            r for r in read_all(make_connector(moment(now)), OPP) if r.source_id == opp.source_id
        )

    open_, won = state(closed_at - 1), state(closed_at)
    assert (open_.is_closed, open_.is_won) == (False, False)
    assert (won.is_closed, won.is_won, won.stage) == (True, True, "Closed Won")
    assert won.close_date == moment(closed_at).astimezone(dataset.PARIS).date()


def test_given_a_record_deleted_before_now_when_reading_then_it_is_yielded_deleted() -> None:
    for kind in (LEAD, OPP, SR):
        victim = next(t for t in timelines(kind) if t.versions[-1].deleted)
        deleted_at = victim.versions[-1].at

        def state(now: int, victim_id: str = victim.source_id, kind: RecordKind = kind) -> Record:
            records = read_all(make_connector(moment(now)), kind)
            return next(r for r in records if r.source_id == victim_id)

        assert not state(deleted_at - 1).deleted
        gone = state(deleted_at)
        assert gone.deleted
        assert gone.modified_at == moment(deleted_at)
        assert victim.source_id not in live_at(kind, deleted_at)


def test_given_small_pages_when_resuming_from_each_checkpoint_then_the_rest_follows() -> None:
    connector = make_connector(datetime(YEAR, 3, 1, tzinfo=UTC), page_size=50)
    pages = read_pages(connector, LEAD)
    records = [r for p in pages for r in p.records]
    assert len(pages) >= 3
    assert [(r.modified_at, r.source_id) for r in records] == sorted(
        (r.modified_at, r.source_id) for r in records
    )

    for k, page in enumerate(pages[:-1]):
        rest = [
            r.source_id
            for p in read_pages(connector, LEAD, resume=page.checkpoint)
            for r in p.records
        ]
        assert rest == [r.source_id for p in pages[k + 1 :] for r in p.records]


def test_given_no_page_size_when_reading_a_full_year_then_pages_hold_500_records() -> None:
    pages = read_pages(make_connector(year_end(YEAR)), LEAD)

    assert [len(p.records) for p in pages[:-1]] == [500] * (len(pages) - 1)
    assert sum(len(p.records) for p in pages) == SIZE


def test_given_a_window_when_reading_then_only_records_modified_inside_it_are_yielded() -> None:
    connector = make_connector(year_end(YEAR))
    everything = read_all(connector, OPP)
    pivot = sorted(r.modified_at for r in everything)[len(everything) // 2]
    window = Window(pivot - timedelta(days=20), pivot)

    inside = read_all(connector, OPP, window)

    assert {r.source_id for r in inside} == {
        r.source_id for r in everything if r.modified_at in window
    }
    assert all(r.modified_at < pivot for r in inside)


def test_given_a_malformed_checkpoint_when_resuming_then_config_error() -> None:
    with pytest.raises(ConfigError):
        read_pages(make_connector(year_end(YEAR)), LEAD, resume={"after_ts": "yesterday"})


def test_given_no_year_when_reading_then_the_year_of_now_is_used() -> None:
    connector = DemoConnector(DemoConfig(now=datetime(2031, 5, 1, tzinfo=UTC)), DemoSecrets())

    records = read_all(connector, LEAD)

    assert records
    assert {r.created_at.year for r in records} == {2031}


def test_given_a_naive_now_when_configuring_then_it_is_read_as_utc() -> None:
    assert DemoConfig.model_validate({"now": "2026-05-01T10:00:00"}).now == datetime(
        2026, 5, 1, 10, tzinfo=UTC
    )


def test_given_default_config_when_checking_then_ok_and_rejecting_config_raises_auth() -> None:
    assert make_connector(year_end(YEAR)).check().ok
    with pytest.raises(AuthError):
        make_connector(year_end(YEAR), reject_credentials=True).check()
    with pytest.raises(AuthError):
        read_all(make_connector(year_end(YEAR), reject_credentials=True), LEAD)


def test_given_a_coarse_resolution_when_reading_then_timestamps_are_floored_to_it() -> None:
    day = 86_400
    connector = make_connector(datetime(YEAR, 2, 1, tzinfo=UTC), timestamp_resolution_seconds=day)
    origin = datetime(YEAR, 1, 1, tzinfo=UTC)

    records = read_all(connector, LEAD)

    assert records
    for r in records:
        assert (r.modified_at - origin).total_seconds() % day == 0
        assert (r.created_at - origin).total_seconds() % day == 0


def lookup(raw: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        raw = raw[part]
    return raw


def test_given_declared_raw_fields_when_reading_then_every_record_carries_them() -> None:
    connector = make_connector(year_end(YEAR))
    for kind in (LEAD, OPP, SR):
        fields = DemoConnector.raw_fields(connector.config, kind)
        for record in read_all(connector, kind)[:200]:
            for name in fields:
                lookup(record.raw, name)  # raises KeyError when a declared field is missing


def test_given_a_tenth_of_the_size_when_generating_then_every_kind_scales_down() -> None:
    full = {k: len(timelines(k)) for k in (LEAD, OPP, SR)}
    small = dataset.generate(SEED, SIZE // 10, YEAR).timelines

    for kind, count in full.items():
        assert 0.06 <= len(small[kind]) / count <= 0.14, kind


def nps(scores: list[int]) -> float:
    promoters = sum(s >= 9 for s in scores)
    detractors = sum(s <= 6 for s in scores)
    return 100 * (promoters - detractors) / len(scores)


@pytest.mark.parametrize("year", [2025, 2026, 2027])
def test_given_year_end_when_computing_tartempion_key_results_then_they_land_near_targets(
    year: int,
) -> None:
    connector = DemoConnector(DemoConfig(year=year, now=year_end(year)), DemoSecrets())
    live = {k: [r for r in read_all(connector, k) if not r.deleted] for k in (LEAD, OPP, SR)}
    in_year = Window(datetime(year, 1, 1, tzinfo=UTC), year_end(year))
    first_day, next_first_day = date(year, 1, 1), date(year + 1, 1, 1)

    qualified = [r for r in live[LEAD] if r.status == "Qualified" and r.created_at in in_year]
    closed = [
        r
        for r in live[OPP]
        if r.is_closed and r.close_date and first_day <= r.close_date < next_first_day
    ]
    won = [r for r in closed if r.is_won]
    arr = sum((r.amount for r in won if r.amount is not None and r.currency == "EUR"), Decimal(0))
    new_scores = [
        r.score
        for r in live[SR]
        if r.score is not None
        and r.raw["person_properties"]["Customer Type"] == "New Customer"
        and r.created_at in in_year
    ]
    won_new = [r for r in won if r.deal_type == "New Customer"]
    referral = [r for r in won_new if r.lead_source == "Referral"]

    assert 900 <= len(qualified) <= 1100
    assert 45 <= 100 * len(won) / len(closed) <= 55
    assert Decimal(850_000) <= arr <= Decimal(1_150_000)
    assert len(new_scores) >= 100
    assert 70 <= nps(new_scores) <= 85
    assert 15 <= 100 * len(referral) / len(won_new) <= 25
