"""Keyset pagination: `limit` + opaque `cursor`, ordered by id."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Generic, TypeVar

from annotated_types import Ge, Le
from fastapi import Query
from pydantic import BaseModel

from service.errors import InvalidError
from service.settings import Settings

#: The largest id an INTEGER column holds; larger ids exist nowhere (PostgreSQL refuses to
#: compare them with an INTEGER column, SQLite to bind them past 2**63 - 1).
MAX_ID = 2**31 - 1

#: Any id a path or query parameter names (a request body's are checked where they are
#: used): out of the columns' range is a 422 naming the parameter, never a database error.
Id = Annotated[int, Ge(1), Le(MAX_ID)]

#: The `limit` and `cursor` query parameters every list endpoint takes. No page holds more
#: rows than ids exist, so a larger limit is a mistake rather than a wish.
Limit = Annotated[
    int | None, Query(ge=1, le=MAX_ID, description="Page size (capped by the server).")
]
Cursor = Annotated[str | None, Query(description="`next_cursor` of the previous page.")]


def page_size(settings: Settings, limit: int | None) -> int:
    """The page size to serve: `limit`, or the default, never above the server's maximum."""
    return min(limit or settings.page_limit_default, settings.page_limit_max)


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """A page of a list; pass `next_cursor` back as `cursor` for the next one."""

    items: list[T]
    next_cursor: str | None = None


def encode_cursor(last_id: int) -> str:
    """Opaque cursor for the row after `last_id`."""
    return base64.urlsafe_b64encode(f"id:{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int:
    """The id a cursor stands for (0 when absent); a bad cursor is a 422 naming `cursor`."""
    if not cursor:
        return 0
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        kind, _, value = raw.partition(":")
        if kind != "id" or not value.isascii() or not value.isdigit():
            raise ValueError(kind)
        return int(value)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidError("cursor is not one this API issued", field="cursor") from None
