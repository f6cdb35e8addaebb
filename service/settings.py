"""The one validated configuration of the service, read from `OKR_*` environment variables."""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Literal

from cryptography.fernet import Fernet
from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from connectors.hosts import AllowList

#: Host names a request may be addressed to unless `OKR_ALLOWED_HOSTS` says otherwise:
#: the loopback ones (`okr-sync serve` adds the address it binds to).
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")


class Settings(BaseSettings):
    """Service settings. Units are part of the names."""

    # Inputs stay out of validation errors: they may be keys or URLs with passwords.
    model_config = SettingsConfigDict(
        env_prefix="OKR_",
        env_file=".env",
        extra="ignore",
        populate_by_name=True,
        hide_input_in_errors=True,
    )

    #: SQLAlchemy URL. SQLite by default; `postgresql://...` uses psycopg 3.
    database_url: str = "sqlite:///okr-sync.db"
    #: Upgrade the schema when the service starts (`okr-sync db upgrade` does it explicitly).
    migrate_on_start: bool = True
    #: Fernet keys encrypting connector secrets at rest, comma-separated: the first
    #: encrypts, all decrypt (rotation: prepend a new key, run `okr-sync secrets rotate`,
    #: then drop the old one). Unset: a SQLite database gets a key file beside it, made on
    #: first start; a PostgreSQL deployment refuses to start.
    secret_keys: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("OKR_SECRET_KEYS", "OKR_SECRET_KEY")
    )
    #: Load the Tartempion example (idempotent) when the service starts.
    load_demo: bool = True
    #: Which roles this process plays: the API, the sync scheduler, or both.
    role: Literal["all", "api", "worker"] = "all"
    #: How often the scheduler looks for connectors that are due.
    scheduler_tick_seconds: float = Field(default=5.0, gt=0)
    #: Re-read this far behind the last checkpoint, so late or equal timestamps are not missed.
    sync_overlap_seconds: int = Field(default=300, ge=0)
    #: For vendors that miss some deletes: how often ids are reconciled against a full
    #: listing (deleted records are those no longer listed), unless a connector's config
    #: sets its own `reconcile_interval_seconds`.
    sync_reconcile_seconds: int = Field(default=86400, ge=0)
    #: A running sync renews its connector's lease every third of this; a lease not
    #: renewed for this long (a worker killed, or cut off from the database) is taken over
    #: by another worker, which resumes the sync from its last committed page.
    sync_lease_seconds: int = Field(default=60, ge=3)
    #: Read a connector's initial sync (the window from the beginning) in a forked reader
    #: process, where its connector allows it (Salesforce), so reading and storing use two
    #: cores (`service.sync.reader`); off: a reader thread in the syncing process.
    sync_reader_process: bool = True
    #: Syncs one process (`okr-sync worker`, or `serve` in the `all` role) runs at once.
    worker_concurrency: int = Field(default=2, ge=1)
    #: Syncs of connectors reaching one vendor account (one Salesforce org, HubSpot
    #: portal or token, Delighted key: `Connector.account_key`) running at once, across
    #: every worker process: the account's rate limit and quota are shared, so more
    #: would only make them throttle each other. A connector over the cap stays due and
    #: starts when one of its account's syncs ends.
    sync_max_per_account: int = Field(default=1, ge=1)
    #: Request timeout for every vendor call.
    connector_timeout_seconds: float = Field(default=30.0, gt=0)
    #: Retries of a transient vendor fault before a run fails.
    connector_max_attempts: int = Field(default=5, ge=1)
    #: Default share of vendor requests one run may spend (None = unlimited).
    connector_request_budget: int | None = Field(default=None, ge=1)
    #: Extra CA bundle (PEM) for TLS-inspecting proxies; None = system trust store.
    connector_ca_bundle: str | None = None
    #: Requests one API token may make per minute in one process (429 + Retry-After beyond).
    rate_limit_requests_per_minute: int = Field(default=1200, ge=1)
    #: A token resolved by a process is trusted by it for this long without a database
    #: lookup: revoking a token through another process (the CLI, another API worker)
    #: takes effect here within this delay; through this process, at once. 0: no cache.
    token_cache_seconds: float = Field(default=5.0, ge=0)
    #: A process serving cached progress asks the database whether the workspace changed
    #: at most this often (polled reads renew it in the background ahead of the delay): a
    #: change written by another process (a sync worker, another API worker) shows within
    #: this delay; one written by this process, at once. 0: ask on every read.
    progress_version_check_seconds: float = Field(default=1.0, ge=0)
    #: Log lines as JSON objects (`json`), as text (`text`), or JSON unless stderr is a
    #: terminal (`auto`).
    log_format: Literal["auto", "json", "text"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    #: FastAPI's own OpenTelemetry spans and metrics, for a deployment that configures an
    #: OpenTelemetry provider. Off by default: the service exports Prometheus metrics
    #: itself (/metrics), and the per-request check whether a provider is configured costs
    #: about a seventh of a polled read's time in the process.
    opentelemetry: bool = False
    #: Database connections each process keeps open, and how many more it may open under
    #: load. A request holds one connection at most, only while it queries (never while it
    #: waits for a thread or a vendor), so this bounds concurrent queries, not clients.
    db_pool_size: int = Field(default=10, ge=1)
    db_max_overflow: int = Field(default=10, ge=0)
    #: How long a query waits for a free connection before the request answers 503 with
    #: Retry-After (rather than queueing without bound).
    db_pool_timeout_seconds: float = Field(default=10.0, gt=0)
    #: `GET /api/v1/stream` sends a `: ping` comment after this long without an event, so
    #: proxies and load balancers keep an idle stream open.
    stream_heartbeat_seconds: float = Field(default=15.0, gt=0)
    #: Event streams one API process serves at once; beyond, new ones get a 503.
    #: 0: no streams.
    stream_max_clients: int = Field(default=1000, ge=0)
    #: Events waiting for one slow client at most: beyond, its queue is dropped and it is
    #: sent a fresh snapshot once it reads again.
    stream_client_queue_max_events: int = Field(default=1000, ge=1)
    #: The `retry:` hint a stream starts with: how long a client waits before reconnecting.
    stream_retry_milliseconds: int = Field(default=3000, ge=0)
    #: On SIGINT/SIGTERM, `okr-sync serve` waits this long for requests in flight, then
    #: closes what is still open: event streams never end by themselves (their clients
    #: reconnect, to another process, with `Last-Event-ID`). Syncs (`serve`'s scheduler,
    #: `okr-sync worker`) get this long to commit the page they are storing; one still
    #: waiting on its vendor then is given up (another worker resumes it). 10 s: one page
    #: of a slow vendor (a Salesforce query page takes 2-5 s) commits within it.
    shutdown_grace_seconds: int = Field(default=10, ge=0)
    #: Hosts connectors may reach besides their vendor's own (comma-separated host names,
    #: IP addresses or networks), e.g. a test double or an egress proxy. Loopback, private,
    #: link-local and metadata addresses are refused unless listed here.
    connector_allowed_hosts: Annotated[tuple[str, ...], NoDecode] = ()
    #: Default page size of list endpoints, and its maximum.
    page_limit_default: int = Field(default=50, ge=1)
    page_limit_max: int = Field(default=500, ge=1)
    #: A key result's history in day or week buckets holds at most this many buckets (a
    #: longer range is a 422 naming `from`; each bucket is a parameter of one SQL query) ...
    history_buckets_max_count: int = Field(default=1000, ge=1, le=10_000)
    #: ... and a CSV of its points at most this many rows per response (the next ones are
    #: linked in `Link: <...>; rel="next"`).
    history_csv_max_rows: int = Field(default=10_000, ge=1)
    #: Largest request body read; larger ones are refused with 413 before being parsed.
    max_body_bytes: int = Field(default=1_000_000, ge=1)
    #: Host names requests may carry in `Host` (comma-separated in the environment;
    #: `*.example.com` matches subdomains, `*` alone disables the check).
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(LOOPBACK_HOSTS), min_length=1
    )
    #: A metric spec may hold this many conditions in all (filters and groups, both sides
    #: of a ratio together) ...
    spec_filters_max_count: int = Field(default=200, ge=1)
    #: ... nest groups this deep (a group in a spec's `filters` is at depth 1) ...
    spec_group_max_depth: int = Field(default=5, ge=0)
    #: ... and list this many values in one filter (`in`, `not_in`).
    spec_filter_values_max_count: int = Field(default=1000, ge=2)
    #: A target this many times the previous equivalent window's value is a stretch ...
    ambition_stretch_ratio: float = Field(default=1.5, gt=0)
    #: ... and this many times, unrealistic (progress reads flag it).
    ambition_unrealistic_ratio: float = Field(default=3.0, gt=0)

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [host.strip() for host in value.split(",") if host.strip()]
        return value

    @field_validator("allowed_hosts")
    @classmethod
    def _host_patterns(cls, hosts: list[str]) -> list[str]:
        # Starlette asserts this when the app is built; say it when the setting is read.
        for host in hosts:
            if host != "*" and ("*" in host[1:] or (host[:1] == "*" and host[:2] != "*.")):
                raise ValueError(f"{host!r}: a wildcard is `*` alone or a `*.` prefix")
        return hosts

    @field_validator("connector_allowed_hosts", mode="before")
    @classmethod
    def _host_list(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part for part in (p.strip() for p in value.split(",")) if part]
        return value

    @field_validator("connector_allowed_hosts")
    @classmethod
    def _valid_hosts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        AllowList.parse(value)
        return value

    @field_validator("database_url")
    @classmethod
    def _psycopg3(cls, url: str) -> str:
        # SQLAlchemy's bare "postgresql://" means psycopg2, which we do not ship.
        for prefix in ("postgresql://", "postgres://"):
            if url.startswith(prefix):
                return "postgresql+psycopg://" + url[len(prefix) :]
        return url

    @field_validator("secret_keys")
    @classmethod
    def _fernet_keys(cls, keys: SecretStr | None) -> SecretStr | None:
        if keys is None or not secret_key_list(keys.get_secret_value()):
            return None
        for position, key in enumerate(secret_key_list(keys.get_secret_value()), start=1):
            try:
                Fernet(key)
            except ValueError:
                # The key itself is never echoed: say which one, and what it should be.
                raise ValueError(
                    f"key {position} of OKR_SECRET_KEYS is not a Fernet key (32 url-safe "
                    "base64-encoded bytes; `okr-sync secrets new-key` makes one)"
                ) from None
        return keys


def secret_key_list(keys: str) -> list[str]:
    """The keys of an `OKR_SECRET_KEYS` value, first (the encrypting one) first."""
    return [key.strip() for key in keys.split(",") if key.strip()]


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, for code outside a request (requests read the app's:
    `deps.SettingsDep`)."""
    return Settings()
