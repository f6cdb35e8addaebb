"""ETag / If-None-Match for polled reads: an unchanged body answers 304."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from fastapi import Request, Response
from fastapi.encoders import jsonable_encoder


def cached_json(request: Request, payload: Any) -> Response:
    """`payload` as JSON with a strong ETag; 304 when the client already has it."""
    body = json.dumps(jsonable_encoder(payload), separators=(",", ":"), sort_keys=True).encode()
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    wanted = request.headers.get("if-none-match", "")
    # RFC 9110: If-None-Match compares weakly, so W/"x" (as proxies that compress rewrite
    # strong tags) still matches "x".
    tags = {tag.strip().removeprefix("W/") for tag in wanted.split(",")}
    if etag in tags or wanted.strip() == "*":
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)
