"""Workspaces: one company (or one client of a consultancy), isolated from the others."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import ValidationInfo, field_validator
from sqlmodel import Field, SQLModel

from service.db_types import UTCDateTime
from service.json_types import as_documented

SLUG_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"


def check_timezone(value: str) -> str:
    """Return `value` when it names an IANA time zone, else raise ValueError."""
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {value!r} (use an IANA name such as Europe/Paris)"
        ) from None
    return value


class Text(SQLModel):
    """Input whose strings every database can store (PostgreSQL text cannot hold NUL), and
    whose values have the JSON types the document gives (`service.json_types`)."""

    @field_validator("*", mode="before")
    @classmethod
    def _as_documented(cls, value: object, info: ValidationInfo) -> object:
        return as_documented(cls, value, info)

    @field_validator("*")
    @classmethod
    def _no_nul(cls, value: object, info: ValidationInfo) -> object:
        if isinstance(value, str) and "\x00" in value:
            raise ValueError(f"{info.field_name} cannot contain the NUL character (\\u0000)")
        return value


class WorkspaceBase(Text):
    name: str = Field(min_length=1, max_length=200)
    timezone: str = Field(default="UTC", max_length=64)
    #: A key result is on track while progress >= expected - on_track_margin.
    on_track_margin: float = Field(default=0.10, ge=0, le=1)
    #: ... and at risk while progress >= expected - at_risk_margin (never below on_track_margin:
    #: `service.workspaces.service.check_margins`, on create and update, so that reads never
    #: re-check what was stored).
    at_risk_margin: float = Field(default=0.25, ge=0, le=1)

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        return check_timezone(value)


class Workspace(WorkspaceBase, table=True):
    id: int | None = Field(default=None, primary_key=True)
    slug: str = Field(max_length=64, unique=True, index=True)
    created_at: datetime = Field(sa_type=UTCDateTime)


class WorkspaceCreate(WorkspaceBase):
    slug: str = Field(max_length=64, schema_extra={"pattern": SLUG_PATTERN})


class WorkspaceUpdate(Text):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    timezone: str | None = Field(default=None, max_length=64)
    on_track_margin: float | None = Field(default=None, ge=0, le=1)
    at_risk_margin: float | None = Field(default=None, ge=0, le=1)

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str | None) -> str | None:
        return None if value is None else check_timezone(value)


class WorkspacePublic(WorkspaceBase):
    id: int
    slug: str
    created_at: datetime
