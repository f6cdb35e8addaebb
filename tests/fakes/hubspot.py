"""A local fake of the HubSpot CRM v3 API, for the HubSpot connector's tests.

It implements the parts the connector uses, with HubSpot's own shapes and limits:

- `POST /crm/v3/objects/{type}/search`: `filterGroups` (ORed groups of ANDed filters, at
  most 5 groups / 10 filters per group / 25 in total), one sort, `properties`, `limit` (at
  most 200), `after` (an offset) and `total`. Paging to an offset at or past the 10,000
  results cap is a 400, as on the real API
  (https://developers.hubspot.com/docs/api-reference/search/guide#limitations).
  Records with equal sort values come back in an arbitrary (hashed) order, because HubSpot
  promises no tie order either.
- `GET /crm/v3/objects/{type}`: the list endpoint (at most 100 per page, `after`,
  `properties`, `archived=true` for archived records with `archivedAt`).
- `GET /crm/v3/pipelines/{type}`: deal pipelines with stage metadata `isClosed` and
  `probability` (strings, as HubSpot returns them).
- Bearer auth: a wrong token gets 401 `INVALID_AUTHENTICATION`.
- Search index lag (`FakeHubSpot(search_lag_ms=…)`): a record created or modified at T
  becomes searchable only once the fake's clock reaches T + lag; until then search serves
  the version indexed before (or nothing, for a new record), as HubSpot's search index
  lags behind writes (connectors/hubspot/BEHAVIOR.md). The list endpoint does not lag.
- Rate limits (`FakeHubSpot(rate_limit=…, rate_interval_ms=…, search_per_second=…)`): a
  request arriving when the account's rolling window already holds `rate_limit` answered
  requests gets HubSpot's 429 (`policyName` TEN_SECONDLY_ROLLING, or SECONDLY for search
  over `search_per_second`), with the `X-HubSpot-RateLimit-*` headers and a `Retry-After`
  of the whole seconds until the window has room. List and pipeline responses carry
  `X-HubSpot-RateLimit-Max / -Remaining / -Interval-Milliseconds / -Daily / -Daily-Remaining`
  from the fake's own count. `rate_limited` counts the 429s it served and `peak_in_window`
  the most requests its window ever held (the figures tests and the benchmark judge by).
- Latency (`FakeHubSpot(latency_seconds=…)`): every answer is held back that long, without
  blocking the other requests in flight.
- Fault injection (`FakeHubSpot.inject`): any status/body/headers, slow responses, malformed
  bodies, replayed responses and a paging cursor that does not advance.

Objects are kept in memory; every property value is a string (or null), as HubSpot returns
them. Tests control data directly through the `FakeHubSpot` methods.
"""

from __future__ import annotations

import asyncio
import json
import operator
import threading
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from operator import attrgetter
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

OBJECT_TYPES = ("contacts", "deals", "feedback_submissions")

#: The property HubSpot keeps the last-modified time in, per object type.
MODIFIED_PROPERTY = {
    "contacts": "lastmodifieddate",
    "deals": "hs_lastmodifieddate",
    "feedback_submissions": "hs_lastmodifieddate",
}
CREATED_PROPERTY = {
    "contacts": "createdate",
    "deals": "createdate",
    "feedback_submissions": "hs_createdate",
}

#: Properties each object type knows, with their HubSpot type (for filter comparisons).
KNOWN_PROPERTIES: dict[str, dict[str, str]] = {
    "contacts": {
        "hs_object_id": "number",
        "createdate": "datetime",
        "lastmodifieddate": "datetime",
        "email": "string",
        "firstname": "string",
        "lastname": "string",
        "lifecyclestage": "enumeration",
        "hs_lead_status": "enumeration",
        "hs_analytics_source": "enumeration",
        "hubspot_owner_id": "enumeration",
    },
    "deals": {
        "hs_object_id": "number",
        "createdate": "datetime",
        "hs_lastmodifieddate": "datetime",
        "dealname": "string",
        "dealstage": "enumeration",
        "pipeline": "enumeration",
        "amount": "number",
        "deal_currency_code": "enumeration",
        "closedate": "datetime",
        "dealtype": "enumeration",
        "hs_is_closed": "bool",
        "hs_is_closed_won": "bool",
        "hs_analytics_source": "enumeration",
        "hubspot_owner_id": "enumeration",
    },
    "feedback_submissions": {
        "hs_object_id": "number",
        "hs_createdate": "datetime",
        "hs_lastmodifieddate": "datetime",
        "hs_value": "number",
        "hs_survey_type": "enumeration",
        "hs_survey_channel": "enumeration",
        "hs_response_group": "enumeration",
        "hs_submission_timestamp": "datetime",
        "hs_content": "string",
        "hs_survey_id": "enumeration",
        "hs_survey_name": "string",
    },
}

