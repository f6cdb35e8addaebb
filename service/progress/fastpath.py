"""Polled progress reads answered from memory before the framework sees them.

A dashboard polling an unchanged key result needs a dictionary lookup and a tag
comparison (`ProgressCache.from_memory`); FastAPI's routing and dependency resolution
around them cost four times as much (measured in-process: 180 µs a read through the
routes, 50 µs for a bare FastAPI route). This ASGI middleware recognises the three
polled reads by path, asks the cache, and answers when the cache can answer alone.
Anything else (an unknown or expired token, a workspace not checked recently, a stale or
missing representation, a token over its rate, a path or query it does not recognise
exactly) goes on to the routes unchanged, which look up, build, or answer the error: the
answers are the same bytes and headers either way.

It sits inside the host check and the body limit, so those still apply.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

from fastapi.security.utils import get_authorization_scheme_param
from starlette.types import ASGIApp, Receive, Scope, Send

from service.http_cache import Representation, matches
from service.pagination import MAX_ID
from service.progress.polling import cache_of

_ID = r"([1-9][0-9]{0,18})"
_KEY_RESULT = re.compile(rf"/api/v1/key-results/{_ID}/progress")
_OBJECTIVE = re.compile(rf"/api/v1/objectives/{_ID}/progress")
_TREE = "/api/v1/progress"
_CANONICAL_ID = re.compile(_ID)
#: The routes' own templates, for request logs and metrics.
_TEMPLATES = {
    "key_result": "/api/v1/key-results/{key_result_id}/progress",
    "objective": "/api/v1/objectives/{objective_id}/progress",
    "tree": _TREE,
}


def _id(text: str) -> int | None:
    value = int(text)
    return value if value <= MAX_ID else None


def resource_of(path: str, query_string: bytes) -> tuple[Any, ...] | None:
    """The cache key the progress routes would use for this request, or None when the
    routes must decide (anything but the plain forms)."""
    if path == _TREE:
        period, team = "current", None
        seen: set[str] = set()
        try:
            pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
        except ValueError:
            return None
        for name, value in pairs:
            if name in seen:
                return None
            seen.add(name)
            if name == "period":
                period = value
            elif name == "team":
                if _CANONICAL_ID.fullmatch(value) is None or (team := _id(value)) is None:
                    return None
        return ("tree", period, team)
    for kind, pattern in (("key_result", _KEY_RESULT), ("objective", _OBJECTIVE)):
        found = pattern.fullmatch(path)
        if found is not None:
            ident = _id(found.group(1))
            return None if ident is None else (kind, ident)
    return None


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _raw(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


class PolledReads:
    """ASGI middleware serving polled progress reads from memory when it can."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            resource = resource_of(scope["path"], scope["query_string"])
            if resource is not None:
                found = self._from_memory(scope, resource)
                if found is not None:
                    representation, workspace = found
                    scope.setdefault("state", {})["workspace"] = workspace
                    scope["route_template"] = _TEMPLATES[resource[0]]
                    await self._answer(scope, representation, send)
                    return
        await self.app(scope, receive, send)

    @staticmethod
    def _from_memory(scope: Scope, resource: tuple[Any, ...]) -> tuple[Representation, str] | None:
        cache = cache_of(scope["app"].state)
        authorization = _header(scope, b"authorization")
        token = None
        if authorization:
            scheme, credentials = get_authorization_scheme_param(authorization)
            if scheme.lower() == "bearer" and credentials:
                token = credentials
        return cache.from_memory(token, _header(scope, b"x-workspace"), resource, cache.clock())

    @staticmethod
    async def _answer(scope: Scope, found: Representation, send: Send) -> None:
        if matches(_header(scope, b"if-none-match"), found.etag):
            await send(
                {"type": "http.response.start", "status": 304, "headers": _raw(found.headers)}
            )
            await send({"type": "http.response.body", "body": b""})
            return
        headers = [
            (b"content-length", str(len(found.body)).encode()),
            (b"content-type", b"application/json"),
            *_raw(found.headers),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": found.body})
