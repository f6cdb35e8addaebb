"""Tokens: creation (shown once, stored hashed), resolution, revocation; and the audit log.

Tokens are 256-bit random strings, so one SHA-256 is enough to store them (no password
hashing: nothing to brute-force), and lookups are a unique-index hit.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import event, inspect
from sqlalchemy.orm import Session as OrmSession
from sqlmodel import Session, SQLModel, select

from service.auth.models import ApiToken, AuditEvent, Role, TokenCreate
from service.errors import ForbiddenError, RateLimitedError, UnauthorizedError
from service.limits import RateLimiter

#: Every token starts with this, so secret scanners (and people) recognise one.
TOKEN_PREFIX = "okr_"
#: `last_used_at` is written at most this often per token: a dashboard polling every
#: second must not turn every read into a write.
LAST_USED_RESOLUTION = timedelta(minutes=1)
#: Resolved tokens kept per process, at most (beyond, the cache starts over).
TOKEN_CACHE_MAX_ENTRIES = 10_000


@dataclass(frozen=True, slots=True)
class Principal:
    """Who makes a request: a token, or the command line."""

    name: str
    role: Role
    #: None: deployment-wide (may create workspaces and act in any of them).
    workspace_id: int | None
    token_id: int | None = None

    @property
    def label(self) -> str:
        return f"{self.name} (token {self.token_id})" if self.token_id else self.name


#: The command line acts with every right (whoever runs it has the database already).
CLI = Principal(name="cli", role=Role.admin, workspace_id=None)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(
    session: Session,
    workspace_id: int | None,
    data: TokenCreate,
    now: datetime,
    created_by: str | None,
) -> tuple[ApiToken, str]:
    """A new token row and the token itself (returned this once)."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(
        workspace_id=workspace_id,
        name=data.name,
        role=data.role,
        token_hash=hash_token(token),
        prefix=token[: len(TOKEN_PREFIX) + 4],
        created_at=now,
        created_by=created_by,
        expires_at=data.expires_at,
    )
    session.add(row)
    session.flush()
    return row, token


@dataclass(frozen=True, slots=True)
class _Resolved:
    principal: Principal
    expires_at: datetime | None
    last_used_at: datetime
    resolved_at: datetime


#: Token hash -> its principal, as last read from the database by this process.
_resolved: dict[str, _Resolved] = {}


def cached_principal(token: str, now: datetime, cache_seconds: float) -> Principal | None:
    """The principal of `token` if this process resolved it less than `cache_seconds` ago
    and it has not expired since; None: look it up (`authenticate`).

    A token revoked or deleted through this process is forgotten at once (`_forget`);
    revoked by another process (the CLI, another API worker), it keeps working here for
    up to `cache_seconds`.
    """
    hit = _resolved.get(hash_token(token))
    if hit is None:
        return None
    age = (now - hit.resolved_at).total_seconds()
    if not 0 <= age < cache_seconds:
        return None
    if hit.expires_at is not None and hit.expires_at <= now:
        return None
    if now - hit.last_used_at >= LAST_USED_RESOLUTION:
        return None  # time to record the use
    return hit.principal


#: Share of a cached resolution's life after which a polled read renews it in the
#: background (`refresh_due`), so that it never runs out under steady polling.
REFRESH_AHEAD = 0.75


def refresh_due(token: str, now: datetime, cache_seconds: float) -> bool:
    """Whether `token`'s cached resolution should be renewed in the background now: it
    is most of the way to `cache_seconds`, or its last use is due to be recorded. Renewed
    ahead, a polled token never waits for its lookup; a revocation elsewhere still takes
    effect within `cache_seconds`, as an entry is never used beyond it."""
    hit = _resolved.get(hash_token(token))
    if hit is None:
        return False
    age = (now - hit.resolved_at).total_seconds()
    return age >= REFRESH_AHEAD * cache_seconds or now - hit.last_used_at >= LAST_USED_AHEAD


def forget(token: str) -> None:
    """Drop `token`'s cached resolution (a renewal found it revoked, expired or gone)."""
    _resolved.pop(hash_token(token), None)


#: A renewal records the token's use once its last recorded use is this old, before the
#: cache has to stop answering for it (LAST_USED_RESOLUTION).
LAST_USED_AHEAD = LAST_USED_RESOLUTION / 2


def _cache_seconds() -> float:
    from service.settings import get_settings

    return get_settings().token_cache_seconds


def authenticate(
    session: Session,
    token: str | None,
    now: datetime,
    cache_seconds: float | None = None,
    *,
    renew: bool = False,
) -> Principal:
    """The principal of a bearer token; 401 when missing, unknown, revoked or expired.

    Resolutions are reused for `cache_seconds` (default `OKR_TOKEN_CACHE_SECONDS`), so a
    polling dashboard costs no token query per request; 0 looks every request up.
    `renew` looks it up even when cached (a background renewal, `refresh_due`).
    """
    if not token:
        raise UnauthorizedError("a bearer token is required (Authorization: Bearer <token>)")
    ttl = _cache_seconds() if cache_seconds is None else cache_seconds
    cached = cached_principal(token, now, ttl) if ttl > 0 and not renew else None
    if cached is not None:
        return cached
    token_hash = hash_token(token)
    row = session.exec(select(ApiToken).where(ApiToken.token_hash == token_hash)).first()
    if row is None:
        raise UnauthorizedError("unknown token")
    if row.revoked_at is not None:
        raise UnauthorizedError("this token was revoked")
    if row.expires_at is not None and row.expires_at <= now:
        raise UnauthorizedError("this token has expired")
    record_after = LAST_USED_AHEAD if renew else LAST_USED_RESOLUTION
    if row.last_used_at is None or now - row.last_used_at >= record_after:
        row.last_used_at = now
        session.commit()
    assert row.id is not None
    principal = Principal(
        name=row.name, role=Role(row.role), workspace_id=row.workspace_id, token_id=row.id
    )
    if ttl > 0:
        if len(_resolved) >= TOKEN_CACHE_MAX_ENTRIES:
            _resolved.clear()
        _resolved[token_hash] = _Resolved(principal, row.expires_at, row.last_used_at, now)
    return principal


