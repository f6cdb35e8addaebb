"""Connector configuration in a workspace: validation, instantiation, CRUD. Functions flush."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from croniter import CroniterBadCronError, CroniterBadDateError, croniter
from pydantic import ValidationError
from sqlalchemy import func
from sqlmodel import Session, col, select

from connectors.base import Connector as VendorConnector
from connectors.base import ConnectorConfig, ConnectorSecrets, RecordKind, Runtime
from connectors.errors import ConnectorError
from connectors.governor import Governor
from connectors.hosts import HostNotAllowedError
from connectors.registry import connector_types
from service.db import flush_or_conflict, json_dumps
from service.errors import ConflictError, InvalidError
from service.okr.service import wid
from service.settings import Settings
from service.sync import secrets as secret_store
from service.sync.budget import DatabaseBudget
from service.sync.models import (
    ACTIVE_STATUSES,
    Connector,
    ConnectorCreate,
    ConnectorPublic,
    ConnectorUpdate,
    RunStatus,
    RunTrigger,
    SyncRun,
)
from service.workspaces.models import Workspace


def connector_class(type_name: str, *, field: str = "type") -> type[VendorConnector]:
    """The connector class for `type_name`, or a 422 naming `field`."""
    types = connector_types()
    if type_name not in types:
        known = ", ".join(sorted(types))
        raise InvalidError(f"unknown connector type {type_name!r} (known: {known})", field=field)
    return types[type_name]


def _field_of(exc: ValidationError, prefix: str) -> tuple[str, str]:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc", ()))
    return (f"{prefix}.{loc}" if loc else prefix), str(err.get("msg", "invalid"))


def validated_config(type_name: str, config: dict[str, Any]) -> ConnectorConfig:
    """The connector type's config model built from `config`, or a 422 naming the field."""
    cls = connector_class(type_name)
    try:
        return cls.config_model.model_validate(config)
    except ValidationError as exc:
        field, message = _field_of(exc, "config")
        raise InvalidError(f"{field}: {message}", field=field) from None


def check_hosts(type_name: str, config: ConnectorConfig, allowed_hosts: tuple[str, ...]) -> None:
    """A 422 naming the first URL field whose host the policy refuses (`connectors.hosts`):
    not the vendor's and not in `allowed_hosts`, not https, or resolving to a loopback,
    private, link-local or metadata address."""
    try:
        connector_class(type_name).check_urls(config, Runtime(allowed_hosts=allowed_hosts))
    except HostNotAllowedError as exc:
        field = f"config.{exc.field}" if exc.field else "config"
        raise InvalidError(f"{field}: {exc.message}", field=field) from None


def check_secrets_follow_urls(
    row: Connector, config: ConnectorConfig, given: dict[str, Any]
) -> None:
    """A 422 when `config` points a URL field somewhere else and the request does not give
    every stored secret again: the secrets would otherwise follow the URL to a host the
    caller chose without knowing them."""
    cls = connector_class(row.type)
    try:
        old: ConnectorConfig | None = cls.config_model.model_validate(row.config)
    except ValidationError:
        old = None
    changed = [
        name
        for name in cls.url_fields
        if old is None or getattr(old, name, None) != getattr(config, name, None)
    ]
    if not changed:
        return
    stored = secret_store.secret_names(row.secrets)
    missing = [name for name in sorted(stored) if not given.get(name)]
    if missing:
        fields = ", ".join(f"config.{name}" for name in changed)
        secrets = ", ".join(f"secrets.{name}" for name in missing)
        raise InvalidError(
            f"changing {fields} needs the connector's secrets again in the same request "
            f"(missing: {secrets})",
            field=f"secrets.{missing[0]}",
        )


def validated_secrets(type_name: str, secrets: dict[str, Any]) -> ConnectorSecrets:
    """The connector type's secrets model built from `secrets`, or a 422 naming the field."""
    cls = connector_class(type_name)
    try:
        return cls.secrets_model.model_validate(secrets)
    except ValidationError as exc:
        field, message = _field_of(exc, "secrets")
        # Never echo a secret value back: pydantic messages may quote the input.
        message = secret_store.redact(message, secrets.values())
        raise InvalidError(f"{field}: {message}", field=field) from None


