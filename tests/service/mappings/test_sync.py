"""Evaluation on sync: only affected key results, history only on change; the Tartempion
demo bound end to end through the real sync engine and demo connector."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select
from sqlmodel import Session

from connectors.demo.dataset import PARIS
from service.demo import demo_connector_id, load_tartempion
from service.mappings.demo import tartempion_specs
from service.mappings.service import bind, reevaluate_after_sync
from service.mappings.spec import parse_spec
from service.okr.models import KeyResult, KeyResultValue, Unit
from service.sync.engine import SyncEngine
from service.sync.models import Connector, SyncedRecord
from tests.conftest import FROZEN_NOW, FrozenClock, make_settings
from tests.service.mappings import reference
from tests.service.mappings.factories import (
    add_records,
    make_connector,
    make_key_result,
    make_workspace,
    record_row,
)

NOW = FROZEN_NOW


def history(session: Session, kr: KeyResult) -> list[KeyResultValue]:
    return list(
        session.exec(  # type: ignore[call-overload]
            select(KeyResultValue)
            .where(KeyResultValue.key_result_id == kr.id)
            .order_by(KeyResultValue.id)
        ).scalars()
    )


def test_given_mappings_on_two_kinds_when_one_kind_syncs_then_only_its_key_results_are_reevaluated(
    session: Session,
) -> None:
    ws = make_workspace(session)
    c = make_connector(session, ws)
    other = make_connector(session, ws)
    leads = make_key_result(session, ws, title="Leads")
    deals = make_key_result(session, ws, title="Deals")
    bind(
        session, ws, leads, parse_spec({"type": "count", "connector_id": c.id, "kind": "lead"}), NOW
    )
    bind(
        session,
        ws,
        deals,
        parse_spec({"type": "count", "connector_id": c.id, "kind": "opportunity"}),
        NOW,
    )
    assert (leads.value, deals.value) == (0, 0)
    add_records(session, [record_row(c, "lead"), record_row(c, "opportunity")])
    later = NOW + timedelta(minutes=15)

    assert reevaluate_after_sync(session, c.id or 0, {"survey_response"}, later) == 0
    assert reevaluate_after_sync(session, other.id or 0, {"lead", "opportunity"}, later) == 0
    assert (leads.value, deals.value) == (0, 0)

    assert reevaluate_after_sync(session, c.id or 0, {"lead"}, later) == 1
    assert (leads.value, deals.value) == (1, 0)
    points = history(session, leads)
    # The binding evaluated 0; the sync's new value is a new point, naming the version.
    assert [(p.value, p.at, p.source, p.mapping_version) for p in points] == [
        (0, NOW, "sync", 1),
        (1, later, "sync", 1),
    ]
    assert points[1].details is not None
    assert points[1].details["value_records"] == 1

    # Leads did not change (no new point); deals did.
    assert (
        reevaluate_after_sync(
            session, c.id or 0, {"lead", "opportunity"}, later + timedelta(minutes=15)
        )
        == 1
    )
    assert len(history(session, leads)) == 2
    assert [p.value for p in history(session, deals)] == [0, 1]


def test_given_a_mapping_whose_connector_lost_the_kind_when_synced_then_the_last_value_is_kept(
    session: Session,
) -> None:
    ws = make_workspace(session)
    c = make_connector(session, ws)
    kr = make_key_result(session, ws)
    add_records(session, [record_row(c, "lead")])
    bind(session, ws, kr, parse_spec({"type": "count", "connector_id": c.id, "kind": "lead"}), NOW)
    c.kinds = ["opportunity"]
    session.flush()
    add_records(session, [record_row(c, "lead")])
    assert reevaluate_after_sync(session, c.id or 0, {"lead"}, NOW) == 0
    assert kr.value == 1


def test_given_a_steady_nps_when_more_answers_arrive_then_responses_follow_without_a_new_point(
    session: Session,
) -> None:
    ws = make_workspace(session)
    c = make_connector(session, ws)
    kr = make_key_result(session, ws, unit=Unit.score)
    add_records(session, [record_row(c, "survey_response", score=10)])
    bind(session, ws, kr, parse_spec({"type": "nps", "connector_id": c.id}), NOW)
    add_records(session, [record_row(c, "survey_response", score=9)])
    assert reevaluate_after_sync(session, c.id or 0, {"survey_response"}, NOW) == 0
    assert kr.value == 100
    assert kr.value_details is not None
    assert kr.value_details["responses"] == 2
    assert len(history(session, kr)) == 1  # the binding's


# ---------------------------------------------------------------------------- the demo


NPS_TITLE = "NPS above 80 for new customers"

#: Instants the demo is loaded and synced at: the first minutes of a year in Paris (still
#: 31 December in UTC), a weekend just after New Year, midsummer, a leap day, the last
#: second of a year in Paris.
DEMO_MOMENTS = [
    datetime(2027, 1, 1, 0, 30, tzinfo=PARIS),
    datetime(2027, 1, 3, 10, 0, tzinfo=PARIS),
    datetime(2027, 7, 3, 3, 0, tzinfo=PARIS),
    datetime(2028, 2, 29, 12, 0, tzinfo=PARIS),
    datetime(2027, 12, 31, 23, 59, 59, tzinfo=PARIS),
]


@pytest.fixture(params=DEMO_MOMENTS, ids=lambda moment: moment.isoformat())
def tartempion(
    request: pytest.FixtureRequest, engine: Engine, database_url: str, clock: FrozenClock
) -> dict[str, Any]:
    """Tartempion loaded and bound at one of `DEMO_MOMENTS`, with its own configuration
    (last year's history, the live NPS stream) on a smaller dataset, synced twice; the
    app's clock reads the same moment."""
    now: datetime = request.param
    clock.now = now
    with Session(engine, expire_on_commit=False) as s:
        ws = load_tartempion(s, now)
        assert ws is not None
        s.commit()
        connector_id = demo_connector_id(s)
        assert connector_id is not None
        row = s.get(Connector, connector_id)
        assert row is not None
        row.config = row.config | {"size": 400, "now": now.isoformat()}
        s.commit()
    settings = make_settings(database_url)
    SyncEngine(engine, settings, clock=clock).run(connector_id)
    with Session(engine) as s:
        first = {
            kr.title: (kr.value, kr.value_details) for kr in s.exec(select(KeyResult)).scalars()
        }  # type: ignore[call-overload]
        points = s.execute(select(func.count()).select_from(KeyResultValue)).scalar_one()
    # A second sync re-reads the overlap: nothing may count twice, nothing change.
    SyncEngine(engine, settings, clock=clock).run(connector_id)
    return {"ws": ws, "connector_id": connector_id, "first": first, "points": points, "now": now}


def test_given_the_tartempion_demo_when_synced_then_its_five_values_equal_the_ground_truth(
    engine: Engine, tartempion: dict[str, Any]
) -> None:
    table = SyncedRecord.__table__  # type: ignore[attr-defined]
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(select(table))]
    assert rows
    now = tartempion["now"]
    year = now.astimezone(PARIS).year
    specs = tartempion_specs(tartempion["connector_id"])
    with Session(engine) as s:
        krs = {kr.title: kr for kr in s.exec(select(KeyResult)).scalars()}  # type: ignore[call-overload]
        second_points = s.execute(select(func.count()).select_from(KeyResultValue)).scalar_one()
    window = (date(year, 1, 1), date(year + 1, 1, 1))
    for title, spec in specs.items():
        expected = reference.evaluate(
            rows, spec, window, ZoneInfo("Europe/Paris"), now, currency="EUR"
        )
        value = krs[title].value
        assert tartempion["first"][title][0] == value, title
        if title == NPS_TITLE and expected is None:
            # Minutes into a year, before its first answer: the one value allowed to wait.
            assert value is None
            assert krs[title].value_details is not None
            assert krs[title].value_details["responses"] == 0
            continue
        assert expected is not None, title
        assert value is not None, title
        assert Decimal(repr(value)) == pytest.approx(expected, rel=Decimal("1e-12")), title
    nps = krs[NPS_TITLE].value_details
    assert nps is not None
    assert {"promoters", "passives", "detractors"} <= set(nps) or nps["responses"] == 0
    # The second sync read nothing new: no new history point.
    assert second_points == tartempion["points"]


