"""HubSpot connector: contacts, deals and feedback submissions over the CRM v3 API.

A window that starts before HubSpot existed (an initial sync, an id reconciliation) is read
through the list endpoint, 100 records a request, in several streams over disjoint id
ranges at once so that latency does not cap throughput; every request of the account goes
through its one rate governor (`connectors.governor`). Other windows' changes are read
through CRM search on each object's last-modified property, oldest first, with a keyset
cursor on (last-modified millisecond, record id) instead of search's `after`
offset. A keyset query never pages deep, so search's 10,000-results cap cannot truncate a
window, and a record that changes mid-read cannot shift a later one out of view. Archived
(deleted) records, which search never returns, come from the list endpoint with
`archived=true`. Limits and quirks, with sources: BEHAVIOR.md next to this file.
"""

from __future__ import annotations

import hashlib
import queue
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from functools import partial
from typing import Any, ClassVar, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator

from connectors.base import (
    CheckResult,
    Connector,
    ConnectorConfig,
    ConnectorSecrets,
    FieldType,
    Page,
    Record,
    RecordKind,
    Runtime,
    Skipped,
    Window,
)
from connectors.errors import ConfigError, RecordDataError, SourceDataError
from connectors.governor import Governor, Lane, governor_for
from connectors.hubspot.client import LANE_ALL, LANE_SEARCH, HubSpotClient, Response

T = TypeVar("T")

#: CRM search returns at most 200 records per request; the list endpoint at most 100
#: (https://developers.hubspot.com/docs/api-reference/search/guide#limitations).
SEARCH_PAGE_MAX = 200
LIST_PAGE_MAX = 100

#: Private-app limits per account tier: requests per 10-second window, requests per day
#: (https://developers.hubspot.com/docs/api/usage-details). The burst limit and interval
#: the responses announce replace the tier's once the first response is in.
Tier = Literal["free", "starter", "professional", "enterprise"]
TIER_LIMITS: Mapping[str, tuple[int, int]] = {
    "free": (100, 250_000),
    "starter": (100, 250_000),
    "professional": (190, 650_000),
    "enterprise": (190, 1_000_000),
}
BURST_INTERVAL_SECONDS = 10.0
#: CRM search: about 5 requests per second per account, whatever the tier
#: (https://developers.hubspot.com/docs/api-reference/search/guide#limitations); 4 keeps a
#: request of jitter free.
SEARCH_PER_SECOND = 4
#: Parallel list streams. At 19 requests/s and ~0.1-0.3 s per request, 3-6 requests must be
#: in flight to use the limit; the governor, not this number, caps the rate.
LIST_STREAMS = 6
#: Id ranges per stream (more, smaller ranges keep streams busy when ids are unevenly dense).
RANGES_PER_STREAM = 4
#: A window starting before this instant covers every record HubSpot can hold (it was
#: founded in 2006; `lastmodifieddate` is set by HubSpot, never imported): read it whole
#: through the list endpoint rather than search.
FULL_LISTING_BEFORE = datetime(2006, 1, 1, tzinfo=UTC)

