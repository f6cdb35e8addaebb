"""Delighted connector: NPS survey responses, read incrementally by `updated_at`.

Reading strategy (see BEHAVIOR.md for the sources):

* Delighted filters on whole unix seconds (`updated_since` / `updated_until`, both
  inclusive), so a window `[start, end)` is queried as `floor(start)..ceil(end)` and cut
  exactly to `[start, end)` here.
* Responses are asked oldest `updated_at` first (`order=asc:updated_at`) and read as a
  keyset on the second: after each page the next request restarts at
  `updated_since = <last second seen>`, page 1, skipping ids already yielded for that
  second. Plain page numbers are only used to walk through more responses than a page
  holds that share one second. A response edited mid-run therefore moves to the end of
  the order instead of shifting unread responses past a page boundary, which is how
  page-number pagination loses rows when data changes during a run.
* The checkpoint is `{"updated_since": <second>}`: resuming re-reads that one second
  (duplicates are deduplicated by id downstream), never skips anything.
* A second pass reads the window by creation time (`since` / `until`, `order=asc`) and
  keeps the responses never edited (`updated_at` null), whether or not `updated_since`
  listed them; its checkpoint is `{"created_since": <second>}`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import urlsplit

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
    Skipped,
    Window,
)
from connectors.delighted.client import MAX_PER_PAGE, DelightedClient
from connectors.errors import ConfigError, RecordDataError, SourceDataError

DEFAULT_BASE_URL = "https://api.delighted.com/v1"
#: The only host Delighted's API is served from (https://delighted.com/docs/api).
API_HOSTS = ("api.delighted.com",)


class DelightedConfig(ConnectorConfig):
    """Non-secret settings of a Delighted connector."""

    #: API root; only changed for a proxy or a test double.
    base_url: str = DEFAULT_BASE_URL
    #: Responses per request (Delighted's maximum is 100). `Runtime.page_size` wins if set.
    per_page: int = Field(default=MAX_PER_PAGE, ge=1, le=MAX_PER_PAGE)

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("base_url must be an absolute http(s) URL")
        if parts.username is not None or parts.password is not None:
            # Credentials in the URL would end up in logs and error messages.
            raise ValueError("base_url must not contain credentials")
        if parts.query or parts.fragment:
            raise ValueError("base_url must not have a query or fragment")
        return value.strip().rstrip("/")


class DelightedSecrets(ConnectorSecrets):
    """Credentials of a Delighted connector."""

    #: The project's private API key (Delighted: Settings > API).
    api_key: str = Field(min_length=1, repr=False)


class DelightedConnector(Connector):
    """Reads Delighted survey responses as `survey_response` records.

    `record_url` stays None: Delighted documents a per-response `permalink` (kept in
    `raw`), not a dashboard URL that can be built from a response id.
    """

    type_name: ClassVar[str] = "delighted"
    kinds: ClassVar[frozenset[RecordKind]] = frozenset({RecordKind.survey_response})
    config_model: ClassVar[type[ConnectorConfig]] = DelightedConfig
    secrets_model: ClassVar[type[ConnectorSecrets]] = DelightedSecrets
    url_fields: ClassVar[Mapping[str, tuple[str, ...]]] = {"base_url": API_HOSTS}
    # A deleted response simply stops being listed (BEHAVIOR.md, "Deletes are invisible").
    reports_deletes: ClassVar[bool] = False
    standard_raw_fields: ClassVar[Mapping[RecordKind, Mapping[str, FieldType]]] = {
        RecordKind.survey_response: {
            "survey_type": FieldType.string,
            "comment": FieldType.string,
            "permalink": FieldType.string,
        }
    }

    def __init__(
        self, config: ConnectorConfig, secrets: ConnectorSecrets, runtime: Runtime | None = None
    ) -> None:
        if not isinstance(config, DelightedConfig):
            raise ConfigError("Delighted connector needs a DelightedConfig")
        if not isinstance(secrets, DelightedSecrets):
            raise ConfigError("Delighted connector needs DelightedSecrets")
        super().__init__(config, secrets, runtime)
        self._config = config
        self._secrets = secrets
        self._client: DelightedClient | None = None

    def check(self) -> CheckResult:
        """Probe the key with `GET /metrics.json`; AuthError when Delighted rejects it."""
        client = self._http()
        metrics = self.runtime.retry.call(client.metrics)
        count = metrics.get("response_count")
        detail = "Delighted accepted the API key"
        if isinstance(count, int) and not isinstance(count, bool):
            detail += f"; /metrics.json reports {count} responses in its default period"
        return CheckResult(ok=True, detail=detail)

    def read(
        self, kind: RecordKind, window: Window, resume: Mapping[str, Any] | None = None
    ) -> Iterator[Page]:
        """Yield survey responses modified in `window` (see module docstring): those edited
        by `updated_at`, then those never edited (`updated_at` null) by `created_at`."""
        self.ensure_kind(kind)
        if window.start == window.end:
            return
        low = math.floor(window.start.timestamp())
        high = math.ceil(window.end.timestamp())
        if resume is not None and "created_since" in resume:
            yield from self._walk(window, low, high, _resume_second(resume, "created_since"), True)
            return
        since = low if resume is None else _resume_second(resume, "updated_since")
        yield from self._walk(window, low, high, since, False)
        # Whether `updated_since` lists never-edited answers is undocumented: a second pass
        # by creation time reads them either way (BEHAVIOR.md, "Never-edited responses").
        yield from self._walk(window, low, high, low, True)

    def _walk(
        self, window: Window, low: int, high: int, start: int, by_creation: bool
    ) -> Iterator[Page]:
        """One keyset pass over `[low, high]` from the second `start`: by `updated_at`, or
        with `by_creation` by `created_at`, keeping only never-edited responses."""
        since = min(max(low, start), high)
        per_page = min(self.runtime.page_size or self._config.per_page, MAX_PER_PAGE)
        client = self._http()
        key = "created_since" if by_creation else "updated_since"
        stamp_of = _created_second if by_creation else _second

        page_number = 1
        # Ids already yielded whose stamp is the current `since` second.
        seen_at_since: set[str] = set()
        previous_ids: list[str] | None = None
        while True:

            def fetch(since: int = since, page_number: int = page_number) -> list[Any]:
                return client.list_survey_responses(
                    updated_since=since,
                    updated_until=high,
                    page=page_number,
                    per_page=per_page,
                    by_creation=by_creation,
                )

            items = self.runtime.retry.call(fetch)
            if not items:
                return
            parsed: list[Record] = []
            skipped: list[Skipped] = []
            for item in items:
                try:
                    parsed.append(_to_record(item))
                except RecordDataError as exc:
                    skipped.append(Skipped.of(exc))
            ids = [r.source_id for r in parsed] + [s.source_id for s in skipped]
            # Never-edited responses belong to the creation pass. In the `updated_at` pass
            # they are skipped and neither order nor keyset rely on where the API put them.
            keyed = [
                (r, stamp_of(r))
                for r in parsed
                if by_creation or r.raw.get("updated_at") is not None
            ]
            stamps = [stamp for _r, stamp in keyed]
            what = "since" if by_creation else "updated_since"
            if previous_ids is not None and ids == previous_ids:
                # The same page twice for consecutive page numbers: the API is not paging.
                # Stopping silently could drop the rest of this second, so fail loudly.
                raise SourceDataError(
                    f"Delighted returned the same page twice ({what}={since}, "
                    f"page={page_number}); refusing to loop"
                )
            if stamps and (stamps != sorted(stamps) or stamps[0] < since or stamps[-1] > high):
                # The keyset relies on this order; without it responses could be skipped.
                raise SourceDataError(
                    "Delighted survey responses are not in "
                    f"{'created_at' if by_creation else 'updated_at'} order within "
                    f"[{since}, {high}] ({what}={since}, page={page_number})"
                )
            fresh = [
                r
                for r, stamp in keyed
                if not (stamp == since and r.source_id in seen_at_since)
                and r.modified_at in window
                and not (by_creation and r.raw.get("updated_at") is not None)
            ]
            last = stamps[-1] if stamps else since
            if last > since:
                # Everything before `last` is read; restart the keyset at `last`.
                since, page_number, previous_ids = last, 1, None
                seen_at_since = {r.source_id for r, stamp in keyed if stamp == last}
            else:
                # A whole page within one second (or of never-edited responses only):
                # walk on by page number.
                seen_at_since.update(r.source_id for r, _stamp in keyed)
                page_number += 1
                previous_ids = ids
            yield Page(records=fresh, checkpoint={key: since}, skipped=tuple(skipped))

    def close(self) -> None:
        """Close the HTTP connection pool."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def _http(self) -> DelightedClient:
        if self._client is None:
            self._client = DelightedClient(
                self._config.base_url,
                self._secrets.api_key,
                timeout_seconds=self.runtime.timeout_seconds,
                policy=self.runtime.host_policy(API_HOSTS),
                ca_bundle=self.runtime.ca_bundle,
            )
        return self._client


