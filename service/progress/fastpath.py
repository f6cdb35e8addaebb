"""Polled progress reads answered from memory before the framework sees them.

A dashboard polling an unchanged key result needs a dictionary lookup and a tag
comparison (`ProgressCache.from_memory`). FastAPI's routing and dependency resolution
around them cost four times as much (measured in-process: 180 µs a read through the
routes, 50 µs for a bare FastAPI route), and its middleware stack (error handling, host
check, body limit, request metrics), each layer wrapping `send`, cost as much again under
load: answered inside that stack, a polled 304 served 0.56-0.68x the bare app's rate at
200 connections; answered before it, 1.0x (docs/benchmarks.md).

So the app (`service.main.OkrSyncApp`) asks `PolledReads` first, for the three polled
reads recognised by path, and answers when memory can answer alone. What the stack would
do to such a request is done here too: the Host is checked against the same allowed
hosts, and the request is timed, counted and logged by the same code
(`observability.record_request`). Anything else (a host that is not plainly allowed, a
request with a body, an unknown or expired token, a workspace not checked recently, a
stale or missing representation, a token over its rate, a path or query not recognised
exactly, or any error here) goes through the whole stack to the routes, which look up,
build, or answer the error: the answers are the same bytes and headers either way.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl

from fastapi.security.utils import get_authorization_scheme_param
from starlette.types import Scope, Send

from service.http_cache import Representation, matches
from service.observability import record_request
from service.pagination import MAX_ID
from service.progress.polling import cache_of

log = logging.getLogger("okr_sync.progress")

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


def _raw(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


class PolledReads:
    """Polled progress reads answered from memory, before the middleware stack."""

    def __init__(self, allowed_hosts: Sequence[str]) -> None:
        patterns = [pattern.lower() for pattern in allowed_hosts]
        self._any_host = "*" in patterns
        self._hosts = frozenset(p for p in patterns if not p.startswith("*"))
        self._host_suffixes = tuple(p[1:] for p in patterns if p.startswith("*."))

    def host_allowed(self, host: str | None) -> bool:
        """Whether Starlette's `TrustedHostMiddleware` with the same allowed hosts lets
        this Host header through; False also when unsure (the stack then decides)."""
        if self._any_host:
            return True
        if not host:
            return False
        host = host.lower()
        name, colon, port = host.rpartition(":")
        if colon and port.isdigit() and (":" not in name or name.endswith("]")):
            host = name
        if ":" in host and not host.startswith("["):
            return False  # not a host name or a bracketed address: let the stack refuse it
        return host in self._hosts or (
            bool(self._host_suffixes) and host.endswith(self._host_suffixes)
        )

    async def answered(self, state: Any, scope: Scope, send: Send) -> bool:
        """Answer the request from memory if it can; False when the stack must."""
        if scope["type"] != "http" or scope["method"] != "GET":
            return False
        started = time.perf_counter()
        resource = resource_of(scope["path"], scope["query_string"])
        if resource is None:
            return False
        host = authorization = x_workspace = if_none_match = None
        for key, value in scope["headers"]:
            if key == b"host":
                host = value.decode("latin-1")
            elif key == b"authorization":
                authorization = value.decode("latin-1")
            elif key == b"x-workspace":
                x_workspace = value.decode("latin-1")
            elif key == b"if-none-match":
                if_none_match = value.decode("latin-1")
            elif key == b"transfer-encoding" or (key == b"content-length" and value != b"0"):
                return False  # a body: the stack bounds and discards it
        if not self.host_allowed(host):
            return False
        token = None
        if authorization:
            scheme, credentials = get_authorization_scheme_param(authorization)
            if scheme.lower() == "bearer" and credentials:
                token = credentials
        cache = cache_of(state)
        try:
            found = cache.from_memory(token, x_workspace, resource, cache.clock())
        except Exception:  # noqa: BLE001 (the routes answer it, and report what fails)
            log.debug("polled read not answered from memory", exc_info=True)
            return False
        if found is None:
            return False
        representation, workspace = found
        scope.setdefault("state", {})["workspace"] = workspace
        scope["route_template"] = _TEMPLATES[resource[0]]
        status = await _answer(if_none_match, representation, send)
        record_request(scope, status, time.perf_counter() - started)
        return True


async def _answer(if_none_match: str | None, found: Representation, send: Send) -> int:
    if matches(if_none_match, found.etag):
        await send({"type": "http.response.start", "status": 304, "headers": _raw(found.headers)})
        await send({"type": "http.response.body", "body": b""})
        return 304
    headers = [
        (b"content-length", str(len(found.body)).encode()),
        (b"content-type", b"application/json"),
        *_raw(found.headers),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": found.body})
    return 200
