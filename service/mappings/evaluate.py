"""Metric evaluation in SQL: a spec is checked against the workspace into a `Plan`, whose
parts are aggregated by the database over the `record` table (never row by row here).

Semantics are identical on SQLite and PostgreSQL:

* windows are half-open `[start, end)` of local days in the workspace's time zone; a
  datetime counts when it is in `[local midnight of start, local midnight of end)`; a date
  (`close_date`) counts when `start <= date < end`, i.e. when its local midnight does;
* deleted records never count; a record is one row per (connector, kind, source id), so a
  record synced many times counts once;
* amounts are summed as exact integers of 1/10,000 and only in one currency; records in
  other currencies are counted per currency and reported, never mixed in;
* raw fields are read through JSON path extraction guarded by the JSON type, so a raw value
  of the wrong type is treated as absent on both dialects (never a cast error);
* `neq` / `not_in` match records without the field too, `contains` is case-sensitive on
  both (position functions, not LIKE, whose case rules differ between the two).
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import ValidationError
from sqlalchemy import (
    Boolean,
    Date,
    Numeric,
    String,
    and_,
    bindparam,
    case,
    cast,
    false,
    func,
    literal,
    or_,
    select,
    true,
    type_coerce,
)
from sqlmodel import Session, col

from connectors.base import NORMALISED_FIELDS, FieldType, RecordKind
from service.db_types import UTCDateTime
from service.errors import InvalidError
from service.mappings.spec import (
    AverageSpec,
    CountDistinctSpec,
    CustomWindow,
    DateField,
    Filter,
    FilterGroup,
    KeyResultWindow,
    Match,
    MetricSpec,
    NpsSpec,
    Op,
    RatioSpec,
    RollingWindow,
    SumSpec,
    ToDateWindow,
    WindowSpec,
)
from service.okr.models import KeyResult, Objective, Period, Unit
from service.progress.maths import window_bounds
from service.sync.models import AMOUNT_SCALE, Connector, SyncedRecord
from service.sync.service import connector_class, enabled_kinds
from service.workspaces.models import Workspace

R = SyncedRecord.__table__.c  # type: ignore[attr-defined]

#: Operators that make sense for each field type.
OPERATORS: dict[FieldType, frozenset[Op]] = {
    FieldType.string: frozenset({Op.eq, Op.neq, Op.in_, Op.not_in, Op.contains, Op.is_null}),
    FieldType.number: frozenset(
        {Op.eq, Op.neq, Op.in_, Op.not_in, Op.gt, Op.gte, Op.lt, Op.lte, Op.between, Op.is_null}
    ),
    FieldType.boolean: frozenset({Op.eq, Op.neq, Op.is_null}),
    FieldType.date: frozenset(
        {Op.eq, Op.neq, Op.gt, Op.gte, Op.lt, Op.lte, Op.between, Op.is_null}
    ),
    FieldType.datetime: frozenset({Op.gt, Op.gte, Op.lt, Op.lte, Op.between, Op.is_null}),
}
#: Vendors format raw datetimes in their own ways, so they cannot be compared as text.
RAW_DATETIME_OPERATORS = frozenset({Op.is_null})

#: Kinds that have a close date.
CLOSING_KINDS = frozenset({RecordKind.opportunity, RecordKind.deal})
#: Filter values are bounded so they bind safely on both dialects.
MAX_NUMBER = Decimal(10) ** 14
MAX_DECIMALS = 10
MIN_DAY, MAX_DAY = date(1900, 1, 1), date(2199, 12, 31)
PROMOTER_MIN = 9
DETRACTOR_MAX = 6


# ---------------------------------------------------------------------------- context


@dataclass(frozen=True, slots=True)
class Context:
    """What evaluation needs besides the spec: where, for which key result, and when."""

    ws: Workspace
    tz: ZoneInfo
    now: datetime
    dialect: str
    key_result: KeyResult | None = None
    #: The key result's own window (its objective's period unless it sets one).
    kr_window: tuple[date, date] | None = None


def key_result_windows(session: Session, krs: Sequence[KeyResult]) -> dict[int, tuple[date, date]]:
    """Each key result's own window, else its objective's period (one query for all)."""
    out = {
        kr.id: (kr.window_start, kr.window_end)
        for kr in krs
        if kr.id is not None and kr.window_start is not None and kr.window_end is not None
    }
    missing = {kr.objective_id: kr.id for kr in krs if kr.id is not None and kr.id not in out}
    if missing:
        rows = session.execute(
            select(col(Objective.id), col(Period.start), col(Period.end))
            .join(Period, col(Objective.period_id) == col(Period.id))
            .where(col(Objective.id).in_(sorted(missing)))
        ).all()
        by_objective = {row[0]: (row[1], row[2]) for row in rows}
        for kr in krs:
            if kr.id is not None and kr.id not in out and kr.objective_id in by_objective:
                out[kr.id] = by_objective[kr.objective_id]
    return out


def context_for(
    session: Session,
    ws: Workspace,
    now: datetime,
    key_result: KeyResult | None = None,
    *,
    windows: dict[int, tuple[date, date]] | None = None,
) -> Context:
    """What evaluation needs; `windows` (from `key_result_windows`) saves a query."""
    kr_window = None
    if key_result is not None and windows is not None and key_result.id in windows:
        kr_window = windows[key_result.id]
    elif key_result is not None:
        if key_result.window_start is not None and key_result.window_end is not None:
            kr_window = (key_result.window_start, key_result.window_end)
        else:
            found = session.execute(
                select(col(Period.start), col(Period.end))
                .join(Objective, col(Objective.period_id) == col(Period.id))
                .where(col(Objective.id) == key_result.objective_id)
            ).first()
            if found is not None:
                kr_window = (found[0], found[1])
    return Context(
        ws=ws,
        tz=ZoneInfo(ws.timezone),
        now=now,
        dialect=session.get_bind().dialect.name,
        key_result=key_result,
        kr_window=kr_window,
    )


# ---------------------------------------------------------------------------- windows


def add_months(day: date, months: int) -> date:
    """`day` moved by whole months, the day clamped to the target month's length."""
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    return date(year, month + 1, min(day.day, calendar.monthrange(year, month + 1)[1]))


