"""ETag / If-None-Match for polled reads: a representation is built once, stored as bytes
with its tag, and a request whose `If-None-Match` holds the tag answers 304 without
building or hashing anything."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import orjson
from fastapi import Request, Response
from fastapi.encoders import jsonable_encoder

#: Responses depend on the token and the workspace it picks; private: no shared cache may
#: keep them; no-cache: a client revalidates every time (a 304 when unchanged).
CACHE_HEADERS = {"Cache-Control": "private, no-cache", "Vary": "Authorization, X-Workspace"}

#: One entity tag of an If-None-Match list (RFC 9110 §8.8.3: etagc is any visible
#: character but the double quote), and the comma after it.
_ENTITY_TAG = re.compile(r'[ \t]*(?:W/)?("[\x21\x23-\x7e\x80-\xff]*")[ \t]*(?:,|$)')


@dataclass(frozen=True, slots=True)
class Representation:
    """A JSON body and its weak ETag."""

    body: bytes
    etag: str
    headers: dict[str, str] = field(default_factory=dict)


def representation(payload: Any, untagged: Collection[str] = ()) -> Representation:
    """`payload` as JSON (sorted keys) with a weak ETag over it, `untagged` keys blanked
    at every depth: a change confined to them keeps the tag (hence weak, RFC 9110 §8.8.1:
    the bodies are equivalent, not identical)."""
    data = jsonable_encoder(payload)
    body = orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
    tagged = orjson.dumps(_blank(data, frozenset(untagged)), option=orjson.OPT_SORT_KEYS)
    etag = 'W/"' + hashlib.sha256(tagged).hexdigest()[:32] + '"'
    return Representation(body, etag, {"ETag": etag, **CACHE_HEADERS})


def _blank(data: Any, keys: frozenset[str]) -> Any:
    if not keys:
        return data
    if isinstance(data, dict):
        return {k: None if k in keys else _blank(v, keys) for k, v in data.items()}
    if isinstance(data, list):
        return [_blank(v, keys) for v in data]
    return data


def opaque_tags(if_none_match: str) -> set[str] | None:
    """The opaque tags of an `If-None-Match` value (`W/` dropped: the comparison is weak),
    `{"*"}` for a star, None when it is malformed (the header is then ignored)."""
    if if_none_match.strip() == "*":
        return {"*"}
    tags: set[str] = set()
    position = 0
    while position < len(if_none_match):
        found = _ENTITY_TAG.match(if_none_match, position)
        if found is None or found.end() == position:
            return None
        tags.add(found.group(1))
        position = found.end()
    return tags or None


def matches(if_none_match: str | None, etag: str) -> bool:
    """Whether `If-None-Match` names `etag` (weak comparison, RFC 9110 §13.1.2)."""
    if not if_none_match:
        return False
    tags = opaque_tags(if_none_match)
    return tags is not None and ("*" in tags or etag.removeprefix("W/") in tags)


def respond(request: Request, found: Representation) -> Response:
    """304 when the client holds `found` already, else `found` itself."""
    if matches(request.headers.get("if-none-match"), found.etag):
        return Response(status_code=304, headers=found.headers)
    return Response(found.body, media_type="application/json", headers=found.headers)