def _resume_second(resume: Mapping[str, Any], key: str) -> int:
    value = resume.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(
            "Delighted resume checkpoint must be {'updated_since': <unix seconds>} "
            "or {'created_since': <unix seconds>}"
        )
    return value


def _second(record: Record) -> int:
    return int(record.modified_at.timestamp())


def _created_second(record: Record) -> int:
    return int(record.created_at.timestamp())


def _unix(value: Any, field: str, response_id: str) -> datetime:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RecordDataError(
            response_id,
            f"Delighted survey response {response_id!r}: {field} is not a unix timestamp",
        )
    try:
        return datetime.fromtimestamp(int(value), UTC)
    except (OverflowError, OSError, ValueError):
        raise RecordDataError(
            response_id, f"Delighted survey response {response_id!r}: {field} is out of range"
        ) from None


def _to_record(item: Any) -> Record:
    """Normalise one survey response: RecordDataError names the response and the field
    (the response is skipped); SourceDataError when it has no usable id (the page fails)."""
    if not isinstance(item, dict):
        raise SourceDataError(f"Delighted survey response is not an object: {type(item).__name__}")
    raw_id = item.get("id")
    if isinstance(raw_id, bool) or not isinstance(raw_id, str | int) or raw_id == "":
        raise SourceDataError("Delighted survey response without a usable id")
    response_id = str(raw_id)
    score = item.get("score")
    if isinstance(score, bool) or not isinstance(score, int) or not 0 <= score <= 10:
        raise RecordDataError(
            response_id, f"Delighted survey response {response_id!r}: score is not an integer 0-10"
        )
    created_at = _unix(item.get("created_at"), "created_at", response_id)
    # Delighted's own example shows `updated_at: null` for a response never edited.
    updated = item.get("updated_at")
    modified_at = created_at if updated is None else _unix(updated, "updated_at", response_id)
    person = item.get("person")
    email: str | None = None
    if isinstance(person, dict):
        found = person.get("email")
        email = found if isinstance(found, str) and found else None
    elif person is not None and not isinstance(person, str | int):
        raise RecordDataError(
            response_id, f"Delighted survey response {response_id!r}: malformed person"
        )
    properties = item.get("person_properties")
    if properties is not None and not isinstance(properties, dict):
        raise RecordDataError(
            response_id,
            f"Delighted survey response {response_id!r}: person_properties is not an object",
        )
    return Record(
        kind=RecordKind.survey_response,
        source_id=response_id,
        created_at=created_at,
        modified_at=modified_at,
        score=score,
        email=email,
        raw=item,
    )