def resolve_window(window: WindowSpec, ctx: Context, path: str) -> tuple[date, date]:
    """The local days `[start, end)` a window spec means at `ctx.now`."""
    today = ctx.now.astimezone(ctx.tz).date()
    if isinstance(window, KeyResultWindow):
        if ctx.kr_window is None:
            raise InvalidError(
                "the key result's window needs a key result: give key_result_id, or a custom, "
                "rolling or to_date window",
                field=path,
            )
        return ctx.kr_window
    if isinstance(window, CustomWindow):
        return window.start, window.end
    if isinstance(window, RollingWindow):
        return today - timedelta(days=window.days - 1), today + timedelta(days=1)
    if window.unit == "year":
        start = date(today.year, 1, 1)
    elif window.unit == "quarter":
        start = date(today.year, (today.month - 1) // 3 * 3 + 1, 1)
    elif window.unit == "month":
        start = date(today.year, today.month, 1)
    else:
        start = today - timedelta(days=today.weekday())
    return start, today + timedelta(days=1)


def previous_window(window: WindowSpec, start: date, end: date) -> tuple[date, date]:
    """The previous equivalent window: last year for a year, last quarter for a quarter,
    the same span one unit earlier for a to-date window, the days just before otherwise."""
    if isinstance(window, ToDateWindow):
        if window.unit == "week":
            return start - timedelta(days=7), end - timedelta(days=7)
        months = {"year": 12, "quarter": 3, "month": 1}[window.unit]
        return add_months(start, -months), add_months(end, -months)
    if not isinstance(window, RollingWindow) and start.day == 1 and end.day == 1:
        months = (end.year - start.year) * 12 + end.month - start.month
        return add_months(start, -months), add_months(end, -months)
    span = end - start
    return start - span, end - span


# ---------------------------------------------------------------------------- plan


@dataclass(frozen=True, slots=True)
class FieldRef:
    """A field a spec names, resolved to its type and SQL expression."""

    name: str
    type: FieldType
    raw: bool
    expr: Any
    #: True for `amount`: the expression is the exact integer amount × AMOUNT_SCALE.
    amount: bool = False


@dataclass(slots=True)
class Part:
    """One aggregate over one (connector, kind): a spec, or one side of a ratio."""

    name: str
    path: str
    connector_id: int
    kind: str
    aggregate: str
    field: FieldRef | None
    date_field: DateField
    window: WindowSpec
    condition: Any
    #: The currency amounts are summed in (aggregates over `amount` only).
    currency: str | None = None
    #: Raw permalink of the record, for links when the connector builds none.
    permalink: Any = None
    #: The aggregate statement, built once: the window comes in as bound parameters.
    statement: Any = None


@dataclass(slots=True)
class Plan:
    """A checked spec with its SQL, reusable across evaluations (windows are parameters)."""

    spec: MetricSpec
    parts: list[Part]
    #: The connector rows the spec was checked against (for explanations; not cached).
    connectors: dict[int, Connector] = field(default_factory=dict)
    #: Both counts of a same-source ratio in one statement, when that applies.
    fused: Any = None

    @property
    def type(self) -> str:
        return self.spec.type

    def sources(self) -> set[tuple[int, str]]:
        return {(p.connector_id, p.kind) for p in self.parts}

    def detached(self) -> Plan:
        """This plan without ORM rows, safe to keep across sessions."""
        return replace(self, connectors={})


class _Fields:
    """Resolves field names for one (connector, kind) on one dialect."""

    def __init__(self, raw_fields: dict[str, FieldType], dialect: str, label: str) -> None:
        self.raw_fields = raw_fields
        self.dialect = dialect
        self.label = label

    def resolve(self, name: str, path: str) -> FieldRef:
        if name.startswith("raw."):
            raw_name = name[4:]
            ftype = self.raw_fields.get(raw_name)
            if ftype is None:
                known = ", ".join(sorted(self.raw_fields)[:40]) or "none"
                raise InvalidError(
                    f"unknown raw field {raw_name!r} for {self.label} (raw fields: {known})",
                    field=path,
                )
            if '"' in raw_name or not all(raw_name.split(".")):
                raise InvalidError(f"raw field {raw_name!r} cannot be read by path", field=path)
            return FieldRef(name, ftype, True, raw_value(raw_name.split("."), ftype, self.dialect))
        ftype = NORMALISED_FIELDS.get(name)
        if ftype is None:
            known = ", ".join(NORMALISED_FIELDS)
            raise InvalidError(
                f"unknown field {name!r} (normalised fields: {known}; raw source fields are "
                "written raw.<name>)",
                field=path,
            )
        if name == "amount":
            return FieldRef(name, ftype, False, R.amount_e4, amount=True)
        return FieldRef(name, ftype, False, R[name])


def raw_value(path: Sequence[str], ftype: FieldType, dialect: str) -> Any:
    """SQL for a raw JSON field, NULL unless its JSON type fits `ftype` (both dialects)."""
    if dialect == "postgresql":
        node: Any = R.raw
        for key in path[:-1]:
            node = node.op("->")(literal(key, String))
        last = literal(path[-1], String)
        jtype = func.jsonb_typeof(node.op("->")(last))
        text = node.op("->>")(last)
        wanted = {
            FieldType.number: ("number",),
            FieldType.boolean: ("boolean",),
        }.get(ftype, ("string",))
        guard = jtype.in_(wanted)
        if ftype is FieldType.number:
            return case((guard, cast(text, Numeric)), else_=None)
        if ftype is FieldType.boolean:
            return case((guard, cast(text, Boolean)), else_=None)
        return case((guard, type_coerce(text, String)), else_=None)
    json_path = "$" + "".join(f'."{key}"' for key in path)
    jtype = func.json_type(R.raw, json_path)
    value = func.json_extract(R.raw, json_path)
    if ftype is FieldType.number:
        return case((jtype.in_(("integer", "real")), type_coerce(value, Numeric)), else_=None)
    if ftype is FieldType.boolean:
        return case((jtype.in_(("true", "false")), type_coerce(value, Boolean)), else_=None)
    return case((jtype == "text", type_coerce(value, String)), else_=None)


def _contains(expr: Any, needle: str, dialect: str) -> Any:
    # LIKE is case-insensitive on SQLite and sensitive on PostgreSQL; position functions
    # behave the same on both (case-sensitive, no wildcards to escape).
    fn = func.strpos if dialect == "postgresql" else func.instr
    return fn(expr, literal(needle, String)) > 0


def _bad(path: str, message: str) -> InvalidError:
    return InvalidError(message, field=path)


def _scalar(ref: FieldRef, value: Any, path: str) -> Any:
    """A filter value converted to what the field's SQL expression compares with."""
    t = ref.type
    if t is FieldType.string:
        if not isinstance(value, str):
            raise _bad(path, f"{ref.name} is a text field: give a string")
        if "\x00" in value:
            # PostgreSQL text cannot hold NUL, so no stored value can match it anyway.
            raise _bad(path, "text values cannot contain NUL characters")
        return value
    if t is FieldType.boolean:
        if not isinstance(value, bool):
            raise _bad(path, f"{ref.name} is a boolean field: give true or false")
        return value
    if t is FieldType.number:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise _bad(path, f"{ref.name} is a numeric field: give a number")
        try:
            number = Decimal(str(value))
        except InvalidOperation:
            raise _bad(path, f"{ref.name} is a numeric field: {value!r} is not a number") from None
        if not number.is_finite() or abs(number) >= MAX_NUMBER:
            # Bounded so that every comparison binds as a 64-bit integer or a plain decimal.
            raise _bad(path, f"{ref.name}: {value!r} is not a number below 1e14 in magnitude")
        if number.normalize().as_tuple().exponent < -MAX_DECIMALS:  # type: ignore[operator]
            raise _bad(path, f"{ref.name}: at most {MAX_DECIMALS} decimals")
        if ref.amount:
            scaled = number * AMOUNT_SCALE
            if scaled != scaled.to_integral_value():
                raise _bad(path, "amounts are compared to 1/10,000: use at most 4 decimals")
            return int(scaled)
        if ref.raw:
            return number
        if number != number.to_integral_value():
            # Normalised numeric columns other than amount hold integers (the score).
            return number
        return int(number)
    if t is FieldType.date:
        if not isinstance(value, str):
            raise _bad(path, f"{ref.name} is a date field: give YYYY-MM-DD")
        try:
            day = date.fromisoformat(value)
        except ValueError:
            raise _bad(path, f"{ref.name} is a date field: {value!r} is not YYYY-MM-DD") from None
        if not MIN_DAY <= day <= MAX_DAY:
            raise _bad(path, f"{ref.name}: give a date between {MIN_DAY} and {MAX_DAY}")
        # Raw dates are ISO text: compared as text, which orders like dates.
        return day.isoformat() if ref.raw else day
    if not isinstance(value, str):
        raise _bad(path, f"{ref.name} is a datetime field: give an ISO 8601 datetime")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise _bad(path, f"{ref.name}: {value!r} is not an ISO 8601 datetime") from None
    if moment.tzinfo is None:
        raise _bad(path, f"{ref.name}: give a time zone offset, e.g. {value}+01:00")
    if not MIN_DAY <= moment.date() <= MAX_DAY:
        raise _bad(path, f"{ref.name}: give a moment between {MIN_DAY} and {MAX_DAY}")
    return moment


def _list(ref: FieldRef, value: Any, path: str, size: int | None = None) -> list[Any]:
    if not isinstance(value, list) or not value:
        what = "[low, high]" if size == 2 else "a non-empty list"
        raise _bad(path, f"this operator needs {what}")
    if size is not None and len(value) != size:
        raise _bad(path, "between needs exactly [low, high]")
    if len(value) > 1000:
        raise _bad(path, "at most 1000 values")
    return [_scalar(ref, v, f"{path}.{i}") for i, v in enumerate(value)]


#: Text that any JSON encoder writes verbatim inside a string (nothing to escape).
_PLAIN = re.compile(r"[A-Za-z0-9 _.,:;@#&()+=-]+")


def _prefiltered(ref: FieldRef, values: list[Any], exact: Any, dialect: str) -> Any:
    """`exact`, preceded on SQLite by a cheap substring test on the raw JSON text.

    SQLite parses a record's whole JSON text for each extraction; a record whose text does
    not even contain `"value"` cannot match, and skipping the parse for it is most of the
    cost of a raw filter. Only for values every encoder writes verbatim, so the test is a
    necessary condition and the result is exactly that of `exact`.
    """
    if dialect != "sqlite" or not ref.raw or ref.type is not FieldType.string:
        return exact
    if not all(isinstance(v, str) and _PLAIN.fullmatch(v) for v in values):
        return exact
    needles = [func.instr(R.raw, literal(f'"{v}"', String)) > 0 for v in values]
    return and_(or_(*needles), exact)


def _compile_filter(f: Filter, fields: _Fields, path: str, dialect: str) -> Any:
    ref = fields.resolve(f.field, f"{path}.field")
    allowed = RAW_DATETIME_OPERATORS if ref.raw and ref.type is FieldType.datetime else None
    allowed = allowed or OPERATORS[ref.type]
    if f.op not in allowed:
        fits = ", ".join(sorted(o.value for o in allowed))
        raise _bad(
            f"{path}.op",
            f"operator {f.op.value!r} does not fit {ref.type.value} field {f.field} "
            f"(use one of: {fits})",
        )
    expr = ref.expr
    vpath = f"{path}.value"
    op = f.op
    if op is Op.is_null:
        wanted = True if f.value is None else f.value
        if not isinstance(wanted, bool):
            raise _bad(vpath, "is_null takes true (field absent) or false (field present)")
        return expr.is_(None) if wanted else expr.is_not(None)
    if op in (Op.in_, Op.not_in):
        values = _list(ref, f.value, vpath)
        if op is Op.in_:
            return _prefiltered(ref, values, expr.in_(values), dialect)
        # "Not one of these" includes records that do not have the field at all.
        return or_(expr.not_in(values), expr.is_(None))
    if op is Op.between:
        low, high = _list(ref, f.value, vpath, size=2)
        if low > high:
            raise _bad(vpath, "between needs low <= high")
        return and_(expr >= low, expr <= high)
    if f.value is None:
        raise _bad(vpath, f"operator {op.value!r} needs a value")
    value = _scalar(ref, f.value, vpath)
    if op is Op.contains:
        return _contains(expr, value, dialect)
    if op is Op.eq:
        return _prefiltered(ref, [value], expr == value, dialect)
    if op is Op.neq:
        # "Not equal" includes records that do not have the field at all.
        return or_(expr != value, expr.is_(None))
    return {Op.gt: expr > value, Op.gte: expr >= value, Op.lt: expr < value}.get(op, expr <= value)


def _compile_conditions(
    conditions: Sequence[Filter | FilterGroup],
    match: Match,
    fields: _Fields,
    path: str,
    dialect: str,
) -> Any:
    compiled = []
    for index, condition in enumerate(conditions):
        here = f"{path}.{index}"
        if isinstance(condition, FilterGroup):
            compiled.append(
                _compile_conditions(
                    condition.filters, condition.match, fields, f"{here}.filters", dialect
                )
            )
        else:
            compiled.append(_compile_filter(condition, fields, here, dialect))
    if not compiled:
        return None
    return and_(*compiled) if match is Match.all else or_(*compiled)


def _top_level_currency(spec: Any, path: str) -> list[tuple[str, list[str]]]:
    """(path of the value, currencies) of each top-level filter pinning `currency`."""
    if spec.match is not Match.all:
        return []
    found = []
    for index, condition in enumerate(spec.filters):
        if isinstance(condition, Filter) and condition.field == "currency":
            value = condition.value
            if condition.op is Op.eq and isinstance(value, str):
                found.append((f"{path}.filters.{index}.value", [value]))
            elif condition.op is Op.in_ and isinstance(value, list):
                found.append((f"{path}.filters.{index}.value", [str(v) for v in value]))
    return found


def _part(
    session: Session,
    ctx: Context,
    spec: Any,
    name: str,
    path: str,
    connectors: dict[int, Connector | None],
) -> Part:
    if spec.connector_id not in connectors:
        connectors[spec.connector_id] = session.get(Connector, spec.connector_id)
    connector = connectors[spec.connector_id]
    if connector is None or connector.workspace_id != ctx.ws.id:
        raise _bad(
            f"{path}.connector_id",
            f"connector {spec.connector_id} does not exist in this workspace",
        )
    try:
        cls = connector_class(connector.type)
        kinds = [k.value for k in enabled_kinds(connector)]
        config = cls.config_model.model_validate(connector.config)
    except (InvalidError, ValidationError, ValueError):
        raise _bad(
            f"{path}.connector_id", f"connector {connector.id} has an unusable configuration"
        ) from None
    kind = RecordKind(spec.kind)
    if kind.value not in kinds:
        raise _bad(
            f"{path}.kind",
            f"connector {connector.id} ({connector.type}) does not read {kind.value!r} "
            f"records (it reads: {', '.join(kinds)})",
        )
    if isinstance(spec, NpsSpec) and kind is not RecordKind.survey_response:
        raise _bad(f"{path}.kind", "nps reads survey_response records")
    label = f"{connector.type} {kind.value}"
    fields = _Fields(cls.raw_fields(config, kind), ctx.dialect, label)
    if spec.date_field is DateField.closed and kind not in CLOSING_KINDS:
        raise _bad(f"{path}.date_field", f"{kind.value} records have no close date")
    if spec.date_field is DateField.answered and kind is not RecordKind.survey_response:
        raise _bad(f"{path}.date_field", "only survey responses are answered")
    condition = _compile_conditions(
        spec.filters, spec.match, fields, f"{path}.filters", ctx.dialect
    )
    ref: FieldRef | None = None
    currency: str | None = None
    if isinstance(spec, NpsSpec):
        ref = fields.resolve(spec.score_field, f"{path}.score_field")
        if ref.type is not FieldType.number:
            raise _bad(f"{path}.score_field", f"{spec.score_field} is not a numeric score")
    elif isinstance(spec, SumSpec | AverageSpec | CountDistinctSpec):
        ref = fields.resolve(spec.field, f"{path}.field")
        if not isinstance(spec, CountDistinctSpec) and ref.type is not FieldType.number:
            raise _bad(
                f"{path}.field",
                f"{spec.type} needs a numeric field; {spec.field} is {ref.type.value}",
            )
        if ref.amount and not isinstance(spec, CountDistinctSpec):
            currency = _currency(ctx, spec, path, cls.amount_currencies(config), connector)
    permalink = None
    if "permalink" in fields.raw_fields:
        permalink = raw_value(["permalink"], FieldType.string, ctx.dialect)
    assert connector.id is not None
    return Part(
        name=name,
        path=path,
        connector_id=connector.id,
        kind=kind.value,
        aggregate=spec.type,
        field=ref,
        date_field=spec.date_field,
        window=spec.window,
        condition=condition,
        currency=currency,
        permalink=permalink,
    )


def _currency(
    ctx: Context,
    spec: Any,
    path: str,
    source: frozenset[str] | None,
    connector: Connector,
) -> str:
    """The one currency amounts are summed in: the key result's, else the spec's filter.
    Refused when the source's amounts can never be in it (`source`: the only currencies
    the connector's configuration allows, e.g. a single-currency CRM account)."""
    pinned = _top_level_currency(spec, path)
    kr = ctx.key_result
    if kr is not None and kr.unit == Unit.currency and kr.currency:
        for value_path, codes in pinned:
            if kr.currency not in codes:
                raise _bad(
                    value_path,
                    f"the key result is in {kr.currency}; this filter keeps only "
                    f"{', '.join(codes)} amounts, which are never converted",
                )
        currency = kr.currency
    else:
        single = [codes[0] for _, codes in pinned if len(codes) == 1]
        if not single:
            raise _bad(
                f"{path}.field",
                "amounts are summed in one currency: bind to a currency key result, or "
                'filter on {"field": "currency", "op": "eq", "value": "EUR"}',
            )
        currency = single[0]
    if source is not None and currency not in source:
        raise _bad(
            f"{path}.connector_id",
            f"connector {connector.id} ({connector.type}) has amounts only in "
            f"{', '.join(sorted(source))}; they are never converted to {currency}",
        )
    return currency


def plan(session: Session, ctx: Context, spec: MetricSpec, path: str = "spec") -> Plan:
    """Check `spec` against the workspace and build its SQL, or a 422 naming the field."""
    connectors: dict[int, Connector | None] = {}
    if isinstance(spec, RatioSpec):
        parts = [
            _part(session, ctx, spec.numerator, "numerator", f"{path}.numerator", connectors),
            _part(session, ctx, spec.denominator, "denominator", f"{path}.denominator", connectors),
        ]
    else:
        name = "responses" if isinstance(spec, NpsSpec) else "value"
        parts = [_part(session, ctx, spec, name, path, connectors)]
    for part in parts:
        # Fail now, not at evaluation, when the window cannot be resolved.
        resolve_window(part.window, ctx, f"{part.path}.window")
        part.statement = _aggregate_statement(part)
    the_plan = Plan(
        spec=spec, parts=parts, connectors={k: v for k, v in connectors.items() if v is not None}
    )
    if len(parts) == 2 and _fusable(parts[0], parts[1]):
        the_plan.fused = _fused_statement(parts[0], parts[1])
    return the_plan


# ---------------------------------------------------------------------------- evaluation


@dataclass(slots=True)
class PartResult:
    part: Part
    start: date
    end: date
    records: int
    #: The aggregate: an int count, an exact Decimal sum/mean, or None (no data).
    result: Decimal | int | None
    other_currencies: dict[str, int] = field(default_factory=dict)
    promoters: int = 0
    passives: int = 0
    detractors: int = 0


@dataclass(slots=True)
class Evaluation:
    value: Decimal | None
    parts: list[PartResult]
    timezone: str

    @property
    def float_value(self) -> float | None:
        return None if self.value is None else float(self.value)

    def details(self) -> dict[str, Any]:
        """JSON facts stored with the value (and read by progress: NPS `responses`)."""
        out: dict[str, Any] = {}
        for p in self.parts:
            if p.part.name == "responses":
                out.update(
                    promoters=p.promoters,
                    passives=p.passives,
                    detractors=p.detractors,
                    responses=p.records,
                )
            else:
                out[p.part.name] = json_number(p.result)
                out[f"{p.part.name}_records"] = p.records
            if p.other_currencies:
                key = (
                    "other_currencies"
                    if len(self.parts) == 1
                    else f"{p.part.name}_other_currencies"
                )
                out[key] = dict(p.other_currencies)
            if p.part.currency:
                out["currency"] = p.part.currency
        first = self.parts[0]
        out["window"] = {
            "start": first.start.isoformat(),
            "end": first.end.isoformat(),
            "timezone": self.timezone,
        }
        return out


def json_number(value: Decimal | int | None) -> int | str | None:
    if value is None or isinstance(value, int):
        return value
    return format(value.normalize(), "f") if value == value.to_integral_value() else str(value)


def _decimal(value: Any) -> Decimal:
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        return Decimal(repr(value))
    return Decimal(int(value))


_DAY_LOW = bindparam("day_low", type_=Date)
_DAY_HIGH = bindparam("day_high", type_=Date)
_AT_LOW = bindparam("at_low", type_=UTCDateTime)
_AT_HIGH = bindparam("at_high", type_=UTCDateTime)


def window_params(part: Part, start: date, end: date, tz: ZoneInfo) -> dict[str, Any]:
    """Bound values of the window terms of `part_where` for `[start, end)`."""
    if part.date_field is DateField.closed:
        return {"day_low": start, "day_high": end}
    low, high = window_bounds(start, end, tz)
    return {"at_low": _utc(low), "at_high": _utc(high)}


def _utc(moment: datetime) -> datetime:
    """`moment` in UTC; local midnights at the ends of the calendar clamp to its ends."""
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        if moment.year == 1:
            return datetime(1, 1, 1, tzinfo=UTC)
        return datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)


