"""The connector interface: stateless translators from a vendor API to typed records.

A connector reads one record kind for a half-open window `[start, end)` of *modification*
time and yields pages of `Record`s. It never stores anything: the sync service owns
cursors and checkpoints, and hands a page's `checkpoint` back as `resume` after a crash.
Business definitions ("qualified", "new customer", "referral") are not decided here:
records carry the CRM's own fields and flags, and mappings filter on them.
"""

from __future__ import annotations

import enum
import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, SecretBytes, SecretStr

from connectors.errors import ConfigError, RecordDataError
from connectors.hosts import AllowList, HostPolicy, Resolver, system_resolver
from connectors.retry import RetryPolicy


class RecordKind(enum.StrEnum):
    """What a record is. Connectors read a subset of these."""

    lead = "lead"
    contact = "contact"
    opportunity = "opportunity"
    deal = "deal"
    survey_response = "survey_response"


class FieldType(enum.StrEnum):
    """Types a mapping filter or aggregate can be checked against."""

    string = "string"
    number = "number"
    boolean = "boolean"
    datetime = "datetime"
    date = "date"


#: The normalised fields every record has (None where the kind has no such notion).
NORMALISED_FIELDS: Mapping[str, FieldType] = {
    "source_id": FieldType.string,
    "created_at": FieldType.datetime,
    "modified_at": FieldType.datetime,
    "close_date": FieldType.date,
    "status": FieldType.string,
    "stage": FieldType.string,
    "is_closed": FieldType.boolean,
    "is_won": FieldType.boolean,
    "amount": FieldType.number,
    "currency": FieldType.string,
    "lead_source": FieldType.string,
    "owner": FieldType.string,
    "deal_type": FieldType.string,
    "score": FieldType.number,
    "email": FieldType.string,
}


@dataclass(frozen=True, slots=True)
class Record:
    """One source record, normalised. Datetimes are time-zone aware.

    `raw` keeps the vendor's own properties (custom fields included) so mappings can filter
    on them; `deleted` is true for records deleted or archived at the source, which the sync
    applies as deletes.
    """

    kind: RecordKind
    source_id: str
    created_at: datetime
    modified_at: datetime
    deleted: bool = False
    status: str | None = None
    stage: str | None = None
    is_closed: bool | None = None
    is_won: bool | None = None
    close_date: date | None = None
    amount: Decimal | None = None
    currency: str | None = None
    lead_source: str | None = None
    owner: str | None = None
    deal_type: str | None = None
    score: int | None = None
    email: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.created_at.tzinfo is None or self.modified_at.tzinfo is None:
            raise ValueError(f"record {self.source_id}: datetimes must be time-zone aware")
        if self.score is not None and not 0 <= self.score <= 10:
            raise ValueError(f"record {self.source_id}: score {self.score} outside 0..10")


@dataclass(frozen=True, slots=True)
class Window:
    """A half-open interval `[start, end)` of modification time, time-zone aware."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("window bounds must be time-zone aware")
        if self.end < self.start:
            raise ValueError("window ends before it starts")

    def __contains__(self, moment: datetime) -> bool:
        return self.start <= moment < self.end


@dataclass(frozen=True, slots=True)
class Skipped:
    """A source record that could not be normalised (`RecordDataError`): left out of its
    page and reported in the run, so one bad record never fails a sync or loses its page's
    valid records."""

    source_id: str
    reason: str

    @classmethod
    def of(cls, error: RecordDataError) -> Skipped:
        return cls(error.source_id[:255], error.message[:300])


@dataclass(frozen=True, slots=True)
class Page:
    """A batch of records, committed by the sync service in one transaction.

    `checkpoint` is where reading can resume *within the same window* after this page (a
    keyset cursor, JSON-serialisable); None means "no safe resume point: restart the window".
    `skipped` lists the page's source records that could not be normalised.
    """

    records: list[Record]
    checkpoint: Mapping[str, Any] | None = None
    skipped: tuple[Skipped, ...] = ()


@dataclass(frozen=True, slots=True)
class CheckResult:
    """Outcome of probing credentials and configuration."""

    ok: bool
    detail: str
    #: Vendor quota usage where the API reports it (e.g. Salesforce `api-usage=used/limit`).
    quota_used: int | None = None
    quota_limit: int | None = None


@dataclass(slots=True)
class Runtime:
    """Per-run knobs a connector receives from the sync service (never secrets)."""

    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout_seconds: float = 30.0
    #: Extra CA bundle for companies behind an inspecting TLS proxy; None = system store.
    ca_bundle: str | None = None
    #: Records per page asked of the vendor, where the vendor lets us choose.
    page_size: int | None = None
    #: The sync service's clock (time-zone aware). Connectors read "now" only through
    #: `now()`, so a run is reproducible at any instant a test or a replay picks.
    clock: Callable[[], datetime] | None = None
    #: Hosts, IP addresses or networks the deployment allows beyond each vendor's own
    #: (`OKR_CONNECTOR_ALLOWED_HOSTS`); see `connectors.hosts`.
    allowed_hosts: tuple[str, ...] = ()
    #: How host names are resolved before every connection (tests inject a fake DNS).
    resolver: Resolver = system_resolver

    def host_policy(self, vendor_hosts: tuple[str, ...]) -> HostPolicy:
        """The hosts a connector whose vendor serves `vendor_hosts` may reach in this run."""
        return HostPolicy(vendor_hosts, AllowList.parse(self.allowed_hosts), self.resolver)

    def now(self) -> datetime:
        """The current instant, from the sync service's clock."""
        if self.clock is None:
            raise ConfigError("this runtime has no clock: pass Runtime(clock=...)")
        return self.clock()


