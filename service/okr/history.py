"""A key result's value history for charts and spreadsheets: continuous day or week buckets
in the workspace's time zone (burn-up charts), and CSV renderings of points and buckets.

Bucket boundaries are local midnights taken with zoneinfo, so a Europe/Paris day is 23 or
25 hours long on DST nights. They are compared with the stored UTC instants in SQL, which
counts each bucket's points and finds its last one without loading the points (a live NPS
key result records a point every few minutes: a year of them is a quarter of a million).
"""

from __future__ import annotations

import csv
import enum
import io
import json
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from sqlalchemy import Integer, case, func, literal_column
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session, col, select
from starlette.responses import Response

from service.errors import InvalidError
from service.okr.models import KeyResult, KeyResultValue, Objective, Period
from service.progress.service import key_result_window
from service.workspaces.models import Workspace


class HistoryBucket(enum.StrEnum):
    """A local calendar day, or an ISO week (Monday to Sunday), in the workspace's zone."""

    day = "day"
    week = "week"


class HistoryFormat(enum.StrEnum):
    """How the history is written: JSON (the default) or CSV."""

    json = "json"
    csv = "csv"


_STEP_DAYS = {HistoryBucket.day: 1, HistoryBucket.week: 7}

_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _calendar_date(value: object) -> object:
    # Pydantic's lax mode reads `86400` as 1970-01-02; a query date is written YYYY-MM-DD.
    if isinstance(value, str) and not _ISO_DATE.fullmatch(value):
        raise ValueError("give a date as YYYY-MM-DD")
    return value


#: A date query parameter, written YYYY-MM-DD and nothing else.
CalendarDate = Annotated[date, BeforeValidator(_calendar_date)]


class HistoryBucketPublic(BaseModel):
    """One bucket of a key result's history: its value at the bucket's end."""

    start: date = Field(
        description="First local day of the bucket (a Monday for weeks), in the workspace's "
        "time zone."
    )
    start_at: datetime = Field(description="The instant the bucket starts (its local midnight).")
    value: float | None = Field(
        description="The value at the end of the bucket: that of the last point recorded in "
        "it (latest `at`, then latest id), else the previous bucket's; null before the key "
        "result's first point (or when the point giving it had no value)."
    )
    value_at: datetime | None = Field(
        description="When the point giving `value` was recorded (in this bucket or an "
        "earlier one); null before the key result's first point."
    )
    count: int = Field(description="How many points were recorded in the bucket.")


class HistoryBucketsPublic(BaseModel):
    """A key result's history in continuous day or week buckets, oldest first."""

    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True)

    key_result_id: int
    bucket: HistoryBucket
    timezone: str = Field(description="The workspace's time zone, the buckets' calendar.")
    from_: date = Field(
        alias="from",
        description="First day of the range (the `from` asked, or the start of the key "
        "result's window).",
    )
    to: date = Field(
        description="The day after the range, which is half-open (the `to` asked, or the end "
        "of the key result's window), at most the day after today; equal to `from` when the "
        "range has not begun."
    )
    items: list[HistoryBucketPublic] = Field(
        description="One bucket per day or week meeting `[from, to)`, the empty ones included "
        "(they carry the previous value forward)."
    )


# ---------------------------------------------------------------------------- parameters


def check_parameters(
    *,
    bucket: HistoryBucket | None,
    from_: date | None,
    to: date | None,
    limit: int | None,
    cursor: str | None,
) -> None:
    """Refuse parameters that mean nothing together (422 naming the one to drop)."""
    if bucket is None:
        for field, value in (("from", from_), ("to", to)):
            if value is not None:
                raise InvalidError(
                    f"{field} bounds buckets: give bucket=day or bucket=week with it",
                    field=field,
                )
        return
    for field, given in (("limit", limit), ("cursor", cursor)):
        if given not in (None, ""):  # an empty cursor is no cursor, as for the points
            raise InvalidError(
                f"buckets are not paginated: drop {field} (bound them with from and to)",
                field=field,
            )


def csv_page_size(max_rows: int, limit: int | None) -> int:
    """How many points one CSV holds: `limit`, or all of them up to `max_rows`."""
    return min(limit or max_rows, max_rows)


# ---------------------------------------------------------------------------- buckets


def _range(
    window: tuple[date, date], from_: date | None, to: date | None, today: date
) -> tuple[date, date]:
    """The half-open range of local days to bucket: the one asked, else the key result's
    window, its end clipped to today (nothing is known of later days)."""
    start = window[0] if from_ is None else from_
    end = window[1] if to is None else to
    if end <= start:
        if to is not None:
            raise InvalidError(
                f"to ({end}) must be after from ({start}): ranges are half-open [from, to)",
                field="to",
            )
        raise InvalidError(
            f"from ({start}) must be before the end of the key result's window ({end}); "
            "give to as well to look past it",
            field="from",
        )
    try:
        tomorrow = today + timedelta(days=1)
    except OverflowError:
        tomorrow = date.max
    return start, max(start, min(end, tomorrow))