def check_required_secrets(
    type_name: str, config: ConnectorConfig, secrets: ConnectorSecrets
) -> None:
    """A 422 naming the first secret the configuration needs but does not have."""
    missing = connector_class(type_name).missing_secrets(config, secrets)
    if missing:
        raise InvalidError(
            f"secret {missing[0]!r} is required by this configuration",
            field=f"secrets.{missing[0]}",
        )


def validated_kinds(type_name: str, kinds: list[str] | None) -> list[str] | None:
    """`kinds` checked against what the connector reads (None = all)."""
    if kinds is None:
        return None
    cls = connector_class(type_name)
    readable = {k.value for k in cls.kinds}
    for kind in kinds:
        if kind not in readable:
            raise InvalidError(
                f"{type_name} does not read {kind!r} (it reads: {', '.join(sorted(readable))})",
                field="kinds",
            )
    if not kinds:
        raise InvalidError("give at least one kind, or omit kinds for all", field="kinds")
    return list(dict.fromkeys(kinds))


def enabled_kinds(row: Connector) -> list[RecordKind]:
    """The kinds this connector syncs."""
    cls = connector_class(row.type)
    if row.kinds is None:
        return sorted(cls.kinds, key=lambda k: k.value)
    return [RecordKind(k) for k in row.kinds]


def build_connector(
    row: Connector, settings: Settings, runtime: Runtime | None = None
) -> VendorConnector:
    """A live connector instance for the stored row (`UnreadableSecretsError`, a
    `ConnectorError`, if its secrets cannot be decrypted)."""
    cls = connector_class(row.type)
    config = cls.config_model.model_validate(row.config)
    secrets = cls.secrets_model.model_validate(secret_store.unseal(row.secrets, settings))
    return cls(config, secrets, runtime)


def share_budget(row: Connector, vendor: object, budget: DatabaseBudget) -> None:
    """HubSpot's limit is per account, whatever process sends (the only vendor here with a
    published per-account request rate: https://developers.hubspot.com/docs/api/usage-details),
    so its governor leases from the database's schedule: in a sync, and for any other
    request a process makes (a check)."""
    governor = getattr(vendor, "governor", None)
    if row.type == "hubspot" and isinstance(governor, Governor):
        if governor.shared is not budget:
            governor.share(budget)


#: Account keys already derived, by (type, config, stored secrets) as stored: a claim
#: derives the key of every candidate and running connector, and the stored secrets are
#: sealed, so each is decrypted once per process rather than on every tick.
_ACCOUNT_KEYS: dict[tuple[str, str, str], str | None] = {}
_ACCOUNT_KEYS_MAX = 10_000


def account_key(
    connector_id: int | None,
    type_name: str,
    config: dict[str, Any],
    secrets: dict[str, Any],
    settings: Settings,
) -> str:
    """The vendor account a connector (its stored type, config and secrets) reaches
    (`Connector.account_key`: no secret in clear), or `connector:<id>` when it reaches none
    of its own (the demo) or its configuration or secrets cannot be read (its run fails at
    once, holding no account)."""
    cache_key = (type_name, json_dumps(config), json_dumps(secrets))
    if cache_key in _ACCOUNT_KEYS:
        key = _ACCOUNT_KEYS[cache_key]
    else:
        try:
            cls = connector_class(type_name)
            key = cls.account_key(
                cls.config_model.model_validate(config),
                cls.secrets_model.model_validate(secret_store.unseal(secrets, settings)),
            )
        except (InvalidError, ValidationError, ConnectorError):
            return f"connector:{connector_id}"
        if len(_ACCOUNT_KEYS) >= _ACCOUNT_KEYS_MAX:
            _ACCOUNT_KEYS.clear()
        _ACCOUNT_KEYS[cache_key] = key
    return key if key is not None else f"connector:{connector_id}"