def part_where(part: Part, *, with_condition: bool = True) -> list[Any]:
    """The WHERE terms of a part: source, kind, live, window (bound later), filters."""
    terms: list[Any] = [
        R.connector_id == part.connector_id,
        R.kind == part.kind,
        R.deleted == false(),
    ]
    if part.date_field is DateField.closed:
        terms += [R.close_date >= _DAY_LOW, R.close_date < _DAY_HIGH]
    else:
        column = R.modified_at if part.date_field is DateField.modified else R.created_at
        terms += [column >= _AT_LOW, column < _AT_HIGH]
    if with_condition and part.condition is not None:
        terms.append(part.condition)
    if part.field is not None:
        terms.append(part.field.expr.is_not(None))
    return terms


def counted_where(part: Part) -> list[Any]:
    """The WHERE terms of the records that enter the aggregate (amounts: one currency)."""
    terms = part_where(part)
    if part.currency is not None:
        terms.append(R.currency == part.currency)
    return terms


def _aggregate_statement(part: Part) -> Any:
    where = part_where(part)
    ref = part.field
    if part.aggregate == "count":
        return select(func.count()).where(*where)
    assert ref is not None
    if part.aggregate == "nps":
        score = ref.expr
        return select(
            func.count(),
            func.coalesce(func.sum(case((score >= PROMOTER_MIN, 1), else_=0)), 0),
            func.coalesce(func.sum(case((score <= DETRACTOR_MAX, 1), else_=0)), 0),
        ).where(*where)
    if part.aggregate == "count_distinct":
        return select(func.count(), func.count(ref.expr.distinct())).where(*where)
    if part.currency is not None:
        # Grouped by currency so that amounts in other currencies are counted, not summed.
        return (
            select(R.currency, func.count(), func.sum(ref.expr)).where(*where).group_by(R.currency)
        )
    return select(func.count(), func.sum(ref.expr)).where(*where)