def _bucket_days(bucket: HistoryBucket, start: date, end: date, max_count: int) -> list[date]:
    """The first day of every bucket meeting `[start, end)`, then the day after the last."""
    if end <= start:
        return []
    step = _STEP_DAYS[bucket]
    # date.min is a Monday: a week start never falls off the calendar.
    first = start - timedelta(days=start.weekday()) if bucket is HistoryBucket.week else start
    count = -(-(end - first).days // step)
    if count > max_count:
        raise InvalidError(
            f"from {start} to {end} makes {count} {bucket.value} buckets, more than the "
            f"{max_count} allowed: give a later from or an earlier to, or a longer bucket",
            field="from",
        )
    try:
        return [first + timedelta(days=step * i) for i in range(count + 1)]
    except OverflowError:
        raise InvalidError(
            "the last bucket ends past the calendar's last day", field="to"
        ) from None


def _instants(days: Sequence[date], tz: ZoneInfo) -> list[datetime]:
    """Each day's local midnight in `tz`, as a UTC instant.

    A midnight that does not exist (clocks jumping from 23:59 to 01:00) is read with the
    offset before the jump, which is the instant the day really starts.
    """
    instants = []
    for position, day in enumerate(days):
        try:
            instants.append(datetime.combine(day, time.min, tzinfo=tz).astimezone(UTC))
        except OverflowError:
            field = "from" if position == 0 else "to"
            raise InvalidError(
                f"{day} has no UTC instant in {tz.key}: the range is too close to the "
                "calendar's edge",
                field=field,
            ) from None
    return instants


def _bucket_of(at: Any, bounds: Sequence[datetime], lo: int, hi: int) -> ColumnElement[int]:
    """The index i (lo <= i < hi) of the bucket `[bounds[i], bounds[i + 1])` holding `at`,
    as SQL: a balanced tree of comparisons, so each point costs log2(buckets) of them."""
    if hi - lo == 1:
        return literal_column(str(lo), Integer)
    mid = (lo + hi) // 2
    return case(
        (at < bounds[mid], _bucket_of(at, bounds, lo, mid)),
        else_=_bucket_of(at, bounds, mid, hi),
    )


def _tallies(
    session: Session, key_result_id: int, bounds: Sequence[datetime]
) -> dict[int, tuple[int, datetime, float | None]]:
    """Per bucket index that holds points: how many, and the time and value of the last."""
    at = col(KeyResultValue.at)
    of_key_result = KeyResultValue.key_result_id == key_result_id
    points = (
        select(_bucket_of(at, bounds, 0, len(bounds) - 1).label("bucket"), at.label("at"))
        .where(of_key_result, at >= bounds[0], at < bounds[-1])
        .subquery()
    )
    # Grouped on a subquery's column: PostgreSQL would not see one expression in the
    # comparisons' parameters of the select list and of GROUP BY.
    grouped = session.exec(
        select(points.c.bucket, func.count(), func.max(points.c.at)).group_by(points.c.bucket)
    ).all()
    if not grouped:
        return {}
    last: dict[datetime, tuple[int, float | None]] = {}
    ends = [row[2] for row in grouped]
    for point_at, ident, value in session.exec(
        select(at, col(KeyResultValue.id), col(KeyResultValue.value)).where(
            of_key_result, at.in_(ends)
        )
    ):
        assert ident is not None
        if point_at not in last or ident > last[point_at][0]:
            last[point_at] = (ident, value)
    return {int(index): (int(count), end, last[end][1]) for index, count, end in grouped}


def _last_before(
    session: Session, key_result_id: int, instant: datetime
) -> tuple[datetime, float | None] | None:
    """The time and value of the key result's last point before `instant`."""
    row = session.exec(
        select(col(KeyResultValue.at), col(KeyResultValue.value))
        .where(KeyResultValue.key_result_id == key_result_id, col(KeyResultValue.at) < instant)
        .order_by(col(KeyResultValue.at).desc(), col(KeyResultValue.id).desc())
        .limit(1)
    ).first()
    return None if row is None else (row[0], row[1])


def buckets(
    session: Session,
    ws: Workspace,
    key_result: KeyResult,
    bucket: HistoryBucket,
    from_: date | None,
    to: date | None,
    now: datetime,
    max_count: int,
) -> HistoryBucketsPublic:
    """The key result's history in `bucket`s of the workspace's calendar.

    Every bucket meeting the range is listed, the empty ones too: a bucket without a point
    carries the previous bucket's value (the first one, that of the last point before it),
    so a chart draws a continuous line; buckets before the key result's first point have a
    null value. Weeks are whole ISO weeks, so the first may start before `from`.
    """
    assert key_result.id is not None
    tz = ZoneInfo(ws.timezone)
    objective = session.get(Objective, key_result.objective_id)
    assert objective is not None
    period = session.get(Period, objective.period_id)
    assert period is not None
    start, end = _range(key_result_window(key_result, period), from_, to, now.astimezone(tz).date())
    days = _bucket_days(bucket, start, end, max_count)
    items: list[HistoryBucketPublic] = []
    if days:
        bounds = _instants(days, tz)
        tallies = _tallies(session, key_result.id, bounds)
        carried = _last_before(session, key_result.id, bounds[0])
        value_at, value = carried if carried is not None else (None, None)
        for index, (day, instant) in enumerate(zip(days[:-1], bounds[:-1], strict=True)):
            count = 0
            if index in tallies:
                count, value_at, value = tallies[index]
            items.append(
                HistoryBucketPublic(
                    start=day, start_at=instant, value=value, value_at=value_at, count=count
                )
            )
    return HistoryBucketsPublic(
        key_result_id=key_result.id,
        bucket=bucket,
        timezone=ws.timezone,
        from_=start,
        to=end,
        items=items,
    )


# ---------------------------------------------------------------------------- CSV

#: Columns of a CSV of points (those of the JSON items), and of buckets.
POINT_COLUMNS = (
    "id",
    "key_result_id",
    "at",
    "value",
    "source",
    "note",
    "mapping_id",
    "mapping_version",
    "details",
)
BUCKET_COLUMNS = ("start", "start_at", "value", "value_at", "count")

#: A cell starting with one of these is a formula to spreadsheets (OWASP, CSV injection).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: object) -> object:
    """A CSV cell: text that a spreadsheet would run as a formula gets a leading `'`;
    numbers stay numbers (a negative value is no formula), times are UTC ISO 8601."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict):
        value = json.dumps(value, separators=(",", ":"), sort_keys=True)
    if isinstance(value, str):
        return "'" + value if value.startswith(_FORMULA_STARTS) else value
    return value


def _csv(columns: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)  # RFC 4180: CRLF line ends, fields quoted when needed
    writer.writerow(columns)
    writer.writerows([_cell(value) for value in row] for row in rows)
    return out.getvalue()


def points_csv(points: Iterable[KeyResultValue]) -> str:
    """Points as CSV, one row per point, in `POINT_COLUMNS`."""
    return _csv(POINT_COLUMNS, ([getattr(p, name) for name in POINT_COLUMNS] for p in points))


def buckets_csv(found: HistoryBucketsPublic) -> str:
    """Buckets as CSV, one row per bucket, in `BUCKET_COLUMNS`."""
    return _csv(
        BUCKET_COLUMNS, ([getattr(b, name) for name in BUCKET_COLUMNS] for b in found.items)
    )


def csv_response(body: str, key_result_id: int, next_url: str | None = None) -> Response:
    """`body` as a `text/csv` download named after the key result, linking the next page."""
    headers = {
        "Content-Disposition": f'attachment; filename="key-result-{key_result_id}-history.csv"'
    }
    if next_url is not None:
        headers["Link"] = f'<{next_url}>; rel="next"'
    return Response(body, media_type="text/csv; charset=utf-8", headers=headers)


# ---------------------------------------------------------------------------- OpenAPI

#: The 200 answer's CSV form, beside the JSON one FastAPI documents from the models.
OPENAPI_200: dict[str, Any] = {
    "description": "The points (a page of them) or the buckets, as JSON (default) or as "
    "`format=csv`.",
    "content": {
        "text/csv": {
            "schema": {"type": "string"},
            "example": "start,start_at,value,value_at,count\r\n"
            "2027-03-27,2027-03-26T23:00:00Z,12.0,2027-03-27T21:30:00Z,2\r\n"
            "2027-03-28,2027-03-27T23:00:00Z,12.0,2027-03-27T21:30:00Z,0\r\n",
        }
    },
    "headers": {
        "Content-Disposition": {
            "description": 'CSV only: `attachment; filename="key-result-<id>-history.csv"`.',
            "schema": {"type": "string"},
        },
        "Link": {
            "description": 'CSV of points only, when more points follow: `<URL>; rel="next"`, '
            "the same request with the next page's cursor.",
            "schema": {"type": "string"},
        },
    },
}