#: Properties returned when a request names none (HubSpot returns a small default set).
DEFAULT_PROPERTIES = {
    "contacts": (
        "createdate",
        "email",
        "firstname",
        "hs_object_id",
        "lastmodifieddate",
        "lastname",
    ),
    "deals": (
        "amount",
        "closedate",
        "createdate",
        "dealname",
        "dealstage",
        "hs_lastmodifieddate",
        "hs_object_id",
        "pipeline",
    ),
    "feedback_submissions": ("hs_createdate", "hs_lastmodifieddate", "hs_object_id"),
}

SEARCH_LIMIT_MAX = 200
LIST_LIMIT_MAX = 100
RESULTS_CAP = 10_000
#: 2024-01-01T00:00:00Z, where the fake's clock starts.
CLOCK_START_MS = 1_704_067_200_000

SearchFilter = dict[str, Any]

_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "EQ": operator.eq,
    "NEQ": operator.ne,
    "GT": operator.gt,
    "GTE": operator.ge,
    "LT": operator.lt,
    "LTE": operator.le,
}


def _fast_attribute(object_type: str, name: str) -> str | None:
    """The FakeObject attribute holding an id / stamp property as an int (keeps 25k fast)."""
    if name == "hs_object_id":
        return "id"
    if name == MODIFIED_PROPERTY[object_type]:
        return "updated_ms"
    if name == CREATED_PROPERTY[object_type]:
        return "created_ms"
    return None


def iso_ms(ms: int) -> str:
    """HubSpot's timestamp format: ISO 8601 UTC with milliseconds."""
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def parse_ms(value: str) -> int:
    """Epoch milliseconds from a filter value or stored datetime (epoch ms or ISO 8601)."""
    text = value.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


@dataclass
class FakeObject:
    """One CRM record: `properties` hold only the stored (non-computed) values."""

    id: int
    properties: dict[str, str | None]
    created_ms: int
    updated_ms: int
    archived_ms: int | None = None
    #: Tie-breaker for equal sort values: scrambled but stable, because HubSpot documents
    #: no tie order and a connector must not rely on one.
    tie: int = 0
    #: When this version reaches the search index (search index lag); 0 = at once.
    searchable_ms: int = 0
    #: The version search serves until this one is searchable (None: not found at all).
    indexed: FakeObject | None = None
    #: Property values served as given, computed ones included (`FakeHubSpot.corrupt`).
    served_as: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.tie = (self.id * 2_654_435_761) % 2**32

    def value(self, object_type: str, name: str) -> str | None:
        """A property's current value, including the ones HubSpot computes itself."""
        if name in self.served_as:
            return self.served_as[name]
        if name == "hs_object_id":
            return str(self.id)
        if name == MODIFIED_PROPERTY[object_type]:
            return iso_ms(self.updated_ms)
        if name == CREATED_PROPERTY[object_type]:
            return iso_ms(self.created_ms)
        return self.properties.get(name)


@dataclass
class RecordedRequest:
    """A request the fake received (for assertions)."""

    method: str
    path: str
    query: list[tuple[str, str]]
    body: Any
    authorization: str | None


@dataclass
class Fault:
    """A response the fake serves instead of (or on top of) the normal one.

    `when` picks the requests it applies to; it fires `times` times (None = forever).
    """

    when: Callable[[RecordedRequest], bool]
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    #: Seconds to wait before answering (a slow vendor; the client should time out).
    delay: float = 0.0
    #: Serve the previous successful response to the same path again (a stuck cursor).
    replay: bool = False
    #: Serve the normal response but with `paging.next.after` equal to the request's.
    repeat_after: bool = False
    times: int | None = 1


def on_path(fragment: str, *, method: str | None = None) -> Callable[[RecordedRequest], bool]:
    """A `Fault.when` matching requests whose path contains `fragment`."""

    def match(request: RecordedRequest) -> bool:
        return fragment in request.path and (method is None or request.method == method)

    return match