def _run(session: Session, statement: Any, params: dict[str, Any]) -> Any:
    # Core statements on the session's connection (same transaction): the ORM layer of
    # Session.execute adds nothing to a bare aggregate and costs a noticeable share of it.
    return session.connection().execute(statement, params)


def evaluate_part(session: Session, part: Part, start: date, end: date, tz: ZoneInfo) -> PartResult:
    """One aggregate, computed by the database."""
    params = window_params(part, start, end, tz)
    out = PartResult(part=part, start=start, end=end, records=0, result=None)
    ref = part.field
    if part.aggregate == "count":
        out.records = int(_run(session, part.statement, params).scalar_one())
        out.result = out.records
        return out
    assert ref is not None
    if part.aggregate == "nps":
        row = _run(session, part.statement, params).one()
        out.records, out.promoters, out.detractors = int(row[0]), int(row[1]), int(row[2])
        out.passives = out.records - out.promoters - out.detractors
        return out
    if part.aggregate == "count_distinct":
        row = _run(session, part.statement, params).one()
        out.records, out.result = int(row[0]), int(row[1])
        return out
    total: Any = None
    if part.currency is not None:
        for currency, count, amount in _run(session, part.statement, params).all():
            if currency == part.currency:
                out.records, total = int(count), amount
            else:
                out.other_currencies[currency or "unknown"] = int(count)
        out.other_currencies = dict(sorted(out.other_currencies.items()))
    else:
        count, total = _run(session, part.statement, params).one()
        out.records = int(count)
    if out.records == 0 or total is None:
        # No records: a sum is 0, a mean does not exist.
        out.result = Decimal(0) if part.aggregate == "sum" else None
        return out
    exact = _decimal(total)
    if ref.amount:
        exact = exact / AMOUNT_SCALE
    out.result = exact if part.aggregate == "sum" else exact / out.records
    return out