def fingerprint(text: str | bytes) -> str:
    """A SHA-256 of `text` (a credential), shortened: names an account without revealing it."""
    data = text.encode() if isinstance(text, str) else text
    return hashlib.sha256(data).hexdigest()[:32]


class ConnectorConfig(BaseModel):
    """Base of every connector's non-secret configuration."""

    model_config = ConfigDict(extra="forbid")

    #: Custom (raw) fields to read per kind, with their type, e.g.
    #: `{"lead": {"Customer_Type__c": "string"}}`; mappings may filter on `raw.<name>`.
    custom_fields: dict[RecordKind, dict[str, FieldType]] = {}
    #: Most vendor requests one sync run may make (None: the service's default). Keeps a
    #: sync to a small share of a daily quota such as Salesforce's DailyApiRequests.
    request_budget: int | None = Field(default=None, ge=1)
    #: Reconcile stored ids against a full listing now and then, for connectors whose
    #: vendor misses some deletes (`Connector.reconcile_ids`); False turns it off here.
    reconcile: bool = True
    #: Seconds between two reconciliations of this connector (None: the service's
    #: `OKR_SYNC_RECONCILE_SECONDS`; 0: every run).
    reconcile_interval_seconds: int | None = Field(default=None, ge=0)


class ConnectorSecrets(BaseModel):
    """Base of every connector's secrets: write-only over the API, never logged."""

    model_config = ConfigDict(extra="forbid")