def validated_cron(expression: str | None) -> str | None:
    """A 5-field cron expression (minute hour day month weekday), or a 422 naming
    `sync_cron`."""
    if expression is None:
        return None
    expression = " ".join(expression.split())
    if len(expression.split(" ")) != 5 or not croniter.is_valid(expression):
        raise InvalidError(
            f"{expression!r} is not a cron expression of 5 fields "
            "(minute hour day-of-month month day-of-week), e.g. '0 */2 * * *'",
            field="sync_cron",
        )
    try:
        croniter(expression, datetime(2000, 1, 1, tzinfo=UTC)).get_next(datetime)
    except (CroniterBadCronError, CroniterBadDateError):  # e.g. 30 February: never fires
        raise InvalidError(f"{expression!r} never fires", field="sync_cron") from None
    return expression


def next_scheduled(row: Connector, after: datetime) -> datetime | None:
    """When the schedule next fires after `after` (a run started then), or None when
    scheduled syncs are off (disabled or paused). Cron expressions are read in UTC."""
    if not row.enabled or row.paused:
        return None
    if row.sync_cron:
        fired: datetime = croniter(row.sync_cron, after).get_next(datetime)
        return fired
    return after + timedelta(seconds=row.sync_interval_seconds)


def active_run(session: Session, connector_id: int) -> SyncRun | None:
    """The connector's queued or running run (at most one: `uq_sync_run_active`)."""
    return session.exec(
        select(SyncRun).where(
            SyncRun.connector_id == connector_id,
            col(SyncRun.status).in_(ACTIVE_STATUSES),
        )
    ).first()


def replan(session: Session, row: Connector, now: datetime) -> None:
    """Recompute `next_run_at` after the schedule changed: a queued run waits for a worker
    now; otherwise the schedule counts from the last run's start (now, if none)."""
    assert row.id is not None
    active = active_run(session, row.id)
    if row.paused:
        row.next_run_at = None
    elif active is not None and active.status == RunStatus.queued:
        row.next_run_at = now
    else:
        last = session.exec(
            select(func.max(SyncRun.started_at)).where(SyncRun.connector_id == row.id)
        ).one()
        row.next_run_at = (
            next_scheduled(row, last) if last is not None else (now if row.enabled else None)
        )


class ConnectorPaused(ConflictError):
    """The connector is paused: no sync starts until it is unpaused."""


def enqueue(session: Session, row: Connector, now: datetime) -> SyncRun:
    """A manual run waiting for a worker, or the connector's queued or running one; a 409
    naming `paused` when the connector is paused. Flushes."""
    assert row.id is not None
    if row.paused:
        raise ConnectorPaused(
            f"connector {row.id} is paused: unpause it (PATCH paused=false) to sync",
            field="paused",
        )
    active = active_run(session, row.id)
    if active is not None:
        return active
    run = SyncRun(
        workspace_id=row.workspace_id,
        connector_id=row.id,
        trigger=RunTrigger.manual,
        status=RunStatus.queued,
        queued_at=now,
    )
    session.add(run)
    row.next_run_at = now
    session.flush()
    return run


def stale_after(row: Connector) -> datetime | None:
    """When the connector's values turn stale if no sync succeeds meanwhile: once the
    schedule's next run after the last successful one's start is due, the same rule for
    both kinds of schedule. With the interval: `sync_interval_seconds` after that start.
    With `sync_cron`: the cron's first fire time after that start (a sync at 09:00 on
    Friday of `0 9 * * 1-5` stays fresh until Monday 09:00; one of `*/15 * * * *` for 15
    minutes). None: it never synced (stale now)."""
    if row.last_success_at is None:
        return None
    if row.sync_cron:
        fired: datetime = croniter(row.sync_cron, row.last_success_at).get_next(datetime)
        return fired
    return row.last_success_at + timedelta(seconds=row.sync_interval_seconds)


def is_stale(row: Connector, now: datetime) -> bool:
    """Whether the connector has not synced successfully within its expected interval:
    the schedule's next run after its last successful one is due (`stale_after`)."""
    after = stale_after(row)
    return after is None or now > after