def combine(spec: MetricSpec, parts: list[PartResult]) -> Decimal | None:
    """The metric's value from its parts' aggregates."""
    if isinstance(spec, RatioSpec):
        numerator, denominator = parts[0].result, parts[1].result
        if numerator is None or denominator is None or denominator == 0:
            return None
        return Decimal(100) * Decimal(numerator) / Decimal(denominator)
    part = parts[0]
    if isinstance(spec, NpsSpec):
        if part.records == 0:
            return None
        return Decimal(100 * (part.promoters - part.detractors)) / Decimal(part.records)
    return None if part.result is None else Decimal(part.result)


def evaluate(
    session: Session, ctx: Context, the_plan: Plan, *, previous: bool = False
) -> Evaluation:
    """The metric over its window(s) at `ctx.now` (or over the previous equivalent ones)."""
    windows = []
    for part in the_plan.parts:
        start, end = resolve_window(part.window, ctx, f"{part.path}.window")
        if previous:
            start, end = previous_window(part.window, start, end)
        windows.append((start, end))
    parts = the_plan.parts
    if the_plan.fused is not None and windows[0] == windows[1]:
        start, end = windows[0]
        row = _run(session, the_plan.fused, window_params(parts[0], start, end, ctx.tz)).one()
        results = [
            PartResult(part=p, start=start, end=end, records=int(n), result=int(n))
            for p, n in zip(parts, row, strict=True)
        ]
    else:
        results = [
            evaluate_part(session, part, start, end, ctx.tz)
            for part, (start, end) in zip(parts, windows, strict=True)
        ]
    return Evaluation(combine(the_plan.spec, results), results, ctx.ws.timezone)


