"""Demo connector: the Tartempion dataset of `connectors.demo.dataset`, served "as of now".

Leads and opportunities are normalised exactly as the Salesforce connector normalises its
records (`owner` is the `OwnerId`, ...), survey responses as the Delighted connector does.

A record exists once it is created at or before `now`; what is yielded is its state as of
`now` (a lead qualified after `now` is yielded as not yet qualified; a record deleted before
`now` is yielded with `deleted=True` and `modified_at` = deletion time). Records are sorted
by `(modified_at, source_id)` and paged with a keyset checkpoint
`{"after_ts": <ISO datetime>, "after_id": <id>}`, like a real incremental API.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, ClassVar

from pydantic import Field, field_validator

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
    Window,
)
from connectors.demo.dataset import PARIS, Dataset, Timeline, Version, generate, live_answer
from connectors.errors import AuthError, ConfigError

DEFAULT_PAGE_SIZE = 500

_S = FieldType.string
_N = FieldType.number
_B = FieldType.boolean
_D = FieldType.date
_T = FieldType.datetime

#: The same common fields as the Salesforce connector reads, so its mappings fit the demo.
_SALESFORCE_COMMON = {
    "Id": _S,
    "IsDeleted": _B,
    "CreatedDate": _T,
    "LastModifiedDate": _T,
    "SystemModstamp": _T,
    "OwnerId": _S,
    "LeadSource": _S,
}


class DemoConfig(ConnectorConfig):
    """Settings of the demo dataset."""

    #: Random seed: the same (seed, size, year, now) always gives the same records.
    seed: int = 42
    #: Leads created in the year; opportunities and NPS answers scale with it.
    size: int = Field(default=3000, ge=10, le=200_000)
    #: Calendar year of the dataset; default: the year of `now`.
    year: int | None = Field(default=None, ge=2000, le=2100)
    #: Earlier years to generate too, each 30% smaller than the next (a growing company),
    #: so that "the same metric last year" (the ambition check) has something to compare.
    history_years: int = Field(default=0, ge=0, le=5)
    #: Fixed "now" (ISO 8601; naive means UTC); default: the sync service's clock.
    now: datetime | None = None
    #: Start of the live in-app NPS stream (ISO 8601; naive means UTC): from then on, a
    #: new customer answers every `live_interval_seconds`, at any hour, so the demo's
    #: numbers move while you watch. None: no live stream (the dataset only).
    live_since: datetime | None = None
    #: Seconds between two answers of the live stream.
    live_interval_seconds: int = Field(default=120, ge=10, le=86_400)
    #: Floor every yielded created_at/modified_at to this many seconds (counted from the
    #: start of the year), to rehearse sources whose clocks are coarse; 1 = as generated.
    timestamp_resolution_seconds: int = Field(default=1, ge=1)
    #: Behave like a source rejecting its credentials (check and read raise AuthError), to
    #: show the failure path in a demo or a test. The dataset itself needs no credentials.
    reject_credentials: bool = False

    @field_validator("now", "live_since")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class DemoSecrets(ConnectorSecrets):
    """The demo needs no secrets."""


class DemoConnector(Connector):
    """Serves the deterministic Tartempion dataset as leads, opportunities and NPS answers."""

    type_name: ClassVar[str] = "demo"
    kinds: ClassVar[frozenset[RecordKind]] = frozenset(
        {RecordKind.lead, RecordKind.opportunity, RecordKind.survey_response}
    )
    config_model: ClassVar[type[ConnectorConfig]] = DemoConfig
    secrets_model: ClassVar[type[ConnectorSecrets]] = DemoSecrets
    standard_raw_fields: ClassVar[Mapping[RecordKind, Mapping[str, FieldType]]] = {
        RecordKind.lead: {
            **_SALESFORCE_COMMON,
            "Status": _S,
            "Email": _S,
            "Company": _S,
            "Country": _S,
            "Industry": _S,
            "Title": _S,
            "OwnerName": _S,
            "IsConverted": _B,
            "ConvertedDate": _D,
            "ConvertedOpportunityId": _S,
        },
        RecordKind.opportunity: {
            **_SALESFORCE_COMMON,
            "Name": _S,
            "AccountId": _S,
            "AccountName": _S,
            "StageName": _S,
            "IsClosed": _B,
            "IsWon": _B,
            "CloseDate": _D,
            "Amount": _N,
            "CurrencyIsoCode": _S,
            "Probability": _N,
            "Type": _S,
            "ForecastCategoryName": _S,
            "OwnerName": _S,
        },
        RecordKind.survey_response: {
            "survey_type": _S,
            "comment": _S,
            "permalink": _S,
            # Nested like Delighted's own payload: raw["person_properties"]["Customer Type"].
            "person_properties.Customer Type": _S,
            "person_properties.Company": _S,
            "person_properties.Country": _S,
        },
    }

    def __init__(
        self, config: ConnectorConfig, secrets: ConnectorSecrets, runtime: Runtime | None = None
    ) -> None:
        if not isinstance(config, DemoConfig):
            raise ConfigError("demo connector needs a DemoConfig")
        super().__init__(config, secrets, runtime)
        self._config = config

    def check(self) -> CheckResult:
        """Always ok, unless the config asks to simulate rejected credentials."""
        self._refuse_if_configured()
        now = self._now()
        return CheckResult(
            ok=True,
            detail=(
                f"demo dataset: seed {self._config.seed}, {self._config.size} leads in "
                f"{self._year(now)}, as of {now.isoformat()}"
            ),
        )

    def read(
        self, kind: RecordKind, window: Window, resume: Mapping[str, Any] | None = None
    ) -> Iterator[Page]:
        """Yield the records of `kind` whose modification (as of now) is in `window`."""
        self.ensure_kind(kind)
        self._refuse_if_configured()
        after = _parse_checkpoint(resume)
        now = self._now()
        year = self._year(now)
        # (modified second, timeline, version, its dataset: None for live answers)
        entries: list[tuple[int, Timeline, Version, Dataset | None]] = []
        for back in range(self._config.history_years, -1, -1):
            # Ids embed the year, so the years never collide.
            year_size = max(10, round(self._config.size * 0.7**back))
            dataset = generate(self._config.seed + back, year_size, year - back)
            entries += [(*e, dataset) for e in self._as_of(dataset, kind, int(now.timestamp()))]
        if kind is RecordKind.survey_response:
            entries += [(*e, None) for e in self._live_answers(window, int(now.timestamp()))]
        entries.sort(key=lambda e: (e[0], e[1].source_id))
        # Keys are (unix seconds, id); window bounds and checkpoints compare as floats, so
        # sub-second bounds cut exactly between whole-second stamps.
        keys = [(at, timeline.source_id) for at, timeline, _, _ in entries]
        lower = (window.start.timestamp(), "")
        if after is not None and after > lower:
            # A checkpoint sorts after every record it covers: resume strictly after it.
            begin = bisect.bisect_right(keys, after)
        else:
            begin = bisect.bisect_left(keys, lower)
        end = bisect.bisect_left(keys, (window.end.timestamp(), ""))
        size = self.runtime.page_size or DEFAULT_PAGE_SIZE
        resolution = self._config.timestamp_resolution_seconds
        for start in range(begin, end, size):
            # Records are only built for what is yielded: incremental reads stay cheap.
            chunk = [
                _record(
                    timeline,
                    version,
                    at,
                    timeline.created_at
                    if dataset is None
                    else _coarse(timeline.created_at, dataset, resolution),
                )
                for at, timeline, version, dataset in entries[start : min(start + size, end)]
            ]
            last = chunk[-1]
            yield Page(
                records=chunk,
                checkpoint={"after_ts": last.modified_at.isoformat(), "after_id": last.source_id},
            )

    def _refuse_if_configured(self) -> None:
        if self._config.reject_credentials:
            raise AuthError("demo connector is configured to reject its credentials")

    def _now(self) -> datetime:
        # Whole seconds: the dataset's clock ticks in seconds.
        return (self._config.now or self.runtime.now()).replace(microsecond=0)

    def _year(self, now: datetime) -> int:
        # Tartempion's year is the Paris calendar's: 00:30 on 1 January in Paris is already
        # the new year, although UTC still says 31 December.
        return self._config.year or now.astimezone(PARIS).year

    def _live_answers(self, window: Window, now: int) -> list[tuple[int, Timeline, Version]]:
        """The live stream's answers given up to `now` inside `window` (never edited, so
        only the window's own answers are built: a long-running demo stays cheap)."""
        since = self._config.live_since
        if since is None:
            return []
        interval = self._config.live_interval_seconds
        first = int(since.timestamp())
        lowest = max(0, math.ceil((window.start.timestamp() - first) / interval))
        last_at = min(float(now), math.ceil(window.end.timestamp()) - 1)
        if last_at < first:
            return []
        answers = []
        for index in range(lowest, int((last_at - first) // interval) + 1):
            timeline = live_answer(self._config.seed, first + index * interval, index)
            answers.append((timeline.created_at, timeline, timeline.versions[0]))
        return answers

    def _as_of(
        self, dataset: Dataset, kind: RecordKind, now: int
    ) -> list[tuple[int, Timeline, Version]]:
        """(yielded modification second, timeline, current version) of the records existing
        at `now`, sorted like the pages."""
        resolution = self._config.timestamp_resolution_seconds
        entries = []
        for timeline in dataset.timelines[kind]:
            version = timeline.as_of(now)
            if version is not None:
                entries.append((_coarse(version.at, dataset, resolution), timeline, version))
        entries.sort(key=lambda e: (e[0], e[1].source_id))
        return entries


def _coarse(at: int, dataset: Dataset, resolution: int) -> int:
    """`at` floored to `resolution` seconds, counted from the start of the dataset's year."""
    if resolution == 1:
        return at
    origin = int(datetime(dataset.year, 1, 1, tzinfo=UTC).timestamp())
    return origin + (at - origin) // resolution * resolution


def _parse_checkpoint(resume: Mapping[str, Any] | None) -> tuple[float, str] | None:
    if resume is None:
        return None
    try:
        moment = datetime.fromisoformat(str(resume["after_ts"]))
        source_id = resume["after_id"]
    except (KeyError, ValueError):
        raise ConfigError("demo checkpoint must be {'after_ts': <ISO>, 'after_id': <id>}") from None
    if moment.tzinfo is None or not isinstance(source_id, str):
        raise ConfigError("demo checkpoint needs an aware after_ts and a string after_id")
    return moment.timestamp(), source_id


def _record(timeline: Timeline, version: Version, modified: int, created: int) -> Record:
    """The normalised record of one version (fields named like Salesforce / Delighted)."""
    # A copy, so a consumer editing `raw` cannot alter the cached dataset.
    raw = dict(version.raw)
    created_at = datetime.fromtimestamp(created, UTC)
    modified_at = datetime.fromtimestamp(modified, UTC)
    if timeline.kind is RecordKind.lead:
        return Record(
            kind=timeline.kind,
            source_id=timeline.source_id,
            created_at=created_at,
            modified_at=modified_at,
            deleted=version.deleted,
            status=raw["Status"],
            lead_source=raw["LeadSource"],
            owner=raw["OwnerId"],
            email=raw["Email"],
            raw=raw,
        )
    if timeline.kind is RecordKind.opportunity:
        return Record(
            kind=timeline.kind,
            source_id=timeline.source_id,
            created_at=created_at,
            modified_at=modified_at,
            deleted=version.deleted,
            stage=raw["StageName"],
            is_closed=raw["IsClosed"],
            is_won=raw["IsWon"],
            close_date=date.fromisoformat(raw["CloseDate"]),
            amount=Decimal(str(raw["Amount"])),
            currency=raw["CurrencyIsoCode"],
            lead_source=raw["LeadSource"],
            owner=raw["OwnerId"],
            deal_type=raw["Type"],
            raw=raw,
        )
    return Record(
        kind=timeline.kind,
        source_id=timeline.source_id,
        created_at=created_at,
        modified_at=modified_at,
        deleted=version.deleted,
        score=raw["score"],
        email=raw["person"]["email"],
        raw=raw,
    )