def public(row: Connector, now: datetime) -> ConnectorPublic:
    """The connector as the API shows it: secrets reduced to their names (readable without
    a key, so a connector whose secrets cannot be decrypted still shows)."""
    assert row.id is not None
    return ConnectorPublic(
        id=row.id,
        name=row.name,
        type=row.type,
        config=row.config,
        kinds=row.kinds,
        sync_interval_seconds=row.sync_interval_seconds,
        enabled=row.enabled,
        created_at=row.created_at,
        last_success_at=row.last_success_at,
        last_run_status=row.last_run_status,
        secrets_set=secret_store.secret_names(row.secrets),
        stale=is_stale(row, now),
        sync_cron=row.sync_cron,
        paused=row.paused,
        next_run_at=row.next_run_at,
    )


def _flush(session: Session, name: str) -> None:
    flush_or_conflict(session, f"a connector named {name!r} already exists", "name")


def create_connector(
    session: Session, ws: Workspace, data: ConnectorCreate, now: datetime, settings: Settings
) -> Connector:
    """Validate and store a connector (`OKR_CONNECTOR_ALLOWED_HOSTS` extends the vendor's
    hosts)."""
    config = validated_config(data.type, data.config)
    check_hosts(data.type, config, settings.connector_allowed_hosts)
    secrets = validated_secrets(data.type, data.secrets)
    check_required_secrets(data.type, config, secrets)
    row = Connector(
        workspace_id=wid(ws),
        name=data.name,
        type=data.type,
        config=config.model_dump(mode="json", exclude_unset=True),
        secrets=secret_store.seal(secret_store.plain(secrets), settings),
        kinds=validated_kinds(data.type, data.kinds),
        sync_interval_seconds=data.sync_interval_seconds,
        sync_cron=validated_cron(data.sync_cron),
        enabled=data.enabled,
        paused=data.paused,
        created_at=now,
    )
    # A new connector syncs as soon as a worker is free, then on its schedule.
    row.next_run_at = now if data.enabled and not data.paused else None
    session.add(row)
    _flush(session, data.name)
    return row


def _stored_secrets(row: Connector, changes: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """The stored secrets the update merges over.

    Secrets no key decrypts are lost: a change that gives secrets replaces them all; a
    change of config alone is refused (it cannot be checked against them).
    """
    try:
        return secret_store.unseal(row.secrets, settings)
    except secret_store.UnreadableSecretsError as exc:
        if "secrets" in changes:
            return {}
        raise InvalidError(exc.message, field="secrets") from None


def update_connector(
    session: Session, row: Connector, data: ConnectorUpdate, settings: Settings, now: datetime
) -> Connector:
    """Change a connector; secrets given replace those of the same name. A changed URL
    must pass the host policy and comes with the secrets (`check_secrets_follow_urls`)."""
    changes = data.model_dump(exclude_unset=True)
    for key in ("name", "config", "secrets", "sync_interval_seconds", "enabled", "paused"):
        if key in changes and changes[key] is None:
            raise InvalidError(f"{key} cannot be null", field=key)
    config = validated_config(row.type, changes.get("config", row.config))
    if "config" in changes:
        check_hosts(row.type, config, settings.connector_allowed_hosts)
        check_secrets_follow_urls(row, config, changes.get("secrets", {}))
    if "config" in changes or "secrets" in changes:
        # Renaming, rescheduling or disabling needs no secrets (nor a key that reads them).
        merged = _stored_secrets(row, changes, settings) | changes.get("secrets", {})
        secrets = validated_secrets(row.type, merged)
        check_required_secrets(row.type, config, secrets)
    if "config" in changes:
        row.config = config.model_dump(mode="json", exclude_unset=True)
    if "secrets" in changes:
        row.secrets = secret_store.seal(secret_store.plain(secrets), settings)
    if "kinds" in changes:
        row.kinds = validated_kinds(row.type, changes["kinds"])
    if "sync_cron" in changes:
        row.sync_cron = validated_cron(changes["sync_cron"])
    for key in ("name", "sync_interval_seconds", "enabled", "paused"):
        if key in changes:
            setattr(row, key, changes[key])
    if changes.keys() & {"sync_interval_seconds", "sync_cron", "enabled", "paused"}:
        replan(session, row, now)
    _flush(session, row.name)
    return row
