"""The mappings API: bind, version, validate, preview and explain (over HTTP)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError
from sqlalchemy import Engine, func, select
from sqlmodel import Session

from service.mappings.models import Mapping, MappingSource, MappingVersion
from service.mappings.spec import MetricSpec
from service.okr.models import KeyResultKind, KeyResultValue, Unit
from service.sync.models import SyncedRecord
from tests.conftest import FROZEN_NOW
from tests.service.mappings import reference
from tests.service.mappings.factories import (
    add_records,
    make_connector,
    make_key_result,
    make_workspace,
    record_row,
)

API = "/api/v1"
PROBLEM = "application/problem+json"


class Setup:
    """A workspace `acme` with a demo connector, records and key results, committed."""

    def __init__(self, engine: Engine) -> None:
        with Session(engine, expire_on_commit=False) as s:
            self.ws = make_workspace(s, "acme", tz="Europe/Paris")
            self.connector = make_connector(
                s, self.ws, last_success_at=FROZEN_NOW - timedelta(minutes=5)
            )
            self.other = make_connector(s, self.ws, kinds=["lead"])
            self.count_kr = make_key_result(s, self.ws, title="Leads", target=50)
            self.eur_kr = make_key_result(
                s, self.ws, title="ARR", unit=Unit.currency, currency="EUR", target=10_000
            )
            self.nps_kr = make_key_result(
                s, self.ws, title="NPS", kind=KeyResultKind.at_least, unit=Unit.score, target=50
            )
            c = self.connector
            rows = []
            for i in range(30):
                rows.append(
                    record_row(
                        c,
                        "lead",
                        source_id=f"L{i}",
                        created_at=datetime(2026, 1 + i % 6, 1 + i, 9, tzinfo=UTC)
                        if i < 28
                        else datetime(2025, 5, 5, tzinfo=UTC),
                        status="Qualified" if i % 3 else "Open",
                        deleted=i == 7,
                    )
                )
            for i in range(12):
                rows.append(
                    record_row(
                        c,
                        "opportunity",
                        source_id=f"O{i}",
                        close_date=date(2026 if i < 10 else 2025, 1 + i % 12, 10),
                        is_won=i % 2 == 0,
                        is_closed=True,
                        amount=Decimal("1234.56") + i,
                        currency="USD" if i == 4 else "EUR",
                    )
                )
            for i, score in enumerate([10, 9, 9, 8, 7, 6, 0, 10]):
                rows.append(
                    record_row(
                        c,
                        "survey_response",
                        source_id=f"{40_000_000 + i}",
                        created_at=datetime(2026, 3, 1 + i, tzinfo=UTC),
                        score=score,
                        raw={
                            "permalink": f"https://demo.example/r/{i}",
                            "person_properties": {"Customer Type": "New Customer"},
                        },
                    )
                )
            add_records(s, rows)
            self.rows = rows
            s.commit()


@pytest.fixture
def setup(engine: Engine) -> Setup:
    return Setup(engine)


def count_spec(setup: Setup, **extra: Any) -> dict[str, Any]:
    return {
        "type": "count",
        "connector_id": setup.connector.id,
        "kind": "lead",
        "filters": [{"field": "status", "op": "eq", "value": "Qualified"}],
    } | extra


def sum_spec(setup: Setup, **extra: Any) -> dict[str, Any]:
    return {
        "type": "sum",
        "field": "amount",
        "connector_id": setup.connector.id,
        "kind": "opportunity",
        "filters": [{"field": "is_won", "op": "eq", "value": True}],
        "date_field": "closed",
    } | extra


def nps_spec(setup: Setup) -> dict[str, Any]:
    return {
        "type": "nps",
        "connector_id": setup.connector.id,
        "filters": [
            {"field": "raw.person_properties.Customer Type", "op": "eq", "value": "New Customer"}
        ],
    }


def ratio_spec(setup: Setup) -> dict[str, Any]:
    base = {"type": "count", "connector_id": setup.connector.id, "kind": "opportunity"}
    return {
        "type": "ratio",
        "numerator": base
        | {"filters": [{"field": "is_won", "op": "eq", "value": True}], "date_field": "closed"},
        "denominator": base
        | {"filters": [{"field": "is_closed", "op": "eq", "value": True}], "date_field": "closed"},
    }


def bind(client: TestClient, kr_id: int | None, spec: dict[str, Any]) -> dict[str, Any]:
    response = client.post(f"{API}/mappings", json={"key_result_id": kr_id, "spec": spec})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def problem(response: Any, status: int, field: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["field"] == field, body
    assert body["detail"]
    return body


def table_counts(engine: Engine) -> dict[str, int]:
    with Session(engine) as s:
        return {
            t.__name__: s.execute(select(func.count()).select_from(t)).scalar_one()
            for t in (Mapping, MappingVersion, MappingSource, KeyResultValue, SyncedRecord)
        }


# ---------------------------------------------------------------------------- CRUD + versions


def test_given_a_key_result_when_bound_then_it_is_evaluated_and_history_names_the_version(
    client: TestClient, setup: Setup, engine: Engine
) -> None:
    body = bind(client, setup.count_kr.id, count_spec(setup))
    # 28 leads in 2026, every third Open, one deleted (i=7 is Qualified): 18 - 1 = 17... computed:
    expected = sum(
        1
        for r in setup.rows
        if r["kind"] == "lead"
        and not r["deleted"]
        and r["status"] == "Qualified"
        and r["created_at"].year == 2026
    )
    assert body["value"] == expected
    assert body["version"] == 1
    history = client.get(f"{API}/key-results/{setup.count_kr.id}/history").json()
    items = history["items"] if isinstance(history, dict) else history
    assert [(p["value"], p["mapping_id"], p["mapping_version"], p["source"]) for p in items] == [
        (expected, body["id"], 1, "sync")
    ]
    assert (
        client.get(f"{API}/mappings/{body['id']}").json()["spec"]["filters"][0]["value"]
        == "Qualified"
    )
    listed = client.get(f"{API}/mappings", params={"key_result_id": setup.count_kr.id}).json()
    assert [m["id"] for m in listed["items"]] == [body["id"]]


def test_given_a_mapping_when_its_spec_changes_then_a_new_version_is_kept_and_the_value_recomputed(
    client: TestClient, setup: Setup
) -> None:
    first = bind(client, setup.count_kr.id, count_spec(setup))
    changed = client.put(
        f"{API}/mappings/{first['id']}",
        json={
            "spec": count_spec(setup, filters=[{"field": "status", "op": "eq", "value": "Open"}])
        },
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["version"] == 2
    # Same spec again: a version is still recorded, but no history point (same value).
    again = client.put(
        f"{API}/mappings/{first['id']}",
        json={
            "spec": count_spec(setup, filters=[{"field": "status", "op": "eq", "value": "Open"}])
        },
    ).json()
    assert again["version"] == 3
    versions = client.get(f"{API}/mappings/{first['id']}/versions").json()
    assert [v["version"] for v in versions] == [1, 2, 3]
    assert versions[0]["spec"]["filters"][0]["value"] == "Qualified"
    history = client.get(f"{API}/key-results/{setup.count_kr.id}/history").json()
    items = history["items"] if isinstance(history, dict) else history
    assert sorted(p["mapping_version"] for p in items) == [1, 2]


def test_given_a_bound_key_result_when_bound_again_then_409_names_key_result_id(
    client: TestClient, setup: Setup
) -> None:
    bind(client, setup.count_kr.id, count_spec(setup))
    response = client.post(
        f"{API}/mappings", json={"key_result_id": setup.count_kr.id, "spec": count_spec(setup)}
    )
    problem(response, 409, "key_result_id")


def test_given_a_mapping_when_deleted_then_the_key_result_keeps_its_value_and_history(
    client: TestClient, setup: Setup, engine: Engine
) -> None:
    body = bind(client, setup.count_kr.id, count_spec(setup))
    assert client.delete(f"{API}/mappings/{body['id']}").status_code == 204
    assert client.get(f"{API}/mappings/{body['id']}").status_code == 404
    kr = client.get(f"{API}/key-results/{setup.count_kr.id}").json()
    assert kr["value"] == body["value"]
    assert table_counts(engine)["MappingVersion"] == 0
    problem(client.get(f"{API}/key-results/{setup.count_kr.id}/explain"), 422, "key_result_id")


def test_given_another_workspace_when_its_mapping_is_read_then_404(
    client: TestClient, setup: Setup, engine: Engine
) -> None:
    body = bind(client, setup.count_kr.id, count_spec(setup))
    with Session(engine) as s:
        make_workspace(s, "other")
        s.commit()
    response = client.get(f"{API}/mappings/{body['id']}", headers={"X-Workspace": "other"})
    assert response.status_code == 404


# ---------------------------------------------------------------------------- validation


def _bad_specs(setup: Setup) -> list[tuple[str, int | None, dict[str, Any], str]]:
    c = setup.connector.id
    lead = {"type": "count", "connector_id": c, "kind": "lead"}
    return [
        ("unknown connector", setup.count_kr.id, lead | {"connector_id": 999}, "spec.connector_id"),
        (
            "kind the connector type never reads",
            setup.count_kr.id,
            lead | {"kind": "deal"},
            "spec.kind",
        ),
        (
            "kind not synced by this connector",
            setup.count_kr.id,
            lead | {"connector_id": setup.other.id, "kind": "opportunity"},
            "spec.kind",
        ),
        ("not a kind at all", setup.count_kr.id, lead | {"kind": "invoice"}, "spec.kind"),
        (
            "unknown field",
            setup.count_kr.id,
            lead | {"filters": [{"field": "colour", "op": "eq", "value": "x"}]},
            "spec.filters.0.field",
        ),
        (
            "unknown raw field",
            setup.count_kr.id,
            lead | {"filters": [{"field": "raw.Colour__c", "op": "eq", "value": "x"}]},
            "spec.filters.0.field",
        ),
        (
            "operator unfit for a boolean",
            setup.count_kr.id,
            lead | {"filters": [{"field": "is_won", "op": "contains", "value": "x"}]},
            "spec.filters.0.op",
        ),
        (
            "operator unfit for a string",
            setup.count_kr.id,
            lead | {"filters": [{"field": "status", "op": "gt", "value": "a"}]},
            "spec.filters.0.op",
        ),
        (
            "unknown operator",
            setup.count_kr.id,
            lead | {"filters": [{"field": "status", "op": "like", "value": "a"}]},
            "spec.filters.0.op",
        ),
        (
            "value of the wrong type",
            setup.count_kr.id,
            lead | {"filters": [{"field": "amount", "op": "gt", "value": "lots"}]},
            "spec.filters.0.value",
        ),
        (
            "between with one value",
            setup.count_kr.id,
            lead | {"filters": [{"field": "score", "op": "between", "value": [1]}]},
            "spec.filters.0.value",
        ),
        (
            "in with no list",
            setup.count_kr.id,
            lead | {"filters": [{"field": "status", "op": "in", "value": "Open"}]},
            "spec.filters.0.value",
        ),
        (
            "a filter without field",
            setup.count_kr.id,
            lead | {"filters": [{"op": "eq", "value": 1}]},
            "spec.filters.0.field",
        ),
        (
            "nested group",
            setup.count_kr.id,
            lead
            | {
                "filters": [
                    {
                        "match": "any",
                        "filters": [
                            {"field": "status", "op": "eq", "value": "a"},
                            {"field": "status", "op": "lt", "value": "b"},
                        ],
                    }
                ]
            },
            "spec.filters.0.filters.1.op",
        ),
        (
            "ratio side",
            setup.count_kr.id,
            {
                "type": "ratio",
                "numerator": lead | {"filters": [{"field": "nope", "op": "eq", "value": 1}]},
                "denominator": lead,
            },
            "spec.numerator.filters.0.field",
        ),
        (
            "ratio side shape",
            setup.count_kr.id,
            {"type": "ratio", "numerator": lead, "denominator": lead | {"connector_id": "x"}},
            "spec.denominator.connector_id",
        ),
        (
            "sum of a text field",
            setup.count_kr.id,
            lead | {"type": "sum", "field": "status"},
            "spec.field",
        ),
        (
            "average of a raw text field",
            setup.count_kr.id,
            lead | {"type": "average", "field": "raw.Company"},
            "spec.field",
        ),
        (
            "currency key result fed another currency",
            setup.eur_kr.id,
            sum_spec(setup) | {"filters": [{"field": "currency", "op": "eq", "value": "USD"}]},
            "spec.filters.0.value",
        ),
        ("amounts with no currency", setup.count_kr.id, sum_spec(setup), "spec.field"),
        (
            "close date of a lead",
            setup.count_kr.id,
            lead | {"date_field": "closed"},
            "spec.date_field",
        ),
        (
            "nps over leads",
            setup.nps_kr.id,
            nps_spec(setup) | {"kind": "lead", "filters": []},
            "spec.kind",
        ),
        (
            "nps over a text score",
            setup.nps_kr.id,
            nps_spec(setup) | {"score_field": "raw.comment"},
            "spec.score_field",
        ),
        ("unknown metric type", setup.count_kr.id, lead | {"type": "median"}, "spec.type"),
        (
            "window backwards",
            setup.count_kr.id,
            lead | {"window": {"type": "custom", "start": "2026-02-01", "end": "2026-01-01"}},
            "spec.window",
        ),
        (
            "rolling zero days",
            setup.count_kr.id,
            lead | {"window": {"type": "rolling", "days": 0}},
            "spec.window.days",
        ),
        ("extra key", setup.count_kr.id, lead | {"colour": "red"}, "spec.colour"),
        ("unknown key result", 999, lead, "key_result_id"),
        (
            "a huge amount",
            setup.count_kr.id,
            lead | {"filters": [{"field": "amount", "op": "gt", "value": 1e20}]},
            "spec.filters.0.value",
        ),
        (
            "too many decimals",
            setup.count_kr.id,
            lead | {"filters": [{"field": "score", "op": "gt", "value": "1e-20"}]},
            "spec.filters.0.value",
        ),
        (
            "a NUL character",
            setup.count_kr.id,
            lead | {"filters": [{"field": "status", "op": "in", "value": ["a", "b\u0000"]}]},
            "spec.filters.0.value.1",
        ),
        (
            "a moment in year 1",
            setup.count_kr.id,
            lead
            | {
                "filters": [
                    {"field": "created_at", "op": "gt", "value": "0001-01-01T00:00:00+01:00"}
                ]
            },
            "spec.filters.0.value",
        ),
        (
            "a window in year 1",
            setup.count_kr.id,
            lead | {"window": {"type": "custom", "start": "0001-01-01", "end": "2026-01-01"}},
            "spec.window.start",
        ),
        (
            "a connector id past any id",
            setup.count_kr.id,
            lead | {"connector_id": 2**40},
            "spec.connector_id",
        ),
    ]


def test_given_invalid_specs_when_bound_or_previewed_then_422_names_the_field_and_nothing_is_stored(
    client: TestClient, setup: Setup, engine: Engine
) -> None:
    before = table_counts(engine)
    for label, kr_id, spec, field in _bad_specs(setup):
        body = problem(
            client.post(f"{API}/mappings", json={"key_result_id": kr_id, "spec": spec}), 422, field
        )
        assert body["errors"][0]["field"] == field, label
        problem(
            client.post(f"{API}/mappings/preview", json={"key_result_id": kr_id, "spec": spec}),
            422,
            field,
        )
    assert table_counts(engine) == before


def test_given_a_mapping_when_updated_with_an_invalid_spec_then_422_and_the_version_is_unchanged(
    client: TestClient, setup: Setup
) -> None:
    body = bind(client, setup.count_kr.id, count_spec(setup))
    spec = count_spec(setup, filters=[{"field": "status", "op": "between", "value": ["a", "b"]}])
    problem(
        client.put(f"{API}/mappings/{body['id']}", json={"spec": spec}), 422, "spec.filters.0.op"
    )
    assert client.get(f"{API}/mappings/{body['id']}").json()["version"] == 1


# ---------------------------------------------------------------------------- preview


def test_given_a_spec_when_previewed_then_value_counts_and_sample_come_back_and_nothing_is_stored(
    client: TestClient, setup: Setup, engine: Engine
) -> None:
    before = table_counts(engine)
    response = client.post(
        f"{API}/mappings/preview",
        json={"key_result_id": setup.eur_kr.id, "spec": sum_spec(setup), "sample_size": 3},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    won_2026 = [
        r
        for r in setup.rows
        if r["kind"] == "opportunity" and r["is_won"] and r["close_date"].year == 2026
    ]
    eur = [r for r in won_2026 if r["currency"] == "EUR"]
    assert Decimal(str(body["value"])) == sum(Decimal(r["amount_e4"]) / 10_000 for r in eur)
    [part] = body["parts"]
    assert part["records_counted"] == len(eur)
    assert part["other_currencies"] == {"USD": 1}
    assert part["window"]["timezone"] == "Europe/Paris"
    assert part["window"]["start_at"] == "2026-01-01T00:00:00+01:00"
    assert len(body["sample"]["value"]) == 3
    assert all(r["currency"] == "EUR" for r in body["sample"]["value"])
    assert table_counts(engine) == before


def test_given_no_key_result_when_a_spec_with_its_own_window_is_previewed_then_it_evaluates(
    client: TestClient, setup: Setup
) -> None:
    spec = count_spec(setup, window={"type": "custom", "start": "2026-01-01", "end": "2026-02-01"})
    body = client.post(f"{API}/mappings/preview", json={"spec": spec}).json()
    assert body["value"] == sum(
        1
        for r in setup.rows
        if r["kind"] == "lead"
        and not r["deleted"]
        and r["status"] == "Qualified"
        and r["created_at"] < datetime(2026, 1, 31, 23, tzinfo=UTC)
        and r["created_at"] >= datetime(2025, 12, 31, 23, tzinfo=UTC)
    )


# ---------------------------------------------------------------------------- explain


def _all_records(
    client: TestClient, kr_id: int, part: str | None = None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    params: dict[str, Any] = {"limit": 2}
    if part:
        params["part"] = part
    first = client.get(f"{API}/key-results/{kr_id}/explain", params=params)
    assert first.status_code == 200, first.text
    body = first.json()
    items = list(body["records"]["items"])
    cursor = body["records"]["next_cursor"]
    while cursor:
        page = client.get(
            f"{API}/key-results/{kr_id}/explain", params=params | {"cursor": cursor}
        ).json()
        items += page["records"]["items"]
        cursor = page["records"]["next_cursor"]
    return body, items


def _rows_by_id(engine: Engine, ids: list[int]) -> list[dict[str, Any]]:
    table = SyncedRecord.__table__  # type: ignore[attr-defined]
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(table).where(table.c.id.in_(ids)))]


@pytest.mark.parametrize("which", ["count", "sum", "nps", "ratio"])
def test_given_a_bound_key_result_when_explained_then_the_record_ids_re_aggregate_to_the_value(
    client: TestClient, setup: Setup, engine: Engine, which: str
) -> None:
    kr, spec = {
        "count": (setup.count_kr, count_spec(setup)),
        "sum": (setup.eur_kr, sum_spec(setup)),
        "nps": (setup.nps_kr, nps_spec(setup)),
        "ratio": (setup.count_kr, ratio_spec(setup)),
    }[which]
    mapping = bind(client, kr.id, spec)
    parts = ["numerator", "denominator"] if which == "ratio" else [None]
    aggregates = {}
    for part in parts:
        body, items = _all_records(client, kr.id or 0, part)
        ids = [r["id"] for r in items]
        assert len(ids) == len(set(ids))
        rows = _rows_by_id(engine, ids)
        assert len(rows) == len(ids)
        # Re-aggregate the listed records with no filter and no window: they must be exactly
        # the records counted.
        bare = {"type": spec.get("type"), "connector_id": setup.connector.id}
        if which == "ratio":
            aggregates[part] = len(rows)
        elif which == "count":
            assert len(rows) == body["value"]
        elif which == "sum":
            assert sum(Decimal(r["amount_e4"]) / 10_000 for r in rows) == Decimal(
                str(body["value"])
            )
            assert {r["currency"] for r in rows} == {"EUR"}
        else:
            scores = [r["score"] for r in rows]
            p, d = sum(s >= 9 for s in scores), sum(s <= 6 for s in scores)
            assert body["value"] == pytest.approx(100 * (p - d) / len(scores))
            assert body["details"]["responses"] == len(scores)
            assert all(r["url"] and r["url"].startswith("https://demo.example/r/") for r in items)
        del bare
        assert body["mapping_id"] == mapping["id"]
        assert body["mapping_version"] == 1
        assert body["timezone"] == "Europe/Paris"
        assert body["sources"][0]["connector_id"] == setup.connector.id
        assert body["sources"][0]["last_success_at"] is not None
        assert body["value"] == body["stored_value"]
    if which == "ratio":
        assert body["value"] == pytest.approx(
            100 * aggregates["numerator"] / aggregates["denominator"]
        )
        assert body["details"]["numerator"] == aggregates["numerator"]
        assert body["details"]["denominator"] == aggregates["denominator"]


def test_given_a_ratio_when_explained_with_an_unknown_part_then_422_names_part(
    client: TestClient, setup: Setup
) -> None:
    bind(client, setup.count_kr.id, ratio_spec(setup))
    response = client.get(
        f"{API}/key-results/{setup.count_kr.id}/explain", params={"part": "value"}
    )
    problem(response, 422, "part")


# ---------------------------------------------------------------------------- progress


def test_given_a_mapped_key_result_when_progress_is_read_then_freshness_and_ambition_are_served(
    client: TestClient, setup: Setup, engine: Engine
) -> None:
    # Previous year: 2 qualified leads (i=28, 29 are in 2025; i=28 is Qualified? 28 % 3 != 0).
    bind(client, setup.count_kr.id, count_spec(setup))
    progress = client.get(f"{API}/key-results/{setup.count_kr.id}/progress").json()
    baseline = sum(
        1
        for r in setup.rows
        if r["kind"] == "lead"
        and not r["deleted"]
        and r["status"] == "Qualified"
        and r["created_at"].year == 2025
    )
    assert progress["baseline_previous_period"] == baseline
    ratio = 50 / baseline
    assert progress["target_to_baseline_ratio"] == pytest.approx(ratio, abs=1e-4)
    assert progress["ambition"] == (
        "unrealistic" if ratio > 3 else "stretch" if ratio > 1.5 else "realistic"
    )
    assert progress["last_synced_at"] == (FROZEN_NOW - timedelta(minutes=5)).isoformat().replace(
        "+00:00", "Z"
    )
    assert progress["stale"] is False
    bind(client, setup.nps_kr.id, nps_spec(setup))
    nps = client.get(f"{API}/key-results/{setup.nps_kr.id}/progress").json()
    assert nps["responses"] == 8
    # An unmapped key result: manual, never stale.
    eur = client.get(f"{API}/key-results/{setup.eur_kr.id}/progress").json()
    assert (eur["stale"], eur["last_synced_at"], eur["ambition"]) == (False, None, None)


def test_given_a_source_that_has_not_synced_in_time_when_progress_is_read_then_it_is_stale(
    client: TestClient, setup: Setup, engine: Engine
) -> None:
    bind(
        client,
        setup.count_kr.id,
        ratio_spec(setup)
        | {"denominator": {"type": "count", "connector_id": setup.other.id, "kind": "lead"}},
    )
    progress = client.get(f"{API}/key-results/{setup.count_kr.id}/progress").json()
    # `other` never synced: the oldest sync is unknown and the value is stale.
    assert progress["stale"] is True
    assert progress["last_synced_at"] is None


def test_given_the_openapi_document_then_specs_are_documented_with_examples(
    client: TestClient,
) -> None:
    doc = client.get("/openapi.json").json()
    post = doc["paths"]["/api/v1/mappings"]["post"]
    examples = post["requestBody"]["content"]["application/json"]["examples"]
    assert {"count", "sum", "ratio", "nps"} <= set(examples)
    assert "/api/v1/mappings/preview" in doc["paths"]
    assert "/api/v1/key-results/{key_result_id}/explain" in doc["paths"]
    assert "RatioSpec" in doc["components"]["schemas"]


def test_reference_helpers_are_consistent() -> None:
    # The ground-truth helper treats a raw number of the wrong JSON type as absent.
    row = {"kind": "opportunity", "raw": {"Amount": "12"}, "amount_e4": None}
    assert reference.field_value(row, "raw.Amount") is None
    assert reference.field_value(row | {"raw": {"Amount": 1.5}}, "raw.Amount") == Decimal("1.5")


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_given_any_json_in_a_spec_when_previewed_then_the_answer_is_200_or_a_422_never_a_500(
    client: TestClient, setup: Setup, data: st.DataObject
) -> None:
    spec = data.draw(
        st.sampled_from([count_spec(setup), sum_spec(setup), nps_spec(setup), ratio_spec(setup)])
    )
    spec = json.loads(json.dumps(spec))
    # Replace one value somewhere in the spec with arbitrary JSON.
    node: Any = spec
    path = data.draw(st.lists(st.integers(0, 5), min_size=1, max_size=4))
    for step in path[:-1]:
        children = (
            list(node)
            if isinstance(node, dict)
            else list(range(len(node)))
            if isinstance(node, list)
            else []
        )
        if not children or not isinstance(node[children[step % len(children)]], dict | list):
            break
        node = node[children[step % len(children)]]
    keys = list(node) if isinstance(node, dict) else list(range(len(node)))
    if keys:
        node[keys[path[-1] % len(keys)]] = data.draw(JSON)
    response = client.post(
        f"{API}/mappings/preview", json={"key_result_id": setup.eur_kr.id, "spec": spec}
    )
    structurally_valid = True
    try:
        TypeAdapter(MetricSpec).validate_python(spec)
    except ValidationError:
        structurally_valid = False
    if response.status_code == 200:
        # Only a spec the model accepts can be evaluated, and the answer is a preview.
        assert structurally_valid, spec
        body = response.json()
        assert set(body) == {"value", "details", "parts", "sample"}
        assert body["value"] is None or isinstance(body["value"], int | float)
    else:
        # Anything else is a 422 naming the offending place in the spec; a spec the model
        # refuses is never evaluated.
        assert response.status_code == 422, (spec, response.text)
        assert response.headers["content-type"].startswith(PROBLEM)
        assert response.json()["field"].startswith("spec"), response.json()


def test_given_a_cursor_past_any_record_when_explained_then_the_page_is_empty(
    client: TestClient, setup: Setup
) -> None:
    import base64

    bind(client, setup.count_kr.id, count_spec(setup))
    cursor = base64.urlsafe_b64encode(f"id:{2**70}".encode()).decode().rstrip("=")
    response = client.get(
        f"{API}/key-results/{setup.count_kr.id}/explain", params={"cursor": cursor}
    )
    assert response.status_code == 200, response.text
    assert response.json()["records"] == {"part": "value", "items": [], "next_cursor": None}


def test_given_a_single_currency_eur_org_when_a_usd_key_result_sums_its_amounts_then_422(
    client: TestClient, setup: Setup, engine: Engine
) -> None:
    with Session(engine, expire_on_commit=False) as s:
        org = make_connector(
            s, setup.ws, type="salesforce", config={"multi_currency": False}, kinds=["opportunity"]
        )
        usd = make_key_result(
            s, setup.ws, title="US ARR", unit=Unit.currency, currency="USD", target=1000
        )
        s.commit()
    before = table_counts(engine)
    spec = sum_spec(setup) | {"connector_id": org.id}
    for path in ("/mappings", "/mappings/preview"):
        body = problem(
            client.post(f"{API}{path}", json={"key_result_id": usd.id, "spec": spec}),
            422,
            "spec.connector_id",
        )
        assert "only in EUR" in body["errors"][0]["message"]
    assert table_counts(engine) == before
