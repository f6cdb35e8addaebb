"""Limits on what a request may make the service read, whoever sends it."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import problem


class BodyTooLargeError(HTTPException):
    """The request body went past the limit while being read.

    An HTTPException, so that FastAPI's body parsing lets it through (it turns any other
    exception into a 400) and the app renders it as problem+json.
    """

    def __init__(self, max_body_bytes: int) -> None:
        super().__init__(413, f"request body larger than {max_body_bytes} bytes")


class BodySizeLimit:
    """Refuse request bodies larger than `max_body_bytes` with 413, without reading them.

    A declared `Content-Length` over the limit is refused before the app runs. Bodies of
    unknown length (chunked) are counted as they arrive: the chunk that crosses the limit
    raises `BodyTooLargeError` in whoever is reading, so at most the limit plus one chunk is
    ever held. Pure ASGI (no BaseHTTPMiddleware), so that bodies stream through it.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = self._content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            await self._refuse(scope, receive, send)
            return

        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise BodyTooLargeError(self.max_body_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLargeError:
            # Read outside the app's error handlers (a middleware, a streaming endpoint).
            if started:
                raise
            await self._refuse(scope, receive, send)

    def _content_length(self, scope: Scope) -> int | None:
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    return int(value)
                except ValueError:
                    return None  # the server refuses malformed lengths before we run
        return None

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem(413, f"request body larger than {self.max_body_bytes} bytes")
        # The unread body stays unread: the server closes the connection after answering.
        response.headers["Connection"] = "close"
        await response(scope, receive, send)