def rate_limit_fault(
    when: Callable[[RecordedRequest], bool],
    *,
    retry_after: str | None = None,
    interval_ms: int = 10_000,
    times: int | None = 1,
) -> Fault:
    """HubSpot's burst-limit 429 (policy TEN_SECONDLY_ROLLING), optionally with Retry-After."""
    headers = {
        "X-HubSpot-RateLimit-Interval-Milliseconds": str(interval_ms),
        "X-HubSpot-RateLimit-Max": "100",
        "X-HubSpot-RateLimit-Remaining": "0",
    }
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    body = {
        "status": "error",
        "message": "You have reached your ten_secondly_rolling limit.",
        "errorType": "RATE_LIMIT",
        "correlationId": "3f1c1d6e-0000-4000-8000-000000000000",
        "policyName": "TEN_SECONDLY_ROLLING",
    }
    return Fault(when=when, status=429, body=body, headers=headers, times=times)


def daily_limit_fault(when: Callable[[RecordedRequest], bool], *, daily: int = 250_000) -> Fault:
    """HubSpot's daily-limit 429 (policy DAILY): retrying does not help until midnight."""
    headers = {
        "X-HubSpot-RateLimit-Daily": str(daily),
        "X-HubSpot-RateLimit-Daily-Remaining": "0",
    }
    body = {
        "status": "error",
        "message": "You have reached your daily limit.",
        "errorType": "RATE_LIMIT",
        "correlationId": "3f1c1d6e-0000-4000-8000-000000000001",
        "policyName": "DAILY",
    }
    return Fault(when=when, status=429, body=body, headers=headers, times=None)


def _error(status: int, message: str, category: str, **extra: Any) -> JSONResponse:
    body = {
        "status": "error",
        "message": message,
        "correlationId": "00000000-0000-4000-8000-000000000000",
        "category": category,
        **extra,
    }
    return JSONResponse(body, status_code=status)


def default_deal_pipelines() -> list[dict[str, Any]]:
    """The `default` sales pipeline every HubSpot account has, with its standard stages."""
    stages = [
        ("appointmentscheduled", "Appointment scheduled", False, "0.2"),
        ("qualifiedtobuy", "Qualified to buy", False, "0.4"),
        ("presentationscheduled", "Presentation scheduled", False, "0.6"),
        ("decisionmakerboughtin", "Decision maker bought-In", False, "0.8"),
        ("contractsent", "Contract sent", False, "0.9"),
        ("closedwon", "Closed won", True, "1.0"),
        ("closedlost", "Closed lost", True, "0.0"),
    ]
    return [pipeline("default", "Sales Pipeline", stages)]


def pipeline(
    pipeline_id: str, label: str, stages: list[tuple[str, str, bool, str]]
) -> dict[str, Any]:
    """A pipeline in the `GET /crm/v3/pipelines/deals` shape; stages: (id, label, closed, p)."""
    stamp = iso_ms(CLOCK_START_MS)
    return {
        "id": pipeline_id,
        "label": label,
        "displayOrder": 0,
        "createdAt": stamp,
        "updatedAt": stamp,
        "archived": False,
        "stages": [
            {
                "id": stage_id,
                "label": stage_label,
                "displayOrder": order,
                "metadata": {"isClosed": "true" if closed else "false", "probability": p},
                "createdAt": stamp,
                "updatedAt": stamp,
                "archived": False,
                "writePermissions": "CRM_PERMISSIONS_ENFORCEMENT",
            }
            for order, (stage_id, stage_label, closed, p) in enumerate(stages)
        ],
    }


