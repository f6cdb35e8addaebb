"""An independent, row-by-row Python evaluation of metric specs: the ground truth the SQL
evaluation is compared with. It reads the spec as plain JSON and the records as the dicts
they were inserted from, and shares no code with `service.mappings.evaluate`."""

from __future__ import annotations

import calendar
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

SCALE = Decimal(10_000)
MISSING = object()

RAW_TYPES: dict[str, dict[str, str]] = {
    "lead": {
        "Status": "string",
        "LeadSource": "string",
        "IsConverted": "boolean",
        "ConvertedDate": "date",
    },
    "opportunity": {"Amount": "number", "IsWon": "boolean", "Type": "string"},
    "survey_response": {"person_properties.Customer Type": "string", "comment": "string"},
}


def field_value(row: dict[str, Any], name: str) -> Any:
    """The value a filter/aggregate reads, or None when absent (raw: of the wrong type)."""
    if name == "amount":
        return None if row["amount_e4"] is None else Decimal(row["amount_e4"]) / SCALE
    if not name.startswith("raw."):
        return row[name]
    node: Any = row["raw"]
    for key in name[4:].split("."):
        node = node.get(key, MISSING) if isinstance(node, dict) else MISSING
    kind = RAW_TYPES[row["kind"]].get(name[4:])
    if kind == "number":
        ok = isinstance(node, int | float) and not isinstance(node, bool)
        return Decimal(repr(node)) if ok else None
    if kind == "boolean":
        return node if isinstance(node, bool) else None
    return node if isinstance(node, str) else None


def _coerce(name: str, value: Any) -> Any:
    if isinstance(value, list):
        return [_coerce(name, v) for v in value]
    if name in ("close_date",) and isinstance(value, str):
        return date.fromisoformat(value)
    if name in ("created_at", "modified_at") and isinstance(value, str):
        return datetime.fromisoformat(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return Decimal(repr(value))
    return value


def matches(row: dict[str, Any], f: dict[str, Any]) -> bool:
    if "filters" in f:
        results = [matches(row, g) for g in f["filters"]]
        return all(results) if f.get("match", "all") == "all" else any(results)
    v = field_value(row, f["field"])
    op, value = f["op"], _coerce(f["field"], f.get("value"))
    if op == "is_null":
        return (v is None) == (True if value is None else value)
    if op == "neq":
        return v is None or v != value
    if op == "not_in":
        return v is None or v not in value
    if v is None:
        return False
    if op == "eq":
        return bool(v == value)
    if op == "in":
        return v in value
    if op == "contains":
        return value in v
    if op == "between":
        return bool(value[0] <= v <= value[1])
    return bool({"gt": v > value, "gte": v >= value, "lt": v < value, "lte": v <= value}[op])


def add_months(day: date, months: int) -> date:
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    return date(year, month + 1, min(day.day, calendar.monthrange(year, month + 1)[1]))


def window_of(
    spec: dict[str, Any], kr_window: tuple[date, date], tz: ZoneInfo, now: datetime
) -> tuple[date, date]:
    window = spec.get("window") or {"type": "key_result"}
    today = now.astimezone(tz).date()
    if window["type"] == "key_result":
        return kr_window
    if window["type"] == "custom":
        return date.fromisoformat(window["start"]), date.fromisoformat(window["end"])
    if window["type"] == "rolling":
        return today - timedelta(days=window["days"] - 1), today + timedelta(days=1)
    unit = window["unit"]
    start = {
        "year": date(today.year, 1, 1),
        "quarter": date(today.year, (today.month - 1) // 3 * 3 + 1, 1),
        "month": date(today.year, today.month, 1),
        "week": today - timedelta(days=today.weekday()),
    }[unit]
    return start, today + timedelta(days=1)


def in_window(
    row: dict[str, Any], spec: dict[str, Any], start: date, end: date, tz: ZoneInfo
) -> bool:
    date_field = spec.get("date_field") or ("answered" if spec["type"] == "nps" else "created")
    if date_field == "closed":
        d = row["close_date"]
        return d is not None and start <= d < end
    moment = row["modified_at"] if date_field == "modified" else row["created_at"]
    low = datetime.combine(start, time.min, tzinfo=tz)
    high = datetime.combine(end, time.min, tzinfo=tz)
    return bool(low <= moment < high)


def selected(
    rows: list[dict[str, Any]],
    spec: dict[str, Any],
    kr_window: tuple[date, date],
    tz: ZoneInfo,
    now: datetime,
) -> list[dict[str, Any]]:
    """Rows that pass source, kind, deletion, window and filters (before currency)."""
    start, end = window_of(spec, kr_window, tz, now)
    group = {"match": spec.get("match", "all"), "filters": spec.get("filters", [])}
    kind = spec.get("kind", "survey_response")
    return [
        r
        for r in rows
        if r["connector_id"] == spec["connector_id"]
        and r["kind"] == kind
        and not r["deleted"]
        and in_window(r, spec, start, end, tz)
        and (not group["filters"] or matches(r, group))
    ]


def aggregate(
    rows: list[dict[str, Any]],
    spec: dict[str, Any],
    kr_window: tuple[date, date],
    tz: ZoneInfo,
    now: datetime,
    currency: str | None = None,
) -> dict[str, Any]:
    """{"result", "records", ...} of a non-ratio spec."""
    chosen = selected(rows, spec, kr_window, tz, now)
    kind = spec["type"]
    if kind == "count":
        return {"result": Decimal(len(chosen)), "records": len(chosen)}
    name = spec.get("score_field", "score") if kind == "nps" else spec["field"]
    present = [r for r in chosen if field_value(r, name) is not None]
    if kind == "nps":
        scores = [field_value(r, name) for r in present]
        p = sum(1 for s in scores if s >= 9)
        d = sum(1 for s in scores if s <= 6)
        return {
            "result": None if not scores else Decimal(100 * (p - d)) / len(scores),
            "records": len(scores),
            "promoters": p,
            "detractors": d,
            "passives": len(scores) - p - d,
        }
    if kind == "count_distinct":
        return {
            "result": Decimal(len({field_value(r, name) for r in present})),
            "records": len(present),
        }
    other: dict[str, int] = {}
    if name == "amount":
        assert currency is not None
        for r in present:
            if r["currency"] != currency:
                other[r["currency"] or "unknown"] = other.get(r["currency"] or "unknown", 0) + 1
        present = [r for r in present if r["currency"] == currency]
    values = [field_value(r, name) for r in present]
    total = sum(values, Decimal(0))
    if kind == "sum":
        result: Decimal | None = total
    else:
        result = total / len(values) if values else None
    return {"result": result, "records": len(values), "other_currencies": other}


def evaluate(
    rows: list[dict[str, Any]],
    spec: dict[str, Any],
    kr_window: tuple[date, date],
    tz: ZoneInfo,
    now: datetime,
    currency: str | None = None,
) -> Decimal | None:
    """The value of `spec` over `rows`."""
    if spec["type"] == "ratio":
        num = aggregate(rows, spec["numerator"], kr_window, tz, now, currency)["result"]
        den = aggregate(rows, spec["denominator"], kr_window, tz, now, currency)["result"]
        if num is None or den is None or den == 0:
            return None
        return Decimal(100) * num / den
    result: Decimal | None = aggregate(rows, spec, kr_window, tz, now, currency)["result"]
    return result
