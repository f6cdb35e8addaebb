"""The one validated configuration of the service, read from `OKR_*` environment variables."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from cryptography.fernet import Fernet
from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    #: For vendors that never report deletes: how often ids are reconciled against a full
    #: listing (deleted records are those no longer listed).
    sync_reconcile_seconds: int = Field(default=86400, ge=0)
    #: How long a worker holds a connector's sync lease before another may take it over.
    sync_lease_seconds: int = Field(default=900, ge=10)
    #: Request timeout for every vendor call.
    connector_timeout_seconds: float = Field(default=30.0, gt=0)
    #: Retries of a transient vendor fault before a run fails.
    connector_max_attempts: int = Field(default=5, ge=1)
    #: Default share of vendor requests one run may spend (None = unlimited).
    connector_request_budget: int | None = Field(default=None, ge=1)
    #: Extra CA bundle (PEM) for TLS-inspecting proxies; None = system trust store.
    connector_ca_bundle: str | None = None
    #: Default page size of list endpoints, and its maximum.
    page_limit_default: int = Field(default=50, ge=1)
    page_limit_max: int = Field(default=500, ge=1)
    #: A target this many times the previous equivalent window's value is a stretch ...
    ambition_stretch_ratio: float = Field(default=1.5, gt=0)
    #: ... and this many times, unrealistic (progress reads flag it).
    ambition_unrealistic_ratio: float = Field(default=3.0, gt=0)

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
    """The process-wide settings (tests override the `get_settings` dependency instead)."""
    return Settings()