class FakeHubSpot:
    """In-memory HubSpot account plus the FastAPI app serving it (`.app`)."""

    def __init__(
        self,
        token: str = "pat-na1-11111111-2222-3333-4444-555555555555",
        *,
        results_cap: int = RESULTS_CAP,
        search_lag_ms: int = 0,
        rate_limit: int | None = None,
        rate_interval_ms: int = 10_000,
        search_per_second: int | None = None,
        latency_seconds: float = 0.0,
    ) -> None:
        self.token = token
        #: Requests per rolling window of `rate_interval_ms` (None: no limit enforced; the
        #: headers then announce HubSpot's Free/Starter 100 per 10 s).
        self.rate_limit = rate_limit
        self.rate_interval_ms = rate_interval_ms
        #: CRM search requests per rolling second (None: not enforced).
        self.search_per_second = search_per_second
        self.latency_seconds = latency_seconds
        #: List cursors that are not plain ids (HubSpot documents them as opaque tokens).
        self.opaque_cursors = False
        #: 429s served by the enforced limits (not by injected faults).
        self.rate_limited = 0
        #: Most answered requests the burst / search window ever held.
        self.peak_in_window = 0
        self.peak_search_in_second = 0
        #: Most requests the fake was answering at once.
        self.peak_in_flight = 0
        self._in_flight = 0
        self._window: deque[float] = deque()
        self._search_window: deque[float] = deque()
        self._answered = 0
        self._version = 0
        self._sorted_ids: dict[str, tuple[int, list[int]]] = {}
        #: How long after a write the record becomes searchable (HubSpot's index lag).
        self.search_lag_ms = search_lag_ms
        #: Search paging cap (HubSpot's is 10,000); tests may lower it to stay fast.
        self.results_cap = results_cap
        #: Serve at most this many records per page whatever `limit` asks (None = `limit`).
        self.page_size: int | None = None
        self.objects: dict[str, dict[int, FakeObject]] = {t: {} for t in OBJECT_TYPES}
        self.custom_properties: dict[str, dict[str, str]] = {t: {} for t in OBJECT_TYPES}
        self.deal_pipelines: list[dict[str, Any]] = default_deal_pipelines()
        self.requests: list[RecordedRequest] = []
        self.faults: list[Fault] = []
        self.daily_limit = 250_000
        self._clock_ms = CLOCK_START_MS
        self._next_id = 1001
        self._last_bodies: dict[str, tuple[int, bytes]] = {}
        self._lock = threading.RLock()
        self.app = self._build_app()

    # ----------------------------------------------------------------- data control

    def tick(self, ms: int = 1000) -> int:
        """Advance the fake's clock and return the new time (epoch ms)."""
        with self._lock:
            self._clock_ms += ms
            return self._clock_ms

    def add(
        self,
        object_type: str,
        properties: Mapping[str, str | None] | None = None,
        *,
        modified_ms: int | None = None,
        created_ms: int | None = None,
    ) -> FakeObject:
        """Create a record; without stamps it is created and modified one second later."""
        with self._lock:
            stamp = modified_ms if modified_ms is not None else self.tick()
            self._clock_ms = max(self._clock_ms, stamp)
            obj = FakeObject(
                id=self._next_id,
                properties=dict(properties or {}),
                created_ms=created_ms if created_ms is not None else stamp,
                updated_ms=stamp,
                searchable_ms=stamp + self.search_lag_ms if self.search_lag_ms else 0,
            )
            self._next_id += 1
            self._version += 1
            self.objects[object_type][obj.id] = obj
            return obj

    def add_many(
        self, object_type: str, stamps_ms: list[int], properties: Mapping[str, str] | None = None
    ) -> None:
        """Create one record per stamp quickly (bulk seeding for cap tests)."""
        with self._lock:
            table = self.objects[object_type]
            for stamp in stamps_ms:
                table[self._next_id] = FakeObject(
                    self._next_id, dict(properties or {}), stamp, stamp
                )
                self._next_id += 1
            self._version += 1
            if stamps_ms:
                self._clock_ms = max(self._clock_ms, max(stamps_ms))

    def modify(
        self,
        object_type: str,
        object_id: int,
        properties: Mapping[str, str | None],
        *,
        at_ms: int | None = None,
    ) -> None:
        """Change properties; the record's last-modified moves to `at_ms` (default: now+1s)."""
        with self._lock:
            obj = self.objects[object_type][object_id]
            if self.search_lag_ms:
                # Search keeps serving the last indexed version until this one is indexed.
                obj.indexed = self._searchable(obj)
                if obj.indexed is not None:
                    obj.indexed = replace(obj.indexed, properties=dict(obj.indexed.properties))
                    obj.indexed.indexed = None
            obj.properties.update(properties)
            obj.updated_ms = at_ms if at_ms is not None else self.tick()
            if self.search_lag_ms:
                obj.searchable_ms = obj.updated_ms + self.search_lag_ms

    def archive(self, object_type: str, object_id: int, *, at_ms: int | None = None) -> None:
        """Archive (delete) a record, as deleting it in HubSpot's UI or API does."""
        with self._lock:
            obj = self.objects[object_type][object_id]
            stamp = at_ms if at_ms is not None else self.tick()
            obj.archived_ms = stamp
            obj.updated_ms = stamp

    def corrupt(self, object_type: str, object_id: int, name: str, value: str) -> None:
        """Serve property `name` of one record as `value` (even a computed one such as
        `createdate`), where filters and sorts still use the true value: a record whose
        field the connector cannot read, in an otherwise sound page."""
        with self._lock:
            self.objects[object_type][object_id].served_as[name] = value
            self._version += 1

    def gdpr_delete(self, object_type: str, object_id: int) -> None:
        """Delete a record for good (GDPR delete): no archived copy is left to list."""
        with self._lock:
            del self.objects[object_type][object_id]
            self._version += 1

    def set_all_modified(self, object_type: str, ms: int) -> None:
        """Give every record of the type the same last-modified stamp."""
        with self._lock:
            for obj in self.objects[object_type].values():
                obj.updated_ms = ms
            self._clock_ms = max(self._clock_ms, ms)

    def live_ids(self, object_type: str) -> set[str]:
        """Ids of records that are not archived."""
        with self._lock:
            return {str(o.id) for o in self.objects[object_type].values() if o.archived_ms is None}

    def define_property(self, object_type: str, name: str, hubspot_type: str = "string") -> None:
        """Add a custom property so searches may filter on it."""
        self.custom_properties[object_type][name] = hubspot_type

    def inject(self, fault: Fault) -> None:
        """Queue a fault; the first matching fault is applied to each request."""
        with self._lock:
            self.faults.append(fault)

    def requests_to(self, fragment: str) -> list[RecordedRequest]:
        """Recorded requests whose path contains `fragment`."""
        with self._lock:
            return [r for r in self.requests if fragment in r.path]

    # ----------------------------------------------------------------- helpers

    def _searchable(self, obj: FakeObject) -> FakeObject | None:
        """The version of `obj` the search index holds now (None: not indexed yet)."""
        if obj.searchable_ms <= self._clock_ms:
            return obj
        return obj.indexed

    def _property_types(self, object_type: str) -> dict[str, str]:
        return {**KNOWN_PROPERTIES[object_type], **self.custom_properties[object_type]}

    def _take_fault(self, request: RecordedRequest) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.when(request):
                    if fault.times is not None:
                        fault.times -= 1
                        if fault.times <= 0:
                            self.faults.remove(fault)
                    return fault
        return None

    def _rate_headers(self) -> dict[str, str]:
        with self._lock:
            used = self._answered
            limit = self.rate_limit if self.rate_limit is not None else 100
            self._purge(self._window, self.rate_interval_ms / 1000)
            remaining = max(0, limit - len(self._window))
        return {
            "X-HubSpot-RateLimit-Daily": str(self.daily_limit),
            "X-HubSpot-RateLimit-Daily-Remaining": str(max(0, self.daily_limit - used)),
            "X-HubSpot-RateLimit-Interval-Milliseconds": str(self.rate_interval_ms),
            "X-HubSpot-RateLimit-Max": str(limit),
            "X-HubSpot-RateLimit-Remaining": str(remaining),
        }

    @staticmethod
    def _purge(window: deque[float], seconds: float) -> None:
        now = time.monotonic()
        while window and now - window[0] >= seconds:
            window.popleft()

    def _admit(self, search: bool) -> JSONResponse | None:
        """Count a request against the enforced limits; a 429 when a window is full."""
        with self._lock:
            interval = self.rate_interval_ms / 1000
            self._purge(self._window, interval)
            self._purge(self._search_window, 1.0)
            policy, window, limit, seconds = "", self._window, 0, interval
            if self.rate_limit is not None and len(self._window) >= self.rate_limit:
                policy, limit = "TEN_SECONDLY_ROLLING", self.rate_limit
            elif (
                search
                and self.search_per_second is not None
                and len(self._search_window) >= self.search_per_second
            ):
                policy, window, limit, seconds = (
                    "SECONDLY",
                    self._search_window,
                    self.search_per_second,
                    1.0,
                )
            if policy:
                self.rate_limited += 1
                wait = window[0] + seconds - time.monotonic()
                headers = {
                    "X-HubSpot-RateLimit-Interval-Milliseconds": str(int(seconds * 1000)),
                    "X-HubSpot-RateLimit-Max": str(limit),
                    "X-HubSpot-RateLimit-Remaining": "0",
                    "Retry-After": str(max(1, -int(-wait // 1))),
                }
                body = {
                    "status": "error",
                    "message": f"You have reached your {policy.lower()} limit.",
                    "errorType": "RATE_LIMIT",
                    "correlationId": "3f1c1d6e-0000-4000-8000-000000000002",
                    "policyName": policy,
                }
                return JSONResponse(body, status_code=429, headers=headers)
            now = time.monotonic()
            self._window.append(now)
            self.peak_in_window = max(self.peak_in_window, len(self._window))
            if search:
                self._search_window.append(now)
                self.peak_search_in_second = max(
                    self.peak_search_in_second, len(self._search_window)
                )
            self._answered += 1
            return None

    def _ids(self, object_type: str) -> list[int]:
        """Every record id of the type in ascending order (cached between writes)."""
        cached = self._sorted_ids.get(object_type)
        if cached is None or cached[0] != self._version:
            cached = (self._version, sorted(self.objects[object_type]))
            self._sorted_ids[object_type] = cached
        return cached[1]

    def _serialise(
        self, object_type: str, obj: FakeObject, names: list[str] | None
    ) -> dict[str, Any]:
        known = self._property_types(object_type)
        wanted = list(DEFAULT_PROPERTIES[object_type]) if not names else names
        for always in (
            "hs_object_id",
            CREATED_PROPERTY[object_type],
            MODIFIED_PROPERTY[object_type],
        ):
            if always not in wanted:
                wanted.append(always)
        properties: dict[str, str | None] = {}
        for name in wanted:
            # HubSpot silently drops requested properties that do not exist.
            if name in known or name in obj.properties:
                properties[name] = obj.value(object_type, name)
        result: dict[str, Any] = {
            "id": str(obj.id),
            "properties": properties,
            "createdAt": iso_ms(obj.created_ms),
            "updatedAt": iso_ms(obj.updated_ms),
            "archived": obj.archived_ms is not None,
        }
        if obj.archived_ms is not None:
            result["archivedAt"] = iso_ms(obj.archived_ms)
        return result

    def _compare(self, hubspot_type: str, left: str, right: str) -> int:
        if hubspot_type == "datetime":
            a: Any = parse_ms(left)
            b: Any = parse_ms(right)
        elif hubspot_type == "number":
            try:
                a, b = Decimal(left), Decimal(right)
            except InvalidOperation:
                a, b = left, right
        elif hubspot_type == "bool":
            a, b = left.lower() == "true", right.lower() == "true"
        else:
            a, b = left.lower(), right.lower()
        return int(a > b) - int(a < b)

    def _filter_group(
        self, object_type: str, objects: list[FakeObject], filters: list[SearchFilter]
    ) -> list[FakeObject]:
        """Objects matching every filter of a group (stamp/id filters take a fast path)."""
        for flt in filters:
            attribute = _fast_attribute(object_type, flt["propertyName"])
            if attribute is not None and flt["operator"] in _OPERATORS:
                value = str(flt["value"])
                target = int(Decimal(value)) if attribute == "id" else parse_ms(value)
                test, get = _OPERATORS[flt["operator"]], attrgetter(attribute)
                objects = [o for o in objects if test(get(o), target)]
            else:
                objects = [o for o in objects if self._matches(object_type, o, flt)]
        return objects

    def _matches(self, object_type: str, obj: FakeObject, flt: SearchFilter) -> bool:
        name = flt["propertyName"]
        op: str = flt["operator"]
        hubspot_type = self._property_types(object_type)[name]
        value = obj.value(object_type, name)
        if op == "HAS_PROPERTY":
            return value not in (None, "")
        if op == "NOT_HAS_PROPERTY":
            return value in (None, "")
        if value in (None, ""):
            return op == "NEQ"
        assert value is not None
        if op in ("IN", "NOT_IN"):
            hit = any(self._compare(hubspot_type, value, str(v)) == 0 for v in flt["values"])
            return hit if op == "IN" else not hit
        order = self._compare(hubspot_type, value, str(flt["value"]))
        return bool(_OPERATORS[op](order, 0))

    def _sort_key(self, object_type: str, name: str) -> Callable[[FakeObject], Any]:
        fast = _fast_attribute(object_type, name)
        if fast is not None:
            return attrgetter(fast, "tie")
        hubspot_type = self._property_types(object_type)[name]

        def key(obj: FakeObject) -> tuple[int, Any, int]:
            value = obj.value(object_type, name)
            if value in (None, ""):
                return (1, 0, obj.tie)
            assert value is not None
            if hubspot_type == "datetime":
                return (0, parse_ms(value), obj.tie)
            if hubspot_type == "number":
                try:
                    return (0, Decimal(value), obj.tie)
                except InvalidOperation:
                    return (0, Decimal(0), obj.tie)
            return (0, value.lower(), obj.tie)

        return key

    # ----------------------------------------------------------------- endpoints

    def _search(self, object_type: str, body: Any) -> JSONResponse:
        known = self._property_types(object_type)
        if not isinstance(body, dict):
            return _error(400, "Invalid input JSON on line 1", "VALIDATION_ERROR")
        limit = body.get("limit", 10)
        if not isinstance(limit, int) or limit < 1 or limit > SEARCH_LIMIT_MAX:
            return _error(
                400, f"limit must be between 1 and {SEARCH_LIMIT_MAX}", "VALIDATION_ERROR"
            )
        groups = body.get("filterGroups") or []
        if len(groups) > 5 or sum(len(g.get("filters", [])) for g in groups) > 25:
            return _error(400, "Too many filter groups or filters", "VALIDATION_ERROR")
        for group in groups:
            if len(group.get("filters", [])) > 10:
                return _error(400, "Too many filters in a filter group", "VALIDATION_ERROR")
            for flt in group.get("filters", []):
                if flt.get("propertyName") not in known:
                    return _error(
                        400,
                        f"There was a problem with the request: Property "
                        f'"{flt.get("propertyName")}" does not exist',
                        "VALIDATION_ERROR",
                    )
                if flt.get("operator") not in (
                    "EQ",
                    "NEQ",
                    "GT",
                    "GTE",
                    "LT",
                    "LTE",
                    "HAS_PROPERTY",
                    "NOT_HAS_PROPERTY",
                    "IN",
                    "NOT_IN",
                ):
                    return _error(
                        400, f"Unknown operator {flt.get('operator')}", "VALIDATION_ERROR"
                    )
        sorts = body.get("sorts") or []
        if len(sorts) > 1:
            return _error(400, "Only one sort is supported", "VALIDATION_ERROR")
        try:
            offset = int(body.get("after") or 0)
        except (TypeError, ValueError):
            return _error(400, "after must be a number", "VALIDATION_ERROR")
        if offset >= self.results_cap:
            # HubSpot: "you can't page past 10,000 results" (a 400, not an empty page).
            return _error(
                400,
                f"There was a problem with the request: paging past {self.results_cap} "
                "results is not supported",
                "VALIDATION_ERROR",
            )
        names = body.get("properties") or None
        with self._lock:
            live = (o for o in self.objects[object_type].values() if o.archived_ms is None)
            candidates = [v for o in live if (v := self._searchable(o)) is not None]
            if groups:
                try:
                    matched: dict[int, FakeObject] = {}
                    for group in groups:
                        for o in self._filter_group(object_type, candidates, group["filters"]):
                            matched[o.id] = o
                    candidates = list(matched.values())
                except (ValueError, InvalidOperation, KeyError):
                    return _error(
                        400,
                        "There was a problem with the request: bad filter value",
                        "VALIDATION_ERROR",
                    )
            if sorts:
                sort = sorts[0]
                if isinstance(sort, str):
                    name, descending = sort.lstrip("-"), sort.startswith("-")
                else:
                    name = sort.get("propertyName")
                    descending = sort.get("direction") == "DESCENDING"
                if name not in known:
                    return _error(400, f'Property "{name}" does not exist', "VALIDATION_ERROR")
                candidates.sort(key=self._sort_key(object_type, name), reverse=descending)
            else:
                candidates.sort(key=lambda o: o.id)
            total = len(candidates)
            served = min(limit, self.page_size or limit)
            window = candidates[offset : min(offset + served, self.results_cap)]
            results = [self._serialise(object_type, o, names) for o in window]
        payload: dict[str, Any] = {"total": total, "results": results}
        if offset + len(window) < total:
            payload["paging"] = {"next": {"after": str(offset + len(window))}}
        # The search endpoints do not send the X-HubSpot-RateLimit-* headers.
        return JSONResponse(payload)

    def _list(self, object_type: str, query: Mapping[str, list[str]]) -> JSONResponse:
        try:
            limit = int(query.get("limit", ["10"])[0])
        except ValueError:
            return _error(400, "limit must be a number", "VALIDATION_ERROR")
        if limit < 1 or limit > LIST_LIMIT_MAX:
            return _error(400, f"limit must be between 1 and {LIST_LIMIT_MAX}", "VALIDATION_ERROR")
        archived = query.get("archived", ["false"])[0].lower() == "true"
        after_text = query.get("after", [""])[0]
        try:
            if self.opaque_cursors and after_text:
                after_text = after_text.removeprefix("c2s")
            after = int(after_text) if after_text else 0
        except ValueError:
            return _error(400, "after must be a cursor from a previous page", "VALIDATION_ERROR")
        names = [n for raw in query.get("properties", []) for n in raw.split(",") if n] or None
        with self._lock:
            served = min(limit, self.page_size or limit)
            table, ids = self.objects[object_type], self._ids(object_type)
            rows: list[FakeObject] = []
            for object_id in ids[bisect_left(ids, after) :]:
                obj = table[object_id]
                if (obj.archived_ms is not None) == archived:
                    rows.append(obj)
                    if len(rows) > served:
                        break
            page = rows[:served]
            results = [self._serialise(object_type, o, names) for o in page]
        payload: dict[str, Any] = {"results": results}
        if len(rows) > served:
            cursor = str(page[-1].id + 1)
            if self.opaque_cursors:
                cursor = "c2s" + cursor
            payload["paging"] = {"next": {"after": cursor, "link": f"?after={cursor}"}}
        return JSONResponse(payload, headers=self._rate_headers())

    def _pipelines(self, object_type: str) -> JSONResponse:
        results = self.deal_pipelines if object_type == "deals" else []
        return JSONResponse({"results": results}, headers=self._rate_headers())

    # ----------------------------------------------------------------- app

    def _build_app(self) -> FastAPI:
        app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

        async def handle(request: Request, route: Callable[[Any], JSONResponse]) -> Response:
            with self._lock:
                self._in_flight += 1
                self.peak_in_flight = max(self.peak_in_flight, self._in_flight)
            try:
                return await answer(request, route)
            finally:
                with self._lock:
                    self._in_flight -= 1

        async def answer(request: Request, route: Callable[[Any], JSONResponse]) -> Response:
            raw = await request.body()
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode("utf-8", "replace")
            recorded = RecordedRequest(
                method=request.method,
                path=request.url.path,
                query=list(request.query_params.multi_items()),
                body=body,
                authorization=request.headers.get("authorization"),
            )
            with self._lock:
                self.requests.append(recorded)
            fault = self._take_fault(recorded)
            if fault is not None and fault.delay:
                await asyncio.sleep(fault.delay)
            if self.latency_seconds:
                await asyncio.sleep(self.latency_seconds)
            if recorded.authorization != f"Bearer {self.token}":
                return _error(
                    401,
                    "Authentication credentials not found. This API supports OAuth 2.0 "
                    "authentication and you can find more details at "
                    "https://developers.hubspot.com/docs/methods/auth/oauth-overview",
                    "INVALID_AUTHENTICATION",
                )
            limited = self._admit(search=request.url.path.endswith("/search"))
            if limited is not None:
                return limited
            if fault is not None and fault.replay and request.url.path in self._last_bodies:
                status, content = self._last_bodies[request.url.path]
                return Response(content, status_code=status, media_type="application/json")
            if fault is not None and (fault.status != 200 or fault.body is not None):
                headers = dict(fault.headers)
                if isinstance(fault.body, str | bytes):
                    return Response(
                        fault.body,
                        status_code=fault.status,
                        headers=headers,
                        media_type="text/html",
                    )
                return JSONResponse(fault.body, status_code=fault.status, headers=headers)
            response = route(body)
            if fault is not None and fault.repeat_after and response.status_code == 200:
                payload = json.loads(bytes(response.body))
                previous = dict(recorded.query).get("after") or (
                    body.get("after") if isinstance(body, dict) else None
                )
                payload["paging"] = {"next": {"after": previous or "0"}}
                response = JSONResponse(
                    payload,
                    headers={
                        k: v for k, v in response.headers.items() if k.lower().startswith("x-")
                    },
                )
            if response.status_code == 200:
                with self._lock:
                    self._last_bodies[request.url.path] = (200, bytes(response.body))
            return response

        def check_type(object_type: str) -> JSONResponse | None:
            if object_type not in OBJECT_TYPES:
                return _error(
                    404, f"Unable to infer object type from: {object_type}", "OBJECT_NOT_FOUND"
                )
            return None

        @app.post("/crm/v3/objects/{object_type}/search")
        async def search(object_type: str, request: Request) -> Response:
            return await handle(
                request, lambda body: check_type(object_type) or self._search(object_type, body)
            )

        @app.get("/crm/v3/objects/{object_type}")
        async def list_objects(object_type: str, request: Request) -> Response:
            query: dict[str, list[str]] = {}
            for key, value in request.query_params.multi_items():
                query.setdefault(key, []).append(value)
            return await handle(
                request, lambda _: check_type(object_type) or self._list(object_type, query)
            )

        @app.get("/crm/v3/pipelines/{object_type}")
        async def pipelines(object_type: str, request: Request) -> Response:
            return await handle(request, lambda _: self._pipelines(object_type))

        return app