#: The one property an id listing asks for (every object has it; HubSpot adds `createdate`
#: and the last-modified stamp to any property list).
ID_PROPERTY = "hs_object_id"
#: HubSpot internal property names: letters, digits and underscores.
_PROPERTY_NAME = re.compile(r"^[A-Za-z0-9_]{1,100}$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)

_OBJECT_TYPES: Mapping[RecordKind, str] = {
    RecordKind.contact: "contacts",
    RecordKind.deal: "deals",
    RecordKind.survey_response: "feedback_submissions",
}
#: The property holding each object's last-modified time (contacts differ from the rest).
_MODIFIED_PROPERTY: Mapping[RecordKind, str] = {
    RecordKind.contact: "lastmodifieddate",
    RecordKind.deal: "hs_lastmodifieddate",
    RecordKind.survey_response: "hs_lastmodifieddate",
}
#: Object type ids used in record URLs (https://developers.hubspot.com/docs/guides/crm/using-object-apis).
_OBJECT_TYPE_IDS: Mapping[RecordKind, str] = {
    RecordKind.contact: "0-1",
    RecordKind.deal: "0-3",
}


#: The API hosts (US and EU data centres) and web app hosts HubSpot serves; see BEHAVIOR.md.
API_HOSTS = ("api.hubapi.com", "api-eu1.hubapi.com")
APP_HOSTS = ("app.hubspot.com", "app-eu1.hubspot.com")


class HubSpotConfig(ConnectorConfig):
    """Non-secret settings of a HubSpot connector."""

    #: API root: https://api.hubapi.com, or https://api-eu1.hubapi.com for EU accounts.
    base_url: str = "https://api.hubapi.com"
    #: The HubSpot account (portal / Hub) id, only used to build links to records.
    portal_id: str | None = Field(default=None, pattern=r"^[0-9]{1,20}$")
    #: Web app root for record links (EU accounts live on https://app-eu1.hubspot.com).
    app_url: str = "https://app.hubspot.com"
    #: Currency of deals without `deal_currency_code` (single-currency accounts omit it).
    default_currency: str = Field(default="EUR", pattern=r"^[A-Z]{3}$")
    #: Deal property used as the normalised `lead_source`.
    deal_source_property: str = Field(default="hs_analytics_source", pattern=_PROPERTY_NAME.pattern)
    #: The account's subscription tier, which sets its API rate limit (free / starter: 100
    #: requests per 10 s; professional / enterprise: 190) until HubSpot's headers say more.
    tier: Tier = "free"

    @field_validator("base_url", "app_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL with a host")
        if parts.query or parts.fragment:
            raise ValueError("must not have a query or fragment")
        return value.rstrip("/")

    @field_validator("custom_fields")
    @classmethod
    def _property_names(
        cls, value: dict[RecordKind, dict[str, FieldType]]
    ) -> dict[RecordKind, dict[str, FieldType]]:
        for kind, fields in value.items():
            if kind not in _OBJECT_TYPES:
                raise ValueError(f"HubSpot does not read record kind {kind.value!r}")
            for name in fields:
                if not _PROPERTY_NAME.match(name):
                    raise ValueError(f"{name!r} is not a HubSpot property name")
        return value


class HubSpotSecrets(ConnectorSecrets):
    """A private app's access token (Settings > Integrations > Private apps)."""

    access_token: SecretStr = Field(min_length=1)


@dataclass(frozen=True)
class _Stage:
    is_closed: bool
    is_won: bool


@dataclass(frozen=True)
class _Cursor:
    """Keyset position within a window's modified-records phase.

    `after_id is None`: records stamped before `ms` are done, plus those stamped exactly
    `ms` when `inclusive` is False. `after_id` set: working through the records stamped
    exactly `ms` in id order; those with id <= `after_id` are done.
    """

    ms: int
    inclusive: bool = True
    after_id: int | None = None

    def key(self) -> tuple[int, int, int]:
        """Total order of positions, to prove every step moves forward."""
        if self.after_id is not None:
            return (self.ms, 1, self.after_id)
        return (self.ms, 0 if self.inclusive else 2, 0)

    def checkpoint(self) -> dict[str, Any]:
        """JSON form handed to the sync service."""
        if self.after_id is not None:
            return {"phase": "modified", "ms": self.ms, "tie_after_id": self.after_id}
        return {"phase": "modified", "ms": self.ms, "inclusive": self.inclusive}


@dataclass(frozen=True)
class _Hit:
    """One search or list result, parsed enough to page on."""

    id: int
    ms: int
    modified_at: datetime
    result: Mapping[str, Any]


@dataclass(frozen=True)
class _Listed:
    """One list page: the records kept and the cursor of the next page (None: done)."""

    records: list[Record]
    after: str | None
    #: The page ascends by id and its cursor is an id past the last one (see `_read_listed`).
    id_cursor: bool = False
    #: Records of the page that could not be normalised (left out, reported in the run).
    skipped: tuple[Skipped, ...] = ()
    #: The page's record ids, when listing ids only (`read_ids`; `records` is then empty).
    ids: tuple[str, ...] = ()


def account_of(config: HubSpotConfig, secrets: HubSpotSecrets) -> str:
    """The HubSpot account `config` and `secrets` reach: the portal id when configured;
    without it, the token (a private app belongs to one account), so connectors of one
    account with different tokens should set `portal_id` to be known as one. The token is
    hashed, never kept as a key."""
    if config.portal_id is not None:
        return f"portal:{config.portal_id}"
    token = secrets.access_token.get_secret_value().encode()
    return "token:" + hashlib.sha256(token).hexdigest()


def account_governor(config: HubSpotConfig, secrets: HubSpotSecrets) -> Governor:
    """The process's rate governor for the HubSpot account `config` and `secrets` reach
    (`account_of`)."""
    account = account_of(config, secrets)
    per_burst, daily = TIER_LIMITS[config.tier]

    def make() -> Governor:
        return Governor(
            {
                LANE_ALL: Lane(LANE_ALL, per_burst, BURST_INTERVAL_SECONDS),
                LANE_SEARCH: Lane(LANE_SEARCH, SEARCH_PER_SECOND, 1.0, margin=0),
            },
            daily_limit=daily,
        )

    return governor_for(("hubspot", config.base_url, account), make)


class HubSpotConnector(Connector):
    """Reads HubSpot contacts, deals and feedback submissions (survey responses)."""

    type_name: ClassVar[str] = "hubspot"
    kinds: ClassVar[frozenset[RecordKind]] = frozenset(_OBJECT_TYPES)
    config_model: ClassVar[type[ConnectorConfig]] = HubSpotConfig
    secrets_model: ClassVar[type[ConnectorSecrets]] = HubSpotSecrets
    url_fields: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "base_url": API_HOSTS,
        "app_url": APP_HOSTS,
    }
    #: HubSpot reports archived records for 90 days only, and GDPR deletes never: the
    #: sync service also reconciles ids against a full listing now and then.
    reconcile_ids: ClassVar[bool] = True
    standard_raw_fields: ClassVar[Mapping[RecordKind, Mapping[str, FieldType]]] = {
        RecordKind.contact: {
            "hs_object_id": FieldType.string,
            "email": FieldType.string,
            "hs_lead_status": FieldType.string,
            "lifecyclestage": FieldType.string,
            "hs_analytics_source": FieldType.string,
            "hubspot_owner_id": FieldType.string,
            "createdate": FieldType.datetime,
            "lastmodifieddate": FieldType.datetime,
        },
        RecordKind.deal: {
            "hs_object_id": FieldType.string,
            "dealname": FieldType.string,
            "pipeline": FieldType.string,
            "dealstage": FieldType.string,
            "amount": FieldType.number,
            "deal_currency_code": FieldType.string,
            "closedate": FieldType.datetime,
            "dealtype": FieldType.string,
            "hs_is_closed": FieldType.boolean,
            "hs_is_closed_won": FieldType.boolean,
            "hs_analytics_source": FieldType.string,
            "hubspot_owner_id": FieldType.string,
            "createdate": FieldType.datetime,
            "hs_lastmodifieddate": FieldType.datetime,
        },
        RecordKind.survey_response: {
            "hs_object_id": FieldType.string,
            "hs_value": FieldType.number,
            "hs_survey_type": FieldType.string,
            "hs_survey_id": FieldType.string,
            "hs_survey_name": FieldType.string,
            "hs_survey_channel": FieldType.string,
            "hs_response_group": FieldType.string,
            "hs_content": FieldType.string,
            "hs_submission_timestamp": FieldType.datetime,
            "hs_createdate": FieldType.datetime,
            "hs_lastmodifieddate": FieldType.datetime,
        },
    }

    @classmethod
    def account_key(cls, config: ConnectorConfig, secrets: ConnectorSecrets) -> str | None:
        """The account the rate governor is shared by (`account_of`): the portal, or the
        token's hash."""
        assert isinstance(config, HubSpotConfig)
        assert isinstance(secrets, HubSpotSecrets)
        return f"hubspot:{config.base_url}:{account_of(config, secrets)}"

    def __init__(
        self, config: ConnectorConfig, secrets: ConnectorSecrets, runtime: Runtime | None = None
    ) -> None:
        if not isinstance(config, HubSpotConfig) or not isinstance(secrets, HubSpotSecrets):
            raise ConfigError("HubSpotConnector needs a HubSpotConfig and HubSpotSecrets")
        super().__init__(config, secrets, runtime)
        self.config: HubSpotConfig = config
        self.secrets: HubSpotSecrets = secrets
        self.governor = account_governor(config, secrets)
        self._client = HubSpotClient(
            base_url=config.base_url,
            access_token=secrets.access_token.get_secret_value(),
            timeout_seconds=self.runtime.timeout_seconds,
            policy=self.runtime.host_policy(API_HOSTS),
            ca_bundle=self.runtime.ca_bundle,
            governor=self.governor,
        )
        self._stages: dict[tuple[str, str], _Stage] | None = None
        self._stages_by_id: dict[str, _Stage] = {}

    # ------------------------------------------------------------------ interface

    def check(self) -> CheckResult:
        """Read one contact: proves the token, its CRM scope and the base URL."""
        response = self._call(
            lambda: self._client.list_page(
                "contacts", limit=1, after=None, properties=["hs_object_id"], archived=False
            )
        )
        if not isinstance(response.body.get("results"), list):
            raise SourceDataError("HubSpot contacts list has no results array")
        limit = _int_or_none(response.headers.get("x-hubspot-ratelimit-daily"))
        remaining = _int_or_none(response.headers.get("x-hubspot-ratelimit-daily-remaining"))
        used = limit - remaining if limit is not None and remaining is not None else None
        return CheckResult(
            ok=True,
            detail="HubSpot accepted the private-app token and returned contacts",
            quota_used=used,
            quota_limit=limit,
        )

    def read(
        self, kind: RecordKind, window: Window, resume: Mapping[str, Any] | None = None
    ) -> Iterator[Page]:
        """Yield `kind` records modified in `window`, then those archived in it.

        A window starting before `FULL_LISTING_BEFORE` reads live records through the list
        endpoint instead of search, with checkpoints `{"phase": "list", "ranges": [[after,
        end], ...]}` (the id ranges still to read, each from its list cursor). Other
        checkpoints are `{"phase": "modified", "ms", "inclusive" | "tie_after_id"}` (a
        keyset position), `{"phase": "archived", "after"}` (the list endpoint's cursor) or
        `{"phase": "done"}`; resuming from any of them re-reads at most the records that
        share the checkpoint's millisecond.
        """
        self.ensure_kind(kind)
        if kind is RecordKind.deal:
            self._load_pipelines()
        if (resume or {}).get("phase") == "list" or (
            not resume and window.start < FULL_LISTING_BEFORE
        ):
            for listed, checkpoint in self._read_listed(kind, window, _parse_ranges(resume)):
                if listed.records or listed.skipped:
                    yield Page(listed.records, checkpoint, listed.skipped)
            phase, after = "archived", None
            yield from self._read_archived(kind, window, after)
            return
        phase, cursor, after = self._parse_resume(resume, window)
        if phase == "modified":
            assert cursor is not None
            yield from self._read_modified(kind, window, cursor)
            phase, after = "archived", None
        if phase == "archived":
            yield from self._read_archived(kind, window, after)

    def read_ids(self, kind: RecordKind) -> Iterator[list[str]]:
        """Ids of every live `kind` record through the list endpoint's parallel id ranges,
        asking for `hs_object_id` alone: HubSpot adds only `createdate` and the
        last-modified stamp to it (BEHAVIOR.md), instead of every property `read` needs."""
        self.ensure_kind(kind)
        return self._read_ids(kind)

    def _read_ids(self, kind: RecordKind) -> Iterator[list[str]]:
        everything = Window(_EPOCH, datetime.max.replace(tzinfo=UTC))
        for listed, _checkpoint in self._read_listed(
            kind, everything, [(None, None)], ids_only=True
        ):
            if listed.ids:
                yield list(listed.ids)

    def record_url(self, kind: RecordKind, source_id: str) -> str | None:
        """Link to a contact or deal in HubSpot's web app when `portal_id` is configured."""
        type_id = _OBJECT_TYPE_IDS.get(kind)
        if self.config.portal_id is None or type_id is None:
            return None
        portal = self.config.portal_id
        return f"{self.config.app_url}/contacts/{portal}/record/{type_id}/{source_id}"

    def close(self) -> None:
        """Close pooled connections."""
        self._client.close()

    # ------------------------------------------------------------------ reading

    def _page_size(self, maximum: int) -> int:
        wanted = self.runtime.page_size or maximum
        return max(1, min(wanted, maximum))

    def _properties(self, kind: RecordKind) -> list[str]:
        names = list(self.raw_fields(self.config, kind))
        if kind is RecordKind.deal and self.config.deal_source_property not in names:
            names.append(self.config.deal_source_property)
        return names

    def _read_modified(self, kind: RecordKind, window: Window, cursor: _Cursor) -> Iterator[Page]:
        object_type = _OBJECT_TYPES[kind]
        modified = _MODIFIED_PROPERTY[kind]
        end_ms = _ceil_ms(window.end)
        limit = self._page_size(SEARCH_PAGE_MAX)
        properties = self._properties(kind)
        # A record without a readable stamp cannot be placed on the keyset, so it may come
        # back on several pages: it is reported once.
        reported: set[str] = set()
        while cursor.ms < end_ms:
            body = _search_body(cursor, modified, end_ms, limit, properties)
            response = self._call(partial(self._client.search, object_type, body))
            results, more = _search_results(response, object_type)
            parsed, unplaced = _hits(results, modified, object_type)
            hits = [hit for hit in parsed if _matches(hit, cursor, end_ms)]
            fresh = tuple(s for _id, s in unplaced if s.source_id not in reported)
            reported.update(s.source_id for s in fresh)
            if cursor.after_id is None:
                if not more:
                    records, skipped = self._normalise(kind, hits, window)
                    if records or skipped or fresh:
                        yield Page(records, {"phase": "archived", "after": None}, fresh + skipped)
                    return
                if not hits:
                    raise SourceDataError(
                        f"HubSpot search of {object_type} returned no usable record although "
                        "more were announced: the cursor cannot advance"
                    )
                last_ms = max(h.ms for h in hits)
                done = [h for h in hits if h.ms < last_ms]
                # Records at `last_ms` may continue on the next page in any order (search
                # sorts on one property only), so they are read again from `last_ms` on; if
                # a whole page shares one millisecond, walk that millisecond by record id.
                following = (
                    _Cursor(last_ms, inclusive=True) if done else _Cursor(last_ms, after_id=0)
                )
            else:
                done = hits
                if not more:
                    following = _Cursor(cursor.ms, inclusive=False)
                elif hits:
                    following = _Cursor(cursor.ms, after_id=max(h.id for h in hits))
                else:
                    raise SourceDataError(
                        f"HubSpot search of {object_type} returned no usable record although "
                        "more were announced: the cursor cannot advance"
                    )
            if following.key() <= cursor.key():
                raise SourceDataError(
                    f"HubSpot search of {object_type} did not advance past {cursor.checkpoint()}"
                )
            records, skipped = self._normalise(kind, done, window)
            if records or skipped or fresh:
                yield Page(records, following.checkpoint(), fresh + skipped)
            cursor = following

    def _read_listed(
        self,
        kind: RecordKind,
        window: Window,
        ranges: list[tuple[str | None, int | None]],
        *,
        ids_only: bool = False,
    ) -> Iterator[tuple[_Listed, dict[str, Any]]]:
        """Live records from the list endpoint, kept when modified in the window (or, with
        `ids_only`, the ids of all of them), each page with its checkpoint.

        HubSpot documents `after` as an opaque cursor. In practice it is the id to continue
        from and pages come in ascending id order (BEHAVIOR.md); when the first page shows
        exactly that, the rest is split into id ranges read by parallel streams, each
        checked page by page (ascending ids at or after its cursor). A cursor that is not
        an id keeps the read sequential.
        """
        object_type = _OBJECT_TYPES[kind]
        if ranges == [(None, None)]:
            # The first page, alone: it shows what the cursors look like.
            first = self._list_page(kind, window, object_type, None, None, ids_only)
            ranges = [(first.after, None)] if first.after is not None else []
            yield first, {"phase": "list", "ranges": _ranges_json(ranges)}
            if not first.id_cursor:
                yield from self._parallel(kind, window, object_type, ranges, ids_only)
                return
        if len(ranges) == 1 and ranges[0][1] is None and _is_id(ranges[0][0]):
            ranges = self._split(object_type, int(str(ranges[0][0])))
        yield from self._parallel(kind, window, object_type, ranges, ids_only)

    def _split(self, object_type: str, start: int) -> list[tuple[str | None, int | None]]:
        """Split ids from `start` on into ranges of some pages each (the last one open)."""
        response = self._call(
            partial(
                self._client.search,
                object_type,
                {
                    "sorts": [{"propertyName": "hs_object_id", "direction": "DESCENDING"}],
                    "properties": ["hs_object_id"],
                    "limit": 1,
                },
            )
        )
        results, _ = _search_results(response, object_type)
        total = response.body.get("total")
        if not results or not isinstance(total, int) or isinstance(total, bool):
            return [(str(start), None)]
        raw_id = _field(results[0], "id", object_type)
        if not isinstance(raw_id, str) or not raw_id.isdigit():
            raise SourceDataError(f"HubSpot {object_type} result has a malformed id {raw_id!r}")
        last = int(raw_id)
        # Search's index lags writes: the newest ids may be missing from it, which the open
        # last range covers.
        pages = total // LIST_PAGE_MAX + 1
        count = max(1, min(LIST_STREAMS * RANGES_PER_STREAM, pages // 4))
        if last <= start or count == 1:
            return [(str(start), None)]
        step = max(1, (last + 1 - start) // count)
        bounds = [start + i * step for i in range(count)]
        return [
            (str(low), bounds[i + 1] if i + 1 < len(bounds) else None)
            for i, low in enumerate(bounds)
        ]

    def _parallel(
        self,
        kind: RecordKind,
        window: Window,
        object_type: str,
        ranges: list[tuple[str | None, int | None]],
        ids_only: bool,
    ) -> Iterator[tuple[_Listed, dict[str, Any]]]:
        """Read `ranges` with up to `LIST_STREAMS` threads; yield pages as they arrive.

        Each yielded page's checkpoint lists every range not finished, at the cursor after
        its last *yielded* page: pages fetched but not yet handed over are read again after
        a crash, never skipped.
        """
        if not ranges:
            return
        positions: dict[int, tuple[str | None, int | None]] = dict(enumerate(ranges))
        todo: queue.SimpleQueue[int] = queue.SimpleQueue()
        for index in positions:
            todo.put(index)
        results: queue.Queue[tuple[int, _Listed | None, BaseException | None]] = queue.Queue(
            maxsize=LIST_STREAMS * 2
        )
        stop = threading.Event()

        def put(item: tuple[int, _Listed | None, BaseException | None]) -> bool:
            while not stop.is_set():
                try:
                    results.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def stream() -> None:
            while not stop.is_set():
                try:
                    index = todo.get_nowait()
                except queue.Empty:
                    return
                after, end = positions[index]
                seen: set[str] = set()
                try:
                    while not stop.is_set():
                        listed = self._list_page(kind, window, object_type, after, end, ids_only)
                        if listed.after is not None:
                            if listed.after in seen:
                                raise SourceDataError(
                                    f"HubSpot list of {object_type} repeated paging cursor "
                                    f"{listed.after!r}: stopping instead of looping"
                                )
                            seen.add(listed.after)
                        if not put((index, listed, None)) or listed.after is None:
                            break
                        after = listed.after
                except BaseException as exc:  # noqa: BLE001 - handed to the reader
                    put((index, None, exc))
                    return

        threads = [
            threading.Thread(target=stream, name=f"hubspot-list-{i}", daemon=True)
            for i in range(min(LIST_STREAMS, len(ranges)))
        ]
        for thread in threads:
            thread.start()
        try:
            while positions:
                index, listed, error = results.get()
                if error is not None:
                    raise error
                assert listed is not None
                if listed.after is None:
                    del positions[index]
                else:
                    positions[index] = (listed.after, positions[index][1])
                checkpoint = {
                    "phase": "list",
                    "ranges": _ranges_json([positions[i] for i in sorted(positions)]),
                }
                yield listed, checkpoint
        finally:
            stop.set()
            for thread in threads:
                thread.join()

    def _list_page(
        self,
        kind: RecordKind,
        window: Window,
        object_type: str,
        after: str | None,
        end: int | None,
        ids_only: bool = False,
    ) -> _Listed:
        """One list page of live records from `after`, cut at id `end` (exclusive).

        `after` None with the returned `after` None means the range is finished. With
        `ids_only` the page asks for `hs_object_id` alone and carries ids, not records.
        """
        response = self._call(
            partial(
                self._client.list_page,
                object_type,
                limit=self._page_size(LIST_PAGE_MAX),
                after=after,
                properties=[ID_PROPERTY] if ids_only else self._properties(kind),
                archived=False,
            )
        )
        results = response.body.get("results")
        if not isinstance(results, list):
            raise SourceDataError(f"HubSpot list of {object_type} has no results array")
        hits, unplaced = _hits(results, _MODIFIED_PROPERTY[kind], object_type)
        next_after = _next_after(response, object_type)
        if after is not None and next_after == after:
            raise SourceDataError(
                f"HubSpot list of {object_type} repeated paging cursor {after!r}: "
                "stopping instead of looping"
            )
        if _is_id(after) or end is not None:
            # Id ranges are only sound while pages come in ascending id order from the
            # cursor on: anything else stops the run rather than losing records silently.
            floor = int(str(after)) if after is not None else 0
            ids = [h.id for h in hits]
            if ids != sorted(set(ids)) or (ids and ids[0] < floor):
                raise SourceDataError(
                    f"HubSpot list of {object_type} from cursor {after!r} is not in ascending "
                    "id order from the cursor on: cannot read it in id ranges"
                )
            if next_after is not None and (
                not _is_id(next_after) or (ids and int(next_after) <= ids[-1])
            ):
                raise SourceDataError(
                    f"HubSpot list of {object_type} gave cursor {next_after!r} after id "
                    f"{ids[-1] if ids else floor}: cannot read it in id ranges"
                )
        if end is not None:
            past = [h for h in hits if h.id >= end]
            hits = [h for h in hits if h.id < end]
            # Ids from `end` on belong to the next range, which reports them.
            unplaced = [(i, s) for i, s in unplaced if i < end]
            if past or (next_after is not None and int(next_after) >= end):
                next_after = None
        ids = [h.id for h in hits]
        # The cursor continues from an id when pages ascend by id and it lies past the last.
        id_cursor = (
            _is_id(next_after)
            and ids == sorted(set(ids))
            and (not ids or int(str(next_after)) > ids[-1])
        )
        if ids_only:
            # A record whose stamp is unreadable still exists: its id is listed too.
            every = sorted([h.id for h in hits] + [i for i, _s in unplaced])
            return _Listed([], next_after, id_cursor, ids=tuple(str(i) for i in every))
        records, skipped = self._normalise(kind, hits, window)
        return _Listed(records, next_after, id_cursor, tuple(s for _i, s in unplaced) + skipped)

    def _read_archived(self, kind: RecordKind, window: Window, after: str | None) -> Iterator[Page]:
        """Archived records from the list endpoint, kept when `archivedAt` is in the window."""
        object_type = _OBJECT_TYPES[kind]
        limit = self._page_size(LIST_PAGE_MAX)
        properties = self._properties(kind)
        seen: set[str] = set()
        while True:
            response = self._call(
                partial(
                    self._client.list_page,
                    object_type,
                    limit=limit,
                    after=after,
                    properties=properties,
                    archived=True,
                )
            )
            results = response.body.get("results")
            if not isinstance(results, list):
                raise SourceDataError(f"HubSpot list of archived {object_type} has no results")
            records: list[Record] = []
            skipped: list[Skipped] = []
            for result in results:
                raw_id = _id(result, object_type)
                try:
                    archived_at = _datetime(_field(result, "archivedAt", object_type), "archivedAt")
                except SourceDataError as exc:
                    error = RecordDataError(
                        raw_id, f"HubSpot archived {object_type} {raw_id}: {exc.message}"
                    )
                    skipped.append(Skipped.of(error))
                    continue
                if archived_at is None or archived_at not in window:
                    continue
                try:
                    hit = _hit(result, _MODIFIED_PROPERTY[kind], object_type)
                    records.append(self._record(kind, hit, archived_at=archived_at))
                except RecordDataError as exc:
                    skipped.append(Skipped.of(exc))
            next_after = _next_after(response, object_type)
            if next_after is None:
                if records or skipped:
                    yield Page(records, {"phase": "done"}, tuple(skipped))
                return
            if next_after == after or next_after in seen:
                raise SourceDataError(
                    f"HubSpot list of archived {object_type} repeated paging cursor "
                    f"{next_after!r}: stopping instead of looping"
                )
            seen.add(next_after)
            after = next_after
            if records or skipped:
                yield Page(records, {"phase": "archived", "after": after}, tuple(skipped))

    def _parse_resume(
        self, resume: Mapping[str, Any] | None, window: Window
    ) -> tuple[str, _Cursor | None, str | None]:
        start = _Cursor(_ceil_ms(window.start), inclusive=True)
        if not resume:
            return "modified", start, None
        phase = resume.get("phase")
        if phase == "done":
            return "done", None, None
        if phase == "archived":
            after = resume.get("after")
            if after is not None and not isinstance(after, str):
                raise ConfigError("HubSpot resume checkpoint has a malformed archived cursor")
            return "archived", None, after
        if phase == "modified":
            ms = resume.get("ms")
            tie = resume.get("tie_after_id")
            inclusive = resume.get("inclusive", True)
            if not isinstance(ms, int) or isinstance(ms, bool):
                raise ConfigError("HubSpot resume checkpoint has no millisecond position")
            if tie is not None and (not isinstance(tie, int) or isinstance(tie, bool)):
                raise ConfigError("HubSpot resume checkpoint has a malformed record id")
            if not isinstance(inclusive, bool):
                raise ConfigError("HubSpot resume checkpoint has a malformed inclusive flag")
            cursor = _Cursor(ms, inclusive=inclusive, after_id=tie)
            # A checkpoint from before this window's start resumes at the start.
            return "modified", max(cursor, start, key=_Cursor.key), None
        raise ConfigError(f"HubSpot resume checkpoint not recognised: phase {phase!r}")

    # ------------------------------------------------------------------ normalising

    def _load_pipelines(self) -> None:
        """Read deal pipelines once per connector: stage ids decide closed / won."""
        if self._stages is not None:
            return
        response = self._call(self._client.deal_pipelines)
        pipelines = response.body.get("results")
        if not isinstance(pipelines, list):
            raise SourceDataError("HubSpot deal pipelines response has no results array")
        stages: dict[tuple[str, str], _Stage] = {}
        by_id: dict[str, _Stage] = {}
        for pipeline in pipelines:
            if not isinstance(pipeline, dict) or not isinstance(pipeline.get("stages"), list):
                raise SourceDataError("HubSpot deal pipeline without a stages array")
            for stage in pipeline["stages"]:
                if not isinstance(stage, dict) or not isinstance(stage.get("id"), str):
                    raise SourceDataError("HubSpot deal pipeline stage without an id")
                metadata = stage.get("metadata") or {}
                # Stage metadata holds strings: isClosed "true"/"false", probability
                # "0.0".."1.0"; a closed stage with probability 1.0 is a won stage.
                closed = str(metadata.get("isClosed", "")).lower() == "true"
                probability = _decimal(metadata.get("probability"), "stage probability")
                parsed = _Stage(is_closed=closed, is_won=closed and probability == 1)
                stages[(str(pipeline.get("id")), stage["id"])] = parsed
                by_id.setdefault(stage["id"], parsed)
        self._stages, self._stages_by_id = stages, by_id

    def _deal_outcome(self, props: Mapping[str, Any]) -> tuple[bool | None, bool | None]:
        stage_id = props.get("dealstage")
        stage = None
        if isinstance(stage_id, str) and self._stages is not None:
            stage = self._stages.get((str(props.get("pipeline")), stage_id)) or (
                self._stages_by_id.get(stage_id)
            )
        if stage is not None:
            return stage.is_closed, stage.is_won
        # Unknown stage (deleted since, or pipelines unreadable): HubSpot's own calculated
        # properties still say whether the deal is closed / won.
        is_won = _bool(props.get("hs_is_closed_won"))
        is_closed = _bool(props.get("hs_is_closed"))
        if is_closed is None and is_won:
            is_closed = True
        return is_closed, is_won

    def _normalise(
        self, kind: RecordKind, hits: list[_Hit], window: Window
    ) -> tuple[list[Record], tuple[Skipped, ...]]:
        """The records of `hits` modified in `window`; those that cannot be normalised are
        left out and returned as skipped, so one bad record never loses its page."""
        records: list[Record] = []
        skipped: list[Skipped] = []
        for hit in hits:
            if hit.modified_at not in window:
                continue
            try:
                records.append(self._record(kind, hit))
            except RecordDataError as exc:
                skipped.append(Skipped.of(exc))
        return records, tuple(skipped)

    def _record(
        self,
        kind: RecordKind,
        hit: _Hit,
        *,
        archived_at: datetime | None = None,
    ) -> Record:
        result = hit.result
        props: dict[str, Any] = dict(result.get("properties") or {})
        common: dict[str, Any] = {
            "kind": kind,
            "source_id": str(hit.id),
            "modified_at": archived_at or hit.modified_at,
            "deleted": archived_at is not None,
            "owner": _text(props.get("hubspot_owner_id")),
            "raw": props,
        }
        try:
            created_default = _datetime(result.get("createdAt"), "createdAt")
            if kind is RecordKind.contact:
                created = _datetime(props.get("createdate"), "createdate") or created_default
                return Record(
                    created_at=_required(created, "createdate", hit),
                    status=_text(props.get("hs_lead_status")),
                    stage=_text(props.get("lifecyclestage")),
                    lead_source=_text(props.get("hs_analytics_source")),
                    email=_text(props.get("email")),
                    **common,
                )
            if kind is RecordKind.deal:
                created = _datetime(props.get("createdate"), "createdate") or created_default
                is_closed, is_won = self._deal_outcome(props)
                close = _datetime(props.get("closedate"), "closedate")
                return Record(
                    created_at=_required(created, "createdate", hit),
                    stage=_text(props.get("dealstage")),
                    amount=_decimal(props.get("amount"), "amount"),
                    currency=_text(props.get("deal_currency_code")) or self.config.default_currency,
                    close_date=close.astimezone(UTC).date() if close else None,
                    is_closed=is_closed,
                    is_won=is_won,
                    deal_type=_text(props.get("dealtype")),
                    lead_source=_text(props.get(self.config.deal_source_property)),
                    **common,
                )
            created = (
                _datetime(props.get("hs_submission_timestamp"), "hs_submission_timestamp")
                or created_default
            )
            return Record(
                created_at=_required(created, "hs_submission_timestamp", hit),
                score=_score(props.get("hs_value")),
                status=_text(props.get("hs_survey_type")),
                **common,
            )
        except SourceDataError as exc:
            raise RecordDataError(
                str(hit.id), f"HubSpot {kind.value} {hit.id}: {exc.message}"
            ) from None
        except ValueError as exc:
            raise RecordDataError(str(hit.id), f"HubSpot {kind.value} {hit.id}: {exc}") from None

    # ------------------------------------------------------------------ plumbing

    def _call(self, request: Callable[[], T]) -> T:
        # Every vendor request goes through the run's one retry policy. Private-app tokens
        # cannot be refreshed, so there is nothing to re-authenticate with.
        return self.runtime.retry.call(request)


# ---------------------------------------------------------------------- module helpers


def _is_id(value: str | None) -> bool:
    return value is not None and value.isdigit() and len(value) <= 20


def _ranges_json(ranges: list[tuple[str | None, int | None]]) -> list[list[Any]]:
    return [[after, end] for after, end in ranges]


def _parse_ranges(resume: Mapping[str, Any] | None) -> list[tuple[str | None, int | None]]:
    """The id ranges a `{"phase": "list"}` checkpoint leaves to read ([(None, None)]: all)."""
    if not resume:
        return [(None, None)]
    raw = resume.get("ranges")
    if not isinstance(raw, list):
        raise ConfigError("HubSpot resume checkpoint has no list ranges")
    ranges: list[tuple[str | None, int | None]] = []
    for item in raw:
        if not isinstance(item, list) or len(item) != 2:
            raise ConfigError("HubSpot resume checkpoint has a malformed list range")
        after, end = item
        if not isinstance(after, str) or not after:
            raise ConfigError("HubSpot resume checkpoint has a malformed list cursor")
        if end is not None and (not isinstance(end, int) or isinstance(end, bool)):
            raise ConfigError("HubSpot resume checkpoint has a malformed list range end")
        ranges.append((after, end))
    return ranges


def _ceil_ms(moment: datetime) -> int:
    """Smallest epoch millisecond >= `moment`: HubSpot stamps are whole milliseconds, so
    `stamp >= moment` is exactly `stamp_ms >= _ceil_ms(moment)` (and likewise for `<`)."""
    return -((_EPOCH - moment) // _MS)


def _search_body(
    cursor: _Cursor, modified: str, end_ms: int, limit: int, properties: list[str]
) -> dict[str, Any]:
    if cursor.after_id is not None:
        filters = [
            {"propertyName": modified, "operator": "EQ", "value": str(cursor.ms)},
            {"propertyName": "hs_object_id", "operator": "GT", "value": str(cursor.after_id)},
        ]
        sort = "hs_object_id"
    else:
        filters = [
            {
                "propertyName": modified,
                "operator": "GTE" if cursor.inclusive else "GT",
                "value": str(cursor.ms),
            },
            {"propertyName": modified, "operator": "LT", "value": str(end_ms)},
        ]
        sort = modified
    return {
        "filterGroups": [{"filters": filters}],
        "sorts": [{"propertyName": sort, "direction": "ASCENDING"}],
        "properties": properties,
        "limit": limit,
    }


def _search_results(response: Response, object_type: str) -> tuple[list[Any], bool]:
    results = response.body.get("results")
    if not isinstance(results, list):
        raise SourceDataError(f"HubSpot search of {object_type} has no results array")
    total = response.body.get("total")
    more = _next_after(response, object_type) is not None
    if isinstance(total, int) and not isinstance(total, bool) and total > len(results):
        more = True
    return results, more


def _next_after(response: Response, object_type: str) -> str | None:
    paging = response.body.get("paging")
    if paging is None:
        return None
    following = paging.get("next") if isinstance(paging, dict) else None
    if following is None:
        return None
    after = following.get("after") if isinstance(following, dict) else None
    if not isinstance(after, str) or not after:
        raise SourceDataError(f"HubSpot {object_type} page has a malformed paging cursor")
    return after


def _field(result: Any, name: str, object_type: str) -> Any:
    if not isinstance(result, dict):
        raise SourceDataError(f"HubSpot {object_type} result is not an object")
    return result.get(name)


def _id(result: Any, object_type: str) -> str:
    """A result's record id; without a usable one the page cannot be read (SourceDataError)."""
    raw_id = _field(result, "id", object_type)
    if not isinstance(raw_id, str) or not raw_id.isdigit():
        raise SourceDataError(f"HubSpot {object_type} result has a malformed id {raw_id!r}")
    return raw_id


def _hits(
    results: list[Any], modified: str, object_type: str
) -> tuple[list[_Hit], list[tuple[int, Skipped]]]:
    """Parse a page's results; those with an id but no readable stamp are returned apart
    (id, skip) instead of failing the page."""
    hits: list[_Hit] = []
    unplaced: list[tuple[int, Skipped]] = []
    for result in results:
        try:
            hits.append(_hit(result, modified, object_type))
        except RecordDataError as exc:
            unplaced.append((int(exc.source_id), Skipped.of(exc)))
    return hits, unplaced


def _hit(result: Any, modified: str, object_type: str) -> _Hit:
    """Parse one result: SourceDataError without a usable id, RecordDataError when the
    record has one but no readable properties or last-modified stamp."""
    raw_id = _id(result, object_type)
    props = result.get("properties")
    if not isinstance(props, dict):
        raise RecordDataError(raw_id, f"HubSpot {object_type} {raw_id} has no properties object")
    try:
        modified_at = _datetime(props.get(modified), modified) or _datetime(
            result.get("updatedAt"), "updatedAt"
        )
    except SourceDataError as exc:
        raise RecordDataError(raw_id, f"HubSpot {object_type} {raw_id}: {exc.message}") from None
    if modified_at is None:
        raise RecordDataError(raw_id, f"HubSpot {object_type} {raw_id} has no {modified}")
    ms = (modified_at - _EPOCH) // _MS
    return _Hit(int(raw_id), ms, modified_at, result)


def _matches(hit: _Hit, cursor: _Cursor, end_ms: int) -> bool:
    """Re-apply the query's own filters (HubSpot compares whole milliseconds)."""
    if cursor.after_id is not None:
        return hit.ms == cursor.ms and hit.id > cursor.after_id
    low_ok = hit.ms >= cursor.ms if cursor.inclusive else hit.ms > cursor.ms
    return low_ok and hit.ms < end_ms


def _datetime(value: Any, name: str) -> datetime | None:
    """HubSpot datetimes: ISO 8601 (`2024-01-01T10:00:00.000Z`), a date, or epoch ms."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise SourceDataError(f"{name} is not a string: {value!r}")
    text = value.strip()
    try:
        if text.lstrip("-").isdigit():
            return _EPOCH + timedelta(milliseconds=int(text))
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, OverflowError):
        raise SourceDataError(f"{name} is not a timestamp: {value!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _decimal(value: Any, name: str) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise SourceDataError(f"{name} is not a number: {value!r}") from None
    if not number.is_finite():
        raise SourceDataError(f"{name} is not a finite number: {value!r}")
    return number


def _score(value: Any) -> int | None:
    number = _decimal(value, "hs_value")
    if number is None:
        return None
    if number != number.to_integral_value() or not 0 <= number <= 10:
        raise SourceDataError(f"hs_value {value!r} is not a whole score from 0 to 10")
    return int(number)


def _bool(value: Any) -> bool | None:
    if value is None or value == "":
        return None
    text = str(value).strip().lower()
    if text in ("true", "false"):
        return text == "true"
    raise SourceDataError(f"not a boolean: {value!r}")


def _text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return str(value)


def _required(value: datetime | None, name: str, hit: _Hit) -> datetime:
    if value is None:
        raise SourceDataError(f"has neither {name} nor createdAt (record {hit.id})")
    return value


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


__all__ = ["HubSpotConfig", "HubSpotConnector", "HubSpotSecrets"]