@event.listens_for(OrmSession, "after_flush")
def _forget(session: OrmSession, _context: Any) -> None:
    # A token revoked, changed or deleted here must not stay usable from the cache, nor
    # those of a deleted workspace (their rows go by cascade, without ORM events).
    gone_workspaces = set()
    for obj in [*session.dirty, *session.deleted]:
        if isinstance(obj, ApiToken):
            _resolved.pop(obj.token_hash, None)
        elif getattr(obj, "__tablename__", "") == "workspace" and obj in session.deleted:
            gone_workspaces.add(obj.id)
    if gone_workspaces:
        for token_hash, hit in list(_resolved.items()):
            if hit.principal.workspace_id in gone_workspaces:
                del _resolved[token_hash]


def require(principal: Principal, role: Role) -> None:
    if principal.role.rank < role.rank:
        raise ForbiddenError(f"this needs the {role.value} role; the token is {principal.role}")


# ---------------------------------------------------------------------------- audit log

#: Tables whose changes are audited, and how their entity is named.
AUDITED = {
    "team": "team",
    "period": "period",
    "objective": "objective",
    "key_result": "key_result",
    "initiative": "initiative",
    "check_in": "check_in",
    "mapping": "mapping",
    "connector": "connector",
    "workspace": "workspace",
    "api_token": "token",
}
#: Columns never written to the audit log as values.
MASKED = {"secrets", "token_hash"}
#: Columns that change on their own (syncs, evaluation), not by a person: not audited.
IGNORED = {
    "value",
    "value_at",
    "value_details",
    "last_synced_at",
    "last_success_at",
    "last_run_at",
    "last_run_status",
    "last_error",
    "lease_until",
    "lease_owner",
    "last_used_at",
    "updated_at",
    "next_run_at",
}
AUDIT_ACTOR = "audit_actor"
AUDIT_NOW = "audit_now"


def act_as(session: Session, principal: Principal, now: datetime) -> None:
    """Attribute the changes this session flushes to `principal`, at `now`."""
    session.info[AUDIT_ACTOR] = principal
    session.info[AUDIT_NOW] = now


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, dict | list | str | int | float | bool) or value is None:
        return value
    return str(value)


def _changes(obj: SQLModel, action: str) -> dict[str, Any]:
    state = inspect(obj)
    changes: dict[str, Any] = {}
    for attr in state.mapper.column_attrs:
        key = attr.key
        if key in IGNORED or key == "id":
            continue
        history = state.attrs[key].history
        if action == "update" and not history.has_changes():
            continue
        old = history.deleted[0] if history.deleted else None
        new = history.added[0] if history.added else getattr(obj, key)
        if action == "create":
            old = None
        elif action == "delete":
            old, new = getattr(obj, key), None
        if key in MASKED:
            old, new = ("***" if old else None), ("***" if new else None)
        changes[key] = [_plain(old), _plain(new)]
    return changes


@event.listens_for(OrmSession, "after_flush")
def _audit(session: OrmSession, _context: Any) -> None:
    # after_flush: new rows have their ids, and new/dirty/deleted and attribute histories
    # still show what this flush wrote. The events are flushed by the commit's next pass.
    principal: Principal | None = session.info.get(AUDIT_ACTOR)
    if principal is None:
        return
    now: datetime = session.info[AUDIT_NOW]
    pending: list[tuple[str, SQLModel]] = [("create", o) for o in session.new]
    pending += [("update", o) for o in session.dirty if session.is_modified(o)]
    pending += [("delete", o) for o in session.deleted]
    events = []
    for action, obj in pending:
        entity = AUDITED.get(getattr(obj, "__tablename__", ""))
        if entity is None:
            continue
        changes = _changes(obj, action)
        if action == "update" and not changes:
            continue
        workspace_id = getattr(obj, "workspace_id", None)
        if entity == "workspace":
            workspace_id = None if action == "delete" else getattr(obj, "id", None)
        events.append((obj, action, entity, workspace_id, changes))
    for obj, action, entity, workspace_id, changes in events:
        session.add(
            AuditEvent(
                workspace_id=workspace_id,
                at=now,
                actor=principal.label,
                action=action,
                entity=entity,
                entity_id=getattr(obj, "id", None),
                changes=changes,
            )
        )


def enforce_rate(
    limiter: RateLimiter, per_minute: int, principal: Principal, now: datetime
) -> None:
    """Count a request of `principal`'s token; 429 with Retry-After beyond `per_minute`."""
    wait = limiter.hit(str(principal.token_id), per_minute, now.timestamp())
    if wait is not None:
        raise RateLimitedError(
            f"more than {per_minute} requests a minute with this token",
            retry_after_seconds=min(60, max(1, math.ceil(wait))),
        )
