"""A fake host that records every request it receives and answers one fixed reply.

It stands for a host a connector must never reach (an attacker's server, an internal
service): tests prove nothing arrived, or that what it answers is not echoed back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Received:
    """One request as the host saw it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Recorder:
    """An ASGI app: records requests, answers `status` with `body`."""

    status: int = 200
    body: bytes = b"{}"
    content_type: str = "application/json"
    received: list[Received] = field(default_factory=list)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        self.received.append(
            Received(
                method=scope["method"],
                path=scope["path"],
                headers={k.decode().lower(): v.decode() for k, v in scope["headers"]},
                body=b"".join(chunks),
            )
        )
        await send(
            {
                "type": "http.response.start",
                "status": self.status,
                "headers": [(b"content-type", self.content_type.encode())],
            }
        )
        await send({"type": "http.response.body", "body": self.body})
