"""API tokens and the audit log."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, ForeignKey, Index, Integer, String
from sqlmodel import Field, SQLModel

from service.db_types import UTCDateTime
from service.workspaces.models import Text


class Role(enum.StrEnum):
    """What a token may do, each role including the ones before it."""

    #: Progress, OKRs, explanations: what a dashboard needs.
    viewer = "viewer"
    #: OKRs, check-ins, mappings.
    editor = "editor"
    #: Connectors, tokens, workspace settings, the audit log.
    admin = "admin"

    @property
    def rank(self) -> int:
        return list(Role).index(self)


class ApiToken(SQLModel, table=True):
    """A bearer token. Only its SHA-256 is stored: the token itself is shown once."""

    __tablename__ = "api_token"

    id: int | None = Field(default=None, primary_key=True)
    #: None: a deployment token (creates workspaces, acts in any of them).
    workspace_id: int | None = Field(
        default=None,
        sa_column=Column(Integer, ForeignKey("workspace.id", ondelete="CASCADE"), index=True),
    )
    name: str = Field(max_length=200)
    role: Role = Field(sa_column=Column(String(16), nullable=False))
    token_hash: str = Field(max_length=64, unique=True)
    #: The token's first characters, so people can tell their tokens apart.
    prefix: str = Field(max_length=16)
    created_at: datetime = Field(sa_type=UTCDateTime(timezone=True))
    created_by: str | None = Field(default=None, max_length=200)
    last_used_at: datetime | None = Field(default=None, sa_type=UTCDateTime(timezone=True))
    expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime(timezone=True))
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime(timezone=True))


class TokenCreate(Text):
    name: str = Field(min_length=1, max_length=200)
    role: Role
    #: When the token stops working (None: never; revoke it instead).
    expires_at: datetime | None = None


class TokenPublic(SQLModel):
    id: int
    name: str
    role: Role
    prefix: str
    created_at: datetime
    created_by: str | None
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None


class TokenCreated(TokenPublic):
    #: The token itself: shown this once, never again.
    token: str


class AuditEvent(SQLModel, table=True):
    """One change made through the API or the CLI: who, when, what, old -> new."""

    __tablename__ = "audit_event"
    __table_args__ = (Index("ix_audit_event_workspace_id_id", "workspace_id", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    #: Deleted with its workspace (ids may be reused); None for deployment-level events,
    #: such as a workspace's own deletion.
    workspace_id: int | None = Field(
        default=None,
        sa_column=Column(Integer, ForeignKey("workspace.id", ondelete="CASCADE")),
    )
    at: datetime = Field(sa_type=UTCDateTime(timezone=True))
    #: The token's name (and id), or "cli" / "system".
    actor: str = Field(max_length=250)
    action: str = Field(max_length=16)
    entity: str = Field(max_length=64)
    entity_id: int | None = None
    #: {field: [old, new]}; secrets are masked.
    changes: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class AuditEventPublic(SQLModel):
    id: int
    at: datetime
    actor: str
    action: str
    entity: str
    entity_id: int | None
    changes: dict[str, Any]
