"""Domain errors and their RFC 9457 problem+json rendering."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_JSON = "application/problem+json"
logger = logging.getLogger(__name__)


class ProblemFieldError(BaseModel):
    """One thing wrong with a request, by the field users wrote (null when it is no field,
    such as malformed JSON)."""

    field: str | None
    message: str


class Problem(BaseModel):
    """The body of every error answer (RFC 9457 problem+json), as `problem()` renders it."""

    type: str = Field(description="Always `about:blank`: `status` and `title` say it all.")
    title: str
    status: int = Field(ge=400, le=599)
    detail: str
    field: str | None = Field(
        default=None, description="The field at fault, named as in the request."
    )
    errors: list[ProblemFieldError] | None = Field(
        default=None, description="Every field at fault, when the request named any."
    )


class DomainError(Exception):
    """An error a client can act on; rendered as problem+json with `status`."""

    status = 400
    title = "Bad request"
    #: Response headers the error carries (WWW-Authenticate, Retry-After).
    headers: dict[str, str] = {}

    def __init__(self, detail: str, *, field: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field


class NotFoundError(DomainError):
    """The resource does not exist in the caller's workspace."""

    status = 404
    title = "Not found"

    def __init__(self, resource: str, ident: object, *, field: str | None = None) -> None:
        super().__init__(f"{resource} {ident} not found", field=field)


class InvalidError(DomainError):
    """Input is well-formed but breaks a rule (target equal to start, a cycle, ...)."""

    status = 422
    title = "Invalid input"


class UnauthorizedError(DomainError):
    """No token, or one that is unknown, revoked or expired."""

    status = 401
    title = "Unauthorized"
    headers = {"WWW-Authenticate": 'Bearer realm="okr-sync"'}


class ForbiddenError(DomainError):
    """A valid token whose role is too low for the request."""

    status = 403
    title = "Forbidden"


class RateLimitedError(DomainError):
    """Too many requests for one token; `retry_after_seconds` says when to come back."""

    status = 429
    title = "Too many requests"

    def __init__(self, detail: str, *, retry_after_seconds: int) -> None:
        super().__init__(detail)
        self.headers = {"Retry-After": str(retry_after_seconds)}


class ConflictError(DomainError):
    """The request conflicts with what is stored (a duplicate name, a running sync)."""

    status = 409
    title = "Conflict"


def problem(status: int, detail: str, *, title: str | None = None, **extra: Any) -> JSONResponse:
    """A problem+json response."""
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    body.update({k: v for k, v in extra.items() if v is not None})
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON)


#: Where FastAPI found a parameter; the field is named without it, as domain errors name it.
_SOURCES = ("body", "query", "path", "header", "cookie")


def _location(loc: tuple[Any, ...] | list[Any]) -> str | None:
    parts = list(loc)
    if parts and parts[0] in _SOURCES:
        # A parameter is named as the request names it, whichever of its repeated values
        # (`?key_result=1&key_result=0`) is wrong; a body field by its path.
        parts = parts[1:] if parts[0] == "body" else parts[1:2]
    return ".".join(str(part) for part in parts) or None


def install_error_handlers(app: FastAPI) -> None:
    """Render every error the API can produce as problem+json."""

    @app.exception_handler(DomainError)
    async def _domain(_request: Request, exc: DomainError) -> JSONResponse:
        errors = [{"field": exc.field, "message": exc.detail}] if exc.field else None
        response = problem(exc.status, exc.detail, title=exc.title, field=exc.field, errors=errors)
        response.headers.update(exc.headers)
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        for err in exc.errors():
            loc = list(err.get("loc", ()))
            # Pydantic appends the union member or validator name; the field is what users need.
            loc = [p for p in loc if not (isinstance(p, str) and p.startswith("function-"))]
            message = str(err.get("msg", "invalid"))
            field = _location(loc)
            if err.get("type") == "json_invalid":
                reason = err.get("ctx", {}).get("error", message)
                message = f"malformed JSON: {reason} (at character {field})"
                field = None  # the location is a character position, not a field
            errors.append({"field": field, "message": message})
        first = errors[0] if errors else {"field": None, "message": "invalid request"}
        detail = (
            f"{first['field']}: {first['message']}" if first["field"] else str(first["message"])
        )
        return problem(422, detail, title="Invalid input", field=first["field"], errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        response = problem(exc.status_code, str(exc.detail))
        for key, value in (exc.headers or {}).items():
            response.headers[key] = value
        return response

    @app.exception_handler(PoolTimeoutError)
    async def _busy(_request: Request, _exc: PoolTimeoutError) -> JSONResponse:
        # Every connection stayed busy for OKR_DB_POOL_TIMEOUT_SECONDS: the database is the
        # bottleneck, not the request; the client may come back shortly.
        response = problem(503, "the database is busy; retry shortly")
        response.headers["Retry-After"] = "1"
        return response

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return problem(500, "internal error; the server log has the details")