def _fusable(a: Part, b: Part) -> bool:
    """Two counts over the same records source and date field (a ratio's usual shape)."""
    return (
        a.aggregate == b.aggregate == "count"
        and a.connector_id == b.connector_id
        and a.kind == b.kind
        and a.date_field is b.date_field
    )


def _fused_statement(a: Part, b: Part) -> Any:
    """Both counts of a ratio in one scan: the shared range once, each side's filters as a
    conditional count (exactly what each count alone would give)."""
    shared = part_where(a, with_condition=False)
    conditions = [p.condition if p.condition is not None else true() for p in (a, b)]
    return select(*(func.count(case((c, 1), else_=None)) for c in conditions)).where(
        *shared, or_(*conditions)
    )


# ---------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class CountedRecord:
    id: int
    source_id: str
    connector_id: int
    kind: str
    value: Any
    currency: str | None
    permalink: str | None


def counted_records(
    session: Session,
    part: Part,
    start: date,
    end: date,
    tz: ZoneInfo,
    *,
    after_id: int = 0,
    limit: int = 50,
) -> tuple[list[CountedRecord], int | None]:
    """The records an aggregate counted, by id (keyset page), and the last id if more."""
    value_expr = part.field.expr if part.field is not None else literal(None)
    columns: list[Any] = [R.id, R.source_id, R.connector_id, R.kind, value_expr, R.currency]
    columns.append(part.permalink if part.permalink is not None else literal(None))
    if after_id >= 2**63 - 1:
        return [], None  # past any id a record can have
    query = (
        select(*columns)
        .where(*counted_where(part), R.id > after_id)
        .order_by(R.id)
        .limit(limit + 1)
    )
    rows = session.execute(query, window_params(part, start, end, tz)).all()
    records = []
    for row in rows[:limit]:
        value = row[4]
        if part.field is not None and part.field.amount and value is not None:
            value = Decimal(value) / AMOUNT_SCALE
        records.append(
            CountedRecord(
                id=int(row[0]),
                source_id=row[1],
                connector_id=int(row[2]),
                kind=row[3],
                value=value,
                currency=row[5],
                permalink=row[6] if isinstance(row[6], str) else None,
            )
        )
    more = records[-1].id if len(rows) > limit and records else None
    return records, more
