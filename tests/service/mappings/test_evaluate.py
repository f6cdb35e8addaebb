"""SQL evaluation against an independent Python ground truth, on generated datasets
(SQLite, and PostgreSQL when OKR_TEST_DATABASE_URL is set)."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from sqlmodel import Session

from service.errors import InvalidError
from service.mappings import evaluate as ev
from service.mappings.spec import parse_spec
from service.okr.models import KeyResult, Unit
from service.sync.models import Connector
from service.workspaces.models import Workspace
from tests.service.mappings import reference
from tests.service.mappings.factories import (
    add_records,
    make_connector,
    make_key_result,
    make_workspace,
    record_row,
)

PARIS = ZoneInfo("Europe/Paris")
NOW = datetime(2026, 7, 2, 12, tzinfo=UTC)
KR_WINDOW = (date(2026, 1, 1), date(2027, 1, 1))
DB_SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

STATUSES = ["Open", "Working", "Qualified", "Unqualified", "Qualified "]
SOURCES = ["Web", "Referral", "Partner", None]
CURRENCIES = ["EUR", "EUR", "EUR", "USD", None]
CUSTOMER_TYPES = ["New Customer", "Existing Customer", "new customer"]


def random_rows(rng: random.Random, connectors: list[Connector], n: int) -> list[dict[str, Any]]:
    """Records of every kind spread over 2025-2027, some deleted, some with odd raw types."""
    rows = []
    span = int(
        (datetime(2027, 6, 1, tzinfo=UTC) - datetime(2025, 6, 1, tzinfo=UTC)).total_seconds()
    )
    for i in range(n):
        connector = rng.choice(connectors)
        kind = rng.choice(["lead", "opportunity", "survey_response"])
        created = datetime(2025, 6, 1, tzinfo=UTC) + timedelta(seconds=rng.randrange(span))
        if rng.random() < 0.1:
            # Exactly on a local midnight: the half-open edges must hold.
            day = created.astimezone(PARIS).date()
            created = datetime.combine(day, time.min, tzinfo=PARIS).astimezone(UTC)
        modified = created + timedelta(hours=rng.randrange(0, 24 * 90))
        fields: dict[str, Any] = {"deleted": rng.random() < 0.1}
        raw: dict[str, Any] = {}
        if kind == "lead":
            status = rng.choice(STATUSES)
            fields |= {"status": status, "lead_source": rng.choice(SOURCES)}
            raw = {
                "Status": status,
                "LeadSource": fields["lead_source"],
                "IsConverted": rng.choice([True, False, None, "true"]),
                "ConvertedDate": rng.choice(
                    [None, (created.date() + timedelta(days=9)).isoformat()]
                ),
            }
        elif kind == "opportunity":
            won = rng.choice([True, False, None])
            close = created.date() + timedelta(days=rng.randrange(0, 120))
            amount = rng.choice([None, Decimal(rng.randrange(0, 10**7)) / 100])
            fields |= {
                "is_won": won,
                "is_closed": won is not None,
                "close_date": close,
                "currency": rng.choice(CURRENCIES),
                "deal_type": rng.choice(["New Customer", "Existing Customer"]),
                "lead_source": rng.choice(SOURCES),
                "amount": amount,
            }
            raw_amount: Any = rng.choice(
                [None, rng.randrange(0, 4000) / 4, rng.randrange(0, 5000), "12.5"]
            )
            raw = {"Amount": raw_amount, "IsWon": won, "Type": fields["deal_type"]}
        else:
            fields |= {"score": rng.choice([None, *range(11)])}
            raw = {
                "person_properties": {"Customer Type": rng.choice(CUSTOMER_TYPES)},
                "comment": rng.choice([None, "Super équipe", "slow support", 3]),
            }
        rows.append(
            record_row(
                connector,
                kind,
                source_id=f"R{i}",
                created_at=created,
                modified_at=modified,
                raw=raw,
                **fields,
            )
        )
    return rows


class World:
    def __init__(self, session: Session, rows: list[dict[str, Any]], connectors: list[int]) -> None:
        self.session = session
        self.rows = rows
        self.connectors = connectors
        self.ws: Workspace
        self.kr: KeyResult


@pytest.fixture
def world(session: Session) -> World:
    ws = make_workspace(session, tz="Europe/Paris")
    connectors = [make_connector(session, ws), make_connector(session, ws)]
    kr = make_key_result(session, ws, unit=Unit.currency, currency="EUR", target=1000)
    rows = random_rows(random.Random(20260702), connectors, 1500)
    add_records(session, rows)
    w = World(session, rows, [c.id for c in connectors if c.id is not None])
    w.ws, w.kr = ws, kr
    return w


def pins_another_currency(spec: dict[str, Any]) -> bool:
    """Whether a side sums EUR amounts while its filters keep only other currencies (a spec
    the mapping layer rightly refuses for a EUR key result)."""
    sides = [spec["numerator"], spec["denominator"]] if spec["type"] == "ratio" else [spec]
    for side in sides:
        if side.get("field") != "amount" or side.get("match", "all") != "all":
            continue
        for f in side.get("filters", []):
            if f.get("field") == "currency" and f["op"] in ("eq", "in"):
                codes = f["value"] if isinstance(f["value"], list) else [f["value"]]
                if "EUR" not in codes:
                    return True
    return False


def sql_value(w: World, spec: dict[str, Any], now: datetime = NOW) -> Decimal | None:
    ctx = ev.context_for(w.session, w.ws, now, w.kr)
    result = ev.evaluate(w.session, ctx, ev.plan(w.session, ctx, parse_spec(spec)))
    return result.value


def truth(w: World, spec: dict[str, Any], now: datetime = NOW) -> Decimal | None:
    return reference.evaluate(w.rows, spec, KR_WINDOW, PARIS, now, currency="EUR")


# ---------------------------------------------------------------------------- strategies

FIELDS: dict[str, list[tuple[str, str, st.SearchStrategy[Any]]]] = {
    "lead": [
        ("status", "string", st.sampled_from(STATUSES + ["Qual"])),
        ("lead_source", "string", st.sampled_from(["Web", "Referral", "Partner", "Ref"])),
        ("raw.Status", "string", st.sampled_from(STATUSES)),
        ("raw.IsConverted", "boolean", st.booleans()),
        ("raw.ConvertedDate", "date", st.dates(date(2025, 6, 1), date(2027, 6, 1)).map(str)),
        (
            "created_at",
            "datetime",
            # Hypothesis takes naive bounds and attaches the time zone itself.
            st.datetimes(
                datetime(2025, 6, 1),  # noqa: DTZ001
                datetime(2027, 6, 1),  # noqa: DTZ001
                timezones=st.just(PARIS),
            ).map(lambda d: d.isoformat()),
        ),
    ],
    "opportunity": [
        ("is_won", "boolean", st.booleans()),
        ("is_closed", "boolean", st.booleans()),
        ("currency", "string", st.sampled_from(["EUR", "USD"])),
        ("amount", "number", st.integers(0, 100_000)),
        ("raw.Amount", "number", st.integers(0, 1000).map(lambda x: x / 2)),
        ("raw.Type", "string", st.sampled_from(["New Customer", "Existing Customer", "New"])),
        ("close_date", "date", st.dates(date(2025, 6, 1), date(2027, 6, 1)).map(str)),
        ("deal_type", "string", st.sampled_from(["New Customer", "Existing Customer"])),
    ],
    "survey_response": [
        ("score", "number", st.integers(0, 10)),
        (
            "raw.person_properties.Customer Type",
            "string",
            st.sampled_from(CUSTOMER_TYPES + ["New"]),
        ),
        ("raw.comment", "string", st.sampled_from(["Super", "slow", "é"])),
    ],
}
OPS = {
    "string": ["eq", "neq", "in", "not_in", "contains", "is_null"],
    "number": ["eq", "neq", "in", "not_in", "gt", "gte", "lt", "lte", "between", "is_null"],
    "boolean": ["eq", "neq", "is_null"],
    "date": ["eq", "neq", "gt", "gte", "lt", "lte", "between", "is_null"],
    "datetime": ["gt", "gte", "lt", "lte", "between", "is_null"],
}


@st.composite
def a_filter(draw: st.DrawFn, kind: str) -> dict[str, Any]:
    name, ftype, values = draw(st.sampled_from(FIELDS[kind]))
    op = draw(st.sampled_from(OPS[ftype]))
    if op == "is_null":
        return {"field": name, "op": op, "value": draw(st.booleans())}
    if op in ("in", "not_in"):
        return {"field": name, "op": op, "value": draw(st.lists(values, min_size=1, max_size=3))}
    if op == "between":
        low, high = sorted([draw(values), draw(values)])
        return {"field": name, "op": op, "value": [low, high]}
    if op == "contains":
        return {"field": name, "op": op, "value": draw(st.sampled_from(["Qual", "New", "e", "é"]))}
    return {"field": name, "op": op, "value": draw(values)}


@st.composite
def a_window(draw: st.DrawFn) -> dict[str, Any]:
    choice = draw(st.sampled_from(["key_result", "custom", "rolling", "to_date"]))
    if choice == "custom":
        start = draw(st.dates(date(2025, 6, 1), date(2027, 5, 1)))
        return {
            "type": "custom",
            "start": str(start),
            "end": str(start + timedelta(days=draw(st.integers(1, 400)))),
        }
    if choice == "rolling":
        return {"type": "rolling", "days": draw(st.integers(1, 500))}
    if choice == "to_date":
        return {
            "type": "to_date",
            "unit": draw(st.sampled_from(["year", "quarter", "month", "week"])),
        }
    return {"type": "key_result"}


@st.composite
def a_simple_spec(
    draw: st.DrawFn, connectors: list[int], nps: bool | None = None
) -> dict[str, Any]:
    kind = "survey_response" if nps else draw(st.sampled_from(sorted(FIELDS)))
    if nps is None and kind == "survey_response" and draw(st.booleans()):
        nps = True
    filters: list[dict[str, Any]] = draw(st.lists(a_filter(kind), max_size=3))
    if filters and draw(st.booleans()):
        filters.append(
            {
                "match": draw(st.sampled_from(["all", "any"])),
                "filters": draw(st.lists(a_filter(kind), min_size=1, max_size=2)),
            }
        )
    date_fields = ["created", "modified"] + {
        "opportunity": ["closed"],
        "survey_response": ["answered"],
    }.get(kind, [])
    spec: dict[str, Any] = {
        "connector_id": draw(st.sampled_from(connectors)),
        "kind": kind,
        "match": draw(st.sampled_from(["all", "any"])),
        "filters": filters,
        "date_field": draw(st.sampled_from(date_fields)),
        "window": draw(a_window()),
    }
    if nps:
        return spec | {"type": "nps"}
    numeric = {"lead": [], "opportunity": ["amount", "raw.Amount"], "survey_response": ["score"]}[
        kind
    ]
    distinct = {
        "lead": ["status", "raw.LeadSource"],
        "opportunity": ["currency", "deal_type"],
        "survey_response": ["score", "raw.comment"],
    }[kind]
    agg = draw(
        st.sampled_from(["count", "count_distinct"] + (["sum", "average"] if numeric else []))
    )
    if agg == "count":
        return spec | {"type": "count"}
    if agg == "count_distinct":
        return spec | {"type": agg, "field": draw(st.sampled_from(distinct))}
    return spec | {"type": agg, "field": draw(st.sampled_from(numeric))}


# ---------------------------------------------------------------------------- ground truth


@DB_SETTINGS
@given(data=st.data())
def test_given_generated_records_when_a_random_spec_is_evaluated_then_it_equals_ground_truth(
    world: World, data: st.DataObject
) -> None:
    spec = data.draw(a_simple_spec(world.connectors))
    assume(not pins_another_currency(spec))
    assert sql_value(world, spec) == truth(world, spec), spec


@DB_SETTINGS
@given(data=st.data())
def test_given_generated_records_when_a_random_ratio_is_evaluated_then_it_equals_the_ground_truth(
    world: World, data: st.DataObject
) -> None:
    # Numerator and denominator are drawn independently: often from different connectors.
    spec = {
        "type": "ratio",
        "numerator": data.draw(a_simple_spec(world.connectors, nps=False)),
        "denominator": data.draw(a_simple_spec(world.connectors, nps=False)),
    }
    assume(not pins_another_currency(spec))
    assert sql_value(world, spec) == truth(world, spec), spec


def test_given_several_currencies_when_summed_then_only_the_kr_currency_counts_others_reported(
    world: World,
) -> None:
    spec = {
        "type": "sum",
        "field": "amount",
        "connector_id": world.connectors[0],
        "kind": "opportunity",
        "date_field": "closed",
    }
    ctx = ev.context_for(world.session, world.ws, NOW, world.kr)
    result = ev.evaluate(world.session, ctx, ev.plan(world.session, ctx, parse_spec(spec)))
    expected = reference.aggregate(world.rows, spec, KR_WINDOW, PARIS, NOW, currency="EUR")
    assert result.value == expected["result"]
    assert result.parts[0].records == expected["records"]
    assert result.parts[0].other_currencies == dict(sorted(expected["other_currencies"].items()))
    assert set(result.parts[0].other_currencies) == {"USD", "unknown"}
    assert result.details()["other_currencies"] == result.parts[0].other_currencies


def test_given_a_cross_connector_ratio_when_evaluated_then_each_side_reads_its_own_connector(
    world: World,
) -> None:
    first, second = world.connectors
    spec = {
        "type": "ratio",
        "numerator": {"type": "count", "connector_id": first, "kind": "lead"},
        "denominator": {"type": "count", "connector_id": second, "kind": "lead"},
    }
    num = sum(
        1
        for r in world.rows
        if r["connector_id"] == first
        and r["kind"] == "lead"
        and not r["deleted"]
        and reference.in_window(r, spec["numerator"], *KR_WINDOW, PARIS)
    )
    den = sum(
        1
        for r in world.rows
        if r["connector_id"] == second
        and r["kind"] == "lead"
        and not r["deleted"]
        and reference.in_window(r, spec["denominator"], *KR_WINDOW, PARIS)
    )
    assert num
    assert den
    assert sql_value(world, spec) == Decimal(100) * num / den


# ---------------------------------------------------------------------------- properties


_SLUGS = itertools.count(1)


def _fresh(session: Session, tz: str = "UTC") -> tuple[Workspace, Connector, KeyResult]:
    ws = make_workspace(session, slug=f"w{next(_SLUGS)}", tz=tz)
    return ws, make_connector(session, ws), make_key_result(session, ws)


def _value(session: Session, ws: Workspace, kr: KeyResult, spec: dict[str, Any]) -> ev.Evaluation:
    ctx = ev.context_for(session, ws, NOW, kr)
    return ev.evaluate(session, ctx, ev.plan(session, ctx, parse_spec(spec)))


@DB_SETTINGS
@given(won=st.integers(0, 5), lost=st.integers(0, 5))
def test_given_a_ratio_whose_denominator_is_zero_when_evaluated_then_the_value_is_null(
    session: Session, won: int, lost: int
) -> None:
    ws, c, kr = _fresh(session)
    add_records(
        session,
        [record_row(c, "opportunity", is_won=True) for _ in range(won)]
        + [record_row(c, "opportunity", is_won=False) for _ in range(lost)],
    )
    count = {"type": "count", "connector_id": c.id, "kind": "opportunity"}
    spec = {
        "type": "ratio",
        "numerator": count | {"filters": [{"field": "is_won", "op": "eq", "value": True}]},
        # Nothing is both won and not won: the denominator is always 0.
        "denominator": count
        | {
            "filters": [
                {"field": "is_won", "op": "eq", "value": True},
                {"field": "is_won", "op": "eq", "value": False},
            ]
        },
    }
    result = _value(session, ws, kr, spec)
    assert result.value is None
    assert result.details()["denominator"] == 0
    assert result.details()["numerator"] == won


@DB_SETTINGS
@given(scores=st.lists(st.integers(0, 10), max_size=40))
def test_given_survey_scores_when_nps_is_evaluated_then_bands_split_at_6_7_and_8_9(
    session: Session, scores: list[int]
) -> None:
    ws, c, kr = _fresh(session)
    add_records(session, [record_row(c, "survey_response", score=s) for s in scores])
    result = _value(session, ws, kr, {"type": "nps", "connector_id": c.id})
    promoters = sum(1 for s in scores if s in (9, 10))
    detractors = sum(1 for s in scores if s <= 6)
    details = result.details()
    assert (details["promoters"], details["detractors"], details["responses"]) == (
        promoters,
        detractors,
        len(scores),
    )
    assert details["passives"] == sum(1 for s in scores if s in (7, 8))
    if scores:
        assert result.value == Decimal(100 * (promoters - detractors)) / len(scores)
        assert -100 <= result.value <= 100
    else:
        assert result.value is None


@pytest.mark.parametrize(
    ("scores", "nps"),
    [
        ([6], -100),
        ([7], 0),
        ([8], 0),
        ([9], 100),
        ([6, 9], 0),
        ([7, 8, 7, 8], 0),
        ([10, 10, 6, 7], 25),
    ],
)
def test_given_band_edge_scores_when_nps_is_evaluated_then_6_detracts_7_8_are_passive_9_promotes(
    session: Session, scores: list[int], nps: int
) -> None:
    ws, c, kr = _fresh(session)
    add_records(session, [record_row(c, "survey_response", score=s) for s in scores])
    result = _value(session, ws, kr, {"type": "nps", "connector_id": c.id})
    assert result.value == nps
    assert result.details()["responses"] == len(scores)


# Days around the 2026 DST changes in Paris (29 March, 25 October) and a plain day.
EDGE_DAYS = [
    date(2026, 3, 28),
    date(2026, 3, 29),
    date(2026, 3, 30),
    date(2026, 10, 25),
    date(2026, 10, 26),
    date(2026, 6, 1),
]


@DB_SETTINGS
@given(
    start=st.sampled_from(EDGE_DAYS),
    days=st.integers(1, 3),
    offsets=st.lists(st.integers(-3 * 3600, 5 * 86400), min_size=1, max_size=12),
)
def test_given_records_near_midnights_across_dst_when_counted_then_windows_are_half_open_in_paris(
    session: Session, start: date, days: int, offsets: list[int]
) -> None:
    ws, c, kr = _fresh(session, tz="Europe/Paris")
    end = start + timedelta(days=days)
    low = datetime.combine(start, time.min, tzinfo=PARIS)
    high = datetime.combine(end, time.min, tzinfo=PARIS)
    # Records exactly on both edges, a second either side, and at random offsets.
    moments = [low, high, low - timedelta(seconds=1), high - timedelta(seconds=1)]
    moments += [low + timedelta(seconds=o) for o in offsets]
    add_records(session, [record_row(c, "lead", created_at=m.astimezone(UTC)) for m in moments])
    # Opportunities closing on each day around the window: a day counts iff its local
    # midnight is in the window.
    close_days = [start + timedelta(days=d) for d in range(-2, days + 2)]
    add_records(session, [record_row(c, "opportunity", close_date=d) for d in close_days])
    window = {"type": "custom", "start": str(start), "end": str(end)}
    leads = _value(
        session, ws, kr, {"type": "count", "connector_id": c.id, "kind": "lead", "window": window}
    )
    assert leads.value == sum(1 for m in moments if low <= m < high)
    closed = _value(
        session,
        ws,
        kr,
        {
            "type": "count",
            "connector_id": c.id,
            "kind": "opportunity",
            "date_field": "closed",
            "window": window,
        },
    )
    assert closed.value == days


@DB_SETTINGS
@given(flags=st.lists(st.booleans(), min_size=1, max_size=20))
def test_given_deleted_records_when_any_metric_is_evaluated_then_they_never_count(
    session: Session, flags: list[bool]
) -> None:
    ws, c, kr = _fresh(session)
    add_records(
        session,
        [
            record_row(c, "survey_response", deleted=d, score=10, email=f"{i}@x")
            for i, d in enumerate(flags)
        ],
    )
    live = flags.count(False)
    for spec, expected in [
        ({"type": "count"}, live),
        ({"type": "sum", "field": "score"}, 10 * live),
        ({"type": "count_distinct", "field": "email"}, live),
        ({"type": "nps"}, 100 if live else None),
    ]:
        full = spec | {"connector_id": c.id, "kind": "survey_response"}
        assert _value(session, ws, kr, full).value == expected, spec


def test_given_a_record_synced_twice_when_counted_then_it_counts_once(session: Session) -> None:
    from connectors.base import Record, RecordKind
    from service.sync.engine import upsert_page

    ws, c, kr = _fresh(session)
    record = Record(
        kind=RecordKind.lead,
        source_id="00Q1",
        created_at=NOW - timedelta(days=3),
        modified_at=NOW - timedelta(days=2),
        status="Qualified",
    )
    newer = Record(
        kind=RecordKind.lead,
        source_id="00Q1",
        created_at=NOW - timedelta(days=3),
        modified_at=NOW - timedelta(days=1),
        status="Qualified",
    )
    assert c.id is not None
    for page in ([record], [newer], [record]):
        upsert_page(session, c, RecordKind.lead, page, NOW)
    spec = {
        "type": "count",
        "connector_id": c.id,
        "kind": "lead",
        "filters": [{"field": "status", "op": "eq", "value": "Qualified"}],
    }
    assert _value(session, ws, kr, spec).value == 1


# ---------------------------------------------------------------------------- windows


@pytest.mark.parametrize(
    ("window", "expected"),
    [
        ({"type": "rolling", "days": 1}, (date(2026, 7, 2), date(2026, 7, 3))),
        ({"type": "rolling", "days": 30}, (date(2026, 6, 3), date(2026, 7, 3))),
        ({"type": "to_date", "unit": "year"}, (date(2026, 1, 1), date(2026, 7, 3))),
        ({"type": "to_date", "unit": "quarter"}, (date(2026, 7, 1), date(2026, 7, 3))),
        ({"type": "to_date", "unit": "month"}, (date(2026, 7, 1), date(2026, 7, 3))),
        ({"type": "to_date", "unit": "week"}, (date(2026, 6, 29), date(2026, 7, 3))),
        (
            {"type": "custom", "start": "2026-02-01", "end": "2026-03-01"},
            (date(2026, 2, 1), date(2026, 3, 1)),
        ),
        ({"type": "key_result"}, KR_WINDOW),
    ],
)
def test_given_a_window_spec_when_resolved_then_it_is_the_expected_local_days(
    session: Session, window: dict[str, Any], expected: tuple[date, date]
) -> None:
    ws, _, kr = _fresh(session, tz="Europe/Paris")
    ctx = ev.context_for(session, ws, NOW, kr)
    spec = parse_spec({"type": "count", "connector_id": 1, "kind": "lead", "window": window})
    assert ev.resolve_window(spec.window, ctx, "spec.window") == expected  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("window", "start", "end", "expected"),
    [
        (
            {"type": "key_result"},
            date(2026, 1, 1),
            date(2027, 1, 1),
            (date(2025, 1, 1), date(2026, 1, 1)),
        ),
        (
            {"type": "key_result"},
            date(2026, 4, 1),
            date(2026, 7, 1),
            (date(2026, 1, 1), date(2026, 4, 1)),
        ),
        (
            {"type": "custom", "start": "2026-03-10", "end": "2026-03-20"},
            date(2026, 3, 10),
            date(2026, 3, 20),
            (date(2026, 2, 28), date(2026, 3, 10)),
        ),
        (
            {"type": "rolling", "days": 7},
            date(2026, 6, 26),
            date(2026, 7, 3),
            (date(2026, 6, 19), date(2026, 6, 26)),
        ),
        (
            {"type": "to_date", "unit": "year"},
            date(2026, 1, 1),
            date(2026, 7, 3),
            (date(2025, 1, 1), date(2025, 7, 3)),
        ),
        (
            {"type": "to_date", "unit": "quarter"},
            date(2026, 4, 1),
            date(2026, 5, 31),
            (date(2026, 1, 1), date(2026, 2, 28)),
        ),
    ],
)
def test_given_a_window_when_the_previous_equivalent_is_asked_then_it_is_one_unit_earlier(
    window: dict[str, Any], start: date, end: date, expected: tuple[date, date]
) -> None:
    spec = parse_spec({"type": "count", "connector_id": 1, "kind": "lead", "window": window})
    assert ev.previous_window(spec.window, start, end) == expected  # type: ignore[union-attr]


def test_given_a_key_result_window_without_a_key_result_when_planned_then_the_window_is_named(
    session: Session,
) -> None:
    ws, c, _ = _fresh(session)
    ctx = ev.context_for(session, ws, NOW, None)
    with pytest.raises(InvalidError) as caught:
        ev.plan(session, ctx, parse_spec({"type": "count", "connector_id": c.id, "kind": "lead"}))
    assert caught.value.field == "spec.window"


def test_given_a_eur_key_result_when_a_sum_keeps_only_usd_then_the_currency_filter_is_named(
    world: World,
) -> None:
    spec = {
        "type": "sum",
        "field": "amount",
        "connector_id": world.connectors[0],
        "kind": "opportunity",
        "filters": [{"field": "currency", "op": "in", "value": ["USD"]}],
    }
    assert pins_another_currency(spec)
    with pytest.raises(InvalidError) as caught:
        sql_value(world, spec)
    assert caught.value.field == "spec.filters.0.value"


@pytest.mark.parametrize(
    ("start", "end"), [(date(1, 1, 1), date(2, 1, 1)), (date(9999, 1, 1), date(9999, 12, 31))]
)
def test_given_a_window_at_the_ends_of_the_calendar_when_bound_then_it_evaluates_without_error(
    session: Session, start: date, end: date
) -> None:
    from service.mappings.service import bind

    ws = make_workspace(session, slug=f"edge{start.year}", tz="Asia/Tokyo")
    c = make_connector(session, ws)
    kr = make_key_result(session, ws, start=start, end=end)
    add_records(session, [record_row(c, "lead")])
    spec = parse_spec({"type": "count", "connector_id": c.id, "kind": "lead"})
    mapping = bind(session, ws, kr, spec, NOW)
    assert kr.value == 0
    if start.year == 1:
        assert mapping.baseline is None  # there is no year before year 1


@pytest.mark.parametrize(
    ("kr_currency", "filters", "refused"),
    [
        ("USD", [], True),
        ("EUR", [], False),
        (None, [{"field": "currency", "op": "eq", "value": "USD"}], True),
        (None, [{"field": "currency", "op": "eq", "value": "EUR"}], False),
    ],
)
def test_given_a_single_currency_org_when_amounts_are_bound_to_another_currency_then_refused(
    session: Session, kr_currency: str | None, filters: list[dict[str, Any]], refused: bool
) -> None:
    ws = make_workspace(session, slug="single", tz="Europe/Paris")
    org = make_connector(
        session, ws, type="salesforce", config={"multi_currency": False, "default_currency": "EUR"}
    )
    if kr_currency is None:
        kr = make_key_result(session, ws)
    else:
        kr = make_key_result(session, ws, unit=Unit.currency, currency=kr_currency, target=1000)
    spec = {
        "type": "sum",
        "field": "amount",
        "connector_id": org.id,
        "kind": "opportunity",
        "filters": filters,
    }
    ctx = ev.context_for(session, ws, NOW, kr)
    if not refused:
        assert ev.plan(session, ctx, parse_spec(spec)).parts[0].currency == "EUR"
        return
    with pytest.raises(InvalidError) as caught:
        ev.plan(session, ctx, parse_spec(spec))
    assert caught.value.field == "spec.connector_id"
    assert "only in EUR" in str(caught.value)


def test_given_a_multi_currency_org_when_amounts_are_bound_to_usd_then_accepted(
    session: Session,
) -> None:
    ws = make_workspace(session, slug="multi", tz="Europe/Paris")
    org = make_connector(session, ws, type="salesforce", config={"multi_currency": True})
    kr = make_key_result(session, ws, unit=Unit.currency, currency="USD", target=1000)
    spec = {"type": "sum", "field": "amount", "connector_id": org.id, "kind": "opportunity"}
    ctx = ev.context_for(session, ws, NOW, kr)
    assert ev.plan(session, ctx, parse_spec(spec)).parts[0].currency == "USD"


def test_given_a_close_date_window_then_the_partial_closed_index_answers_it(world: World) -> None:
    """`ix_record_eval_closed` holds only records with a close date (migration 0008): the
    window's range on `close_date` must still let each database use it."""
    spec = {
        "type": "sum",
        "field": "amount",
        "connector_id": world.connectors[0],
        "kind": "opportunity",
        "filters": [{"field": "is_won", "op": "eq", "value": True}],
        "date_field": "closed",
    }
    ctx = ev.context_for(world.session, world.ws, NOW, world.kr)
    [part] = ev.plan(world.session, ctx, parse_spec(spec)).parts
    start, end = KR_WINDOW
    params = ev.window_params(part, start, end, PARIS)
    conn = world.session.connection()
    compiled = part.statement.compile(dialect=conn.dialect)
    sql = str(compiled)
    bound = {**compiled.params, **params}
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("ANALYZE record")  # what a sync does on a large load
        plan = conn.exec_driver_sql("EXPLAIN " + sql, bound).all()
    else:
        ordered = tuple(bound[name] for name in compiled.positiontup or ())
        plan = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, ordered).all()
    assert "ix_record_eval_closed" in " ".join(str(row) for row in plan), plan
    assert sql_value(world, spec) == truth(world, spec)