class Connector(ABC):
    """A vendor connector. Subclasses set the class attributes and implement the methods."""

    #: Registry key, e.g. "salesforce".
    type_name: ClassVar[str]
    #: Record kinds this connector can read.
    kinds: ClassVar[frozenset[RecordKind]]
    config_model: ClassVar[type[ConnectorConfig]]
    secrets_model: ClassVar[type[ConnectorSecrets]]
    #: False when the vendor never reports deletes (they just vanish from listings): the
    #: sync service then reconciles ids against a full listing now and then.
    reports_deletes: ClassVar[bool] = True
    #: True when the vendor reports deletes but not all of them, or not for long (purges,
    #: GDPR deletes, expired archives, Salesforce's 15-day delete log): the sync service
    #: reconciles ids against a full listing too.
    reconcile_ids: ClassVar[bool] = False
    #: Raw vendor fields always read, per kind, with their types.
    standard_raw_fields: ClassVar[Mapping[RecordKind, Mapping[str, FieldType]]] = {}
    #: Config fields holding a URL, each with the vendor hosts it may name (exact names or
    #: `*.suffix`). Changing one needs the secrets again; see `connectors.hosts`.
    url_fields: ClassVar[Mapping[str, tuple[str, ...]]] = {}
    #: True when the sync service may run a large `read` in a forked child process (the
    #: reader process, so reading and storing use two cores): `read` keeps its run state
    #: in `runtime.retry` and in what `read_state` returns, and starts no thread that
    #: outlives it.
    reads_in_child_process: ClassVar[bool] = False

    def __init__(
        self, config: ConnectorConfig, secrets: ConnectorSecrets, runtime: Runtime | None = None
    ) -> None:
        self.config = config
        self.secrets = secrets
        self.runtime = runtime or Runtime()

    @classmethod
    def raw_fields(cls, config: ConnectorConfig, kind: RecordKind) -> dict[str, FieldType]:
        """Raw fields a mapping may use for `kind`: the standard ones plus configured ones."""
        fields = dict(cls.standard_raw_fields.get(kind, {}))
        fields.update(config.custom_fields.get(kind, {}))
        return fields

    @classmethod
    def amount_currencies(cls, config: ConnectorConfig) -> frozenset[str] | None:  # noqa: ARG003
        """The only currencies this source's amounts can be in, when its configuration
        says so (a single-currency CRM account); None when any currency may appear."""
        return None

    @classmethod
    def missing_secrets(cls, config: ConnectorConfig, secrets: ConnectorSecrets) -> list[str]:  # noqa: ARG003
        """Secret fields `config` needs that `secrets` lacks (e.g. per auth flow)."""
        return []

    @classmethod
    def account_key(cls, config: ConnectorConfig, secrets: ConnectorSecrets) -> str | None:
        """The vendor account this connector reaches, as a stable string holding no secret
        in clear: connectors with the same key share the account's limits (rate, quota,
        concurrent requests), so the sync service runs only so many of them at once.

        By default, the URL fields and a SHA-256 of the credentials (one set of credentials
        reaches one account); vendors with a non-secret account identity override this.
        None: no credentials, so no account (the demo): every connector stands alone.
        """
        values: dict[str, Any] = {}
        for name in type(secrets).model_fields:
            value = getattr(secrets, name)
            if isinstance(value, SecretStr | SecretBytes):
                value = value.get_secret_value()
            if isinstance(value, bytes):
                value = value.hex()
            if value is not None:
                values[name] = value
        if not values:
            return None
        urls = {name: getattr(config, name, None) for name in sorted(cls.url_fields)}
        return f"{cls.type_name}:" + fingerprint(
            json.dumps([urls, values], sort_keys=True, default=str)
        )

    @classmethod
    def check_urls(cls, config: ConnectorConfig, runtime: Runtime) -> None:
        """Raise `HostNotAllowedError` naming the first URL field `runtime`'s policy refuses
        (scheme, host name, then every address the name resolves to)."""
        for name, vendor_hosts in cls.url_fields.items():
            url = getattr(config, name, None)
            if url is not None:
                runtime.host_policy(vendor_hosts).validate(str(url), field=name)

    def reconcile_interval_seconds(self, default_seconds: int) -> int | None:
        """Seconds between two id reconciliations of this connector; None: never."""
        if self.reports_deletes and not self.reconcile_ids:
            return None
        if not self.config.reconcile:
            return None
        seconds = self.config.reconcile_interval_seconds
        return default_seconds if seconds is None else seconds

    def ensure_kind(self, kind: RecordKind) -> None:
        """Raise ConfigError when this connector does not read `kind`."""
        if kind not in self.kinds:
            raise ConfigError(f"{self.type_name} does not read record kind {kind.value!r}")

    @abstractmethod
    def check(self) -> CheckResult:
        """Probe credentials and configuration with one cheap call."""

    @abstractmethod
    def read(
        self, kind: RecordKind, window: Window, resume: Mapping[str, Any] | None = None
    ) -> Iterator[Page]:
        """Yield pages of `kind` records whose modification time is in `window`.

        Deleted/archived records are yielded with `deleted=True`. When `resume` is a
        checkpoint from an earlier page of the same window, reading continues after it.
        """

    def read_ids(self, kind: RecordKind) -> Iterator[list[str]] | None:  # noqa: ARG002
        """Batches of the ids of every `kind` record live at the source now (for id
        reconciliation), read without the records' other fields; None when the vendor's
        API cannot list ids alone, and reconciliation reads whole records instead."""
        return None

    def record_url(self, kind: RecordKind, source_id: str) -> str | None:  # noqa: ARG002
        """A link to the record in the vendor's UI, for explanations; None if unknown."""
        return None

    def quota_usage(self) -> tuple[int, int] | None:
        """(used, limit) of the vendor's daily request quota as last reported to this
        connector, where the vendor reports it; None otherwise."""
        return None

    def after_fork(self) -> None:  # noqa: B027 - optional hook, most connectors hold nothing
        """In a forked reader process, before it reads: let go of the pooled connections
        inherited from the parent, which go on using them (closing a copy of a socket in
        the child sends nothing on the wire)."""

    def read_state(self) -> Any:
        """What a `read` run in a child process changed that this connector needs after it
        (a quota header, a session token); handed to `adopt_read_state` in the parent."""
        return None

    def adopt_read_state(self, state: Any) -> None:  # noqa: B027 - optional hook
        """Take over `read_state()` from a `read` that ran in a child process."""

    def close(self) -> None:  # noqa: B027 - optional hook, most connectors hold nothing
        """Release network resources."""