def test_given_the_tartempion_demo_when_progress_and_explain_are_read_then_numbers_are_explained(
    client: TestClient, tartempion: dict[str, Any]
) -> None:
    tree = client.get(
        "/api/v1/progress",
        params={"period": "current"},
        headers={"X-Workspace": "tartempion"},
    )
    assert tree.status_code == 200, tree.text
    krs = [k for o in tree.json()["objectives"] for k in o["key_results"]]
    assert len(krs) == 5
    for k in krs:
        if k["value"] is None:
            # Only NPS may wait for its first answer, and its status says so.
            assert (k["title"], k["status"]) == (NPS_TITLE, "no_data"), k
        else:
            assert k["status"] in {"on_track", "at_risk", "off_track", "achieved"}, k
    assert all(k["last_synced_at"] is not None for k in krs)
    for k in krs:
        explained = client.get(
            f"/api/v1/key-results/{k['key_result_id']}/explain",
            headers={"X-Workspace": "tartempion"},
            params={"limit": 5},
        )
        assert explained.status_code == 200, explained.text
        body = explained.json()
        assert body["value"] == k["value"]
        assert body["sources"][0]["type"] == "demo"
        # A number is explained by its records; a 0 (a count on 1 January) has none.
        assert body["records"]["items"] or k["value"] in (0, None), (k, body)


