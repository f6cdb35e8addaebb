"""The Tartempion demo of PRODUCT.md: idempotent, and exactly the seed's OKRs."""

from __future__ import annotations

from datetime import UTC, date, datetime

from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select
from sqlmodel import Session, SQLModel

import service.models  # noqa: F401 - registers every table
from service.demo import load_tartempion
from service.main import create_app
from service.okr.models import Period
from tests.conftest import FROZEN_NOW, FrozenClock, bearer, issue_token, make_settings
from tests.factories import API, list_all, ok

DEMO = "tartempion"

#: PRODUCT.md's table: key result -> (kind, unit, start, target, currency).
KEY_RESULTS = {
    "Generate 1000 qualified leads by year end": ("increase", "count", 0, 1000, None),
    "Convert 50% of validated business opportunities": ("increase", "percent", 0, 50, None),
    "€1,000,000 ARR": ("increase", "currency", 0, 1_000_000, "EUR"),
    "NPS above 80 for new customers": ("at_least", "score", None, 80, None),
    "20% of new customers through referral (word of mouth)": (
        "at_least",
        "percent",
        None,
        20,
        None,
    ),
}
O1 = "Reach €1M ARR"
O2 = "Create a differentiating commercial approach: a unique customer experience"
INITIATIVES = {
    "Implement a new Sales Engagement Platform",
    "Rework the Sales playbook",
    "Organise 3 team-building events in Q1",
}


def _counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            table.name: conn.execute(select(func.count()).select_from(table)).scalar_one()
            for table in SQLModel.metadata.sorted_tables
        }


def test_given_an_empty_database_when_the_demo_loads_twice_then_it_exists_once(
    engine: Engine,
) -> None:
    with Session(engine) as session:
        assert load_tartempion(session, FROZEN_NOW) is not None
        session.commit()
    once = _counts(engine)
    with Session(engine) as session:
        assert load_tartempion(session, FROZEN_NOW) is None
        session.commit()
    assert _counts(engine) == once
    assert once["workspace"] == 1
    assert (once["objective"], once["key_result"], once["initiative"]) == (2, 5, 3)


def test_given_the_demo_when_read_over_the_api_then_it_matches_product_md(
    engine: Engine, client: TestClient
) -> None:
    with Session(engine) as session:
        load_tartempion(session, FROZEN_NOW)
        session.commit()
    ws = ok(client.get(f"{API}/workspaces/{DEMO}"))
    assert ws["name"] == "Tartempion"
    periods = {p["name"]: p for p in list_all(client, "periods", ws=DEMO)}
    # The current calendar year, so that expected progress and status mean something.
    assert periods["2026"]["start"] == "2026-01-01"
    assert periods["2026"]["end"] == "2027-01-01"
    objectives = list_all(client, "objectives", ws=DEMO)
    assert [o["title"] for o in objectives] == [O1, O2]
    assert {o["period_id"] for o in objectives} == {periods["2026"]["id"]}
    krs = list_all(client, "key-results", ws=DEMO)
    got = {
        kr["title"]: (
            kr["kind"],
            kr["unit"],
            kr["start"] if kr["kind"] != "at_least" else None,
            kr["target"],
            kr["currency"],
        )
        for kr in krs
    }
    assert got == KEY_RESULTS
    by_objective = {
        o["title"]: {k["title"] for k in krs if k["objective_id"] == o["id"]} for o in objectives
    }
    assert by_objective == {O1: set(list(KEY_RESULTS)[:3]), O2: set(list(KEY_RESULTS)[3:])}
    initiatives = list_all(client, "initiatives", ws=DEMO)
    assert {i["title"] for i in initiatives} == INITIATIVES
    kr_ids = {k["id"] for k in krs}
    assert all(i["key_result_ids"] and set(i["key_result_ids"]) <= kr_ids for i in initiatives)
    for kr in krs:
        progress = ok(
            client.get(f"{API}/key-results/{kr['id']}/progress", headers={"X-Workspace": DEMO})
        )
        assert 0 <= progress["expected_progress"] <= 1
        assert progress["status"] in {"no_data", "achieved", "on_track", "at_risk", "off_track"}


def test_given_the_demo_setting_when_the_app_starts_twice_then_the_demo_is_not_duplicated(
    database_url: str, engine: Engine, clock: FrozenClock
) -> None:
    settings = make_settings(database_url, load_demo=True)
    for _ in range(2):
        app = create_app(settings, engine, clock=clock)
        with TestClient(app, raise_server_exceptions=False) as client:
            client.headers.update(bearer(issue_token(engine)))
            slugs = [w["slug"] for w in list_all(client, "workspaces")]
            assert slugs == [DEMO]
            assert len(list_all(client, "objectives")) == 2
            assert len(list_all(client, "key-results")) == 5
            assert len(list_all(client, "initiatives")) == 3


def test_given_another_year_when_the_demo_loads_then_its_periods_are_that_year(
    engine: Engine,
) -> None:
    with Session(engine) as session:
        load_tartempion(session, datetime(2031, 5, 1, tzinfo=UTC))
        session.commit()
    with engine.connect() as conn:
        rows = conn.execute(select(Period.name, Period.start, Period.end)).all()
    periods = {name: (start, end) for name, start, end in rows}
    assert periods["2031"] == (date(2031, 1, 1), date(2032, 1, 1))
    assert periods["2031-Q1"] == (date(2031, 1, 1), date(2031, 4, 1))
    assert periods["2031-Q4"] == (date(2031, 10, 1), date(2032, 1, 1))