@pytest.mark.parametrize(
    "start",
    [
        datetime(2027, 1, 1, 0, 30, tzinfo=PARIS),  # New Year's night
        datetime(2027, 3, 28, 2, 59, tzinfo=PARIS),  # a Sunday, as clocks jump to 03:00
        datetime(2027, 8, 15, 4, 0, tzinfo=PARIS),  # a holiday in August, at night
    ],
    ids=lambda moment: moment.isoformat(),
)
def test_given_the_demo_at_any_hour_when_minutes_pass_then_its_numbers_move(
    engine: Engine, database_url: str, start: datetime
) -> None:
    """The live NPS stream answers every two minutes, day and night: each sync five minutes
    apart brings new answers and a new history point."""
    now = [start.astimezone(UTC)]  # minutes are added in UTC: Paris skips 02:00-03:00
    with Session(engine, expire_on_commit=False) as s:
        assert load_tartempion(s, start) is not None
        s.commit()
        connector_id = demo_connector_id(s)
        assert connector_id is not None
        row = s.get(Connector, connector_id)
        assert row is not None
        row.config = row.config | {"size": 300}
        s.commit()
    sync = SyncEngine(engine, make_settings(database_url), clock=lambda: now[0])
    answers = []
    for _ in range(3):
        now[0] += timedelta(minutes=5)
        assert sync.run(connector_id).status == "succeeded"
        with Session(engine) as s:
            kr = s.exec(select(KeyResult).where(KeyResult.title == NPS_TITLE)).scalar_one()  # type: ignore[call-overload]
            assert kr.value is not None
            answers.append(kr.value_details["responses"])
    assert answers[0] < answers[1] < answers[2], answers


def test_given_the_demo_connector_when_bound_before_any_sync_then_values_wait_for_data(
    session: Session,
) -> None:
    ws = load_tartempion(session, NOW)
    assert ws is not None
    krs = list(session.exec(select(KeyResult)).scalars())  # type: ignore[call-overload]
    assert len(krs) == 5
    counted = {kr.title: kr.value for kr in krs}
    # No records yet: counts and sums are 0, ratios and NPS have no value.
    assert counted["Generate 1000 qualified leads by year end"] == 0
    assert counted["€1,000,000 ARR"] == 0
    assert counted["NPS above 80 for new customers"] is None
    assert counted["Convert 50% of validated business opportunities"] is None
