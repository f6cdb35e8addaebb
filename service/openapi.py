"""The OpenAPI document, made to tell the truth about errors.

FastAPI documents each route's success and a 422 in a shape this API never sends. Here,
once for every route, the error answers each one can give are added from what the route
depends on (its dependant), so route modules declare none of them:

- a token (`get_principal`): 401 and 429;
- a role check (an editor or admin workspace, a deployment admin, or, for routes that take
  the principal itself and change something, the check they make): 403;
- a workspace (`X-Workspace`) or a path id: 404;
- any parameter or body: 422; a body: 400 (unreadable) and 413 (too large);
- a conflict with stored data: 409, from `CONFLICTS` (data decides it, not a signature);
- anything: 500.

Every error is `application/problem+json` with the `Problem` schema.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Iterator
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request, routing
from fastapi.dependencies.models import Dependant
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.routing import compile_path

from service.deps import (
    AdminWorkspace,
    DeploymentAdmin,
    EditorWorkspace,
    PrincipalDep,
    ViewerWorkspace,
    get_principal,
)
from service.errors import PROBLEM_JSON, Problem, problem

API_PREFIX = "/api/v1"
_WRITES = {"POST", "PUT", "PATCH", "DELETE"}

#: The operations whose service refuses some requests for what is stored: a duplicate
#: name, a row still in use, a sync already running. Keyed by method and path.
CONFLICTS: dict[tuple[str, str], str] = {
    ("POST", "/api/v1/workspaces"): "A workspace with this slug already exists.",
    ("POST", "/api/v1/teams"): "A team with this name already exists.",
    ("PATCH", "/api/v1/teams/{team_id}"): "A team with this name already exists.",
    ("DELETE", "/api/v1/teams/{team_id}"): "The team still owns objectives or sub-teams.",
    ("POST", "/api/v1/periods"): "A period with this name already exists.",
    ("PATCH", "/api/v1/periods/{period_id}"): "A period with this name already exists.",
    ("DELETE", "/api/v1/periods/{period_id}"): "The period still has objectives.",
    ("DELETE", "/api/v1/objectives/{objective_id}"): "Objectives are still aligned to it.",
    ("POST", "/api/v1/connectors"): "A connector with this name already exists.",
    ("PATCH", "/api/v1/connectors/{connector_id}"): "A connector with this name already exists.",
    ("POST", "/api/v1/connectors/{connector_id}/sync"): "The connector is already syncing.",
    ("POST", "/api/v1/mappings"): "The key result is already bound (or was bound meanwhile).",
    ("PUT", "/api/v1/mappings/{mapping_id}"): "The key result was bound meanwhile.",
}

_WWW_AUTHENTICATE = {
    "WWW-Authenticate": {
        "description": 'The scheme to authenticate with: `Bearer realm="okr-sync"`.',
        "required": True,
        "schema": {"type": "string"},
    }
}
_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before the token may send another request.",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    }
}
_ETAG = {
    "ETag": {
        "description": "The body's version; send it back in `If-None-Match`.",
        "required": True,
        "schema": {"type": "string"},
    }
}


def problem_response(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    """An OpenAPI response object for an error answered as problem+json."""
    response: dict[str, Any] = {
        "description": description,
        "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }
    if headers:
        response["headers"] = headers
    return response


def _dependency(alias: Any) -> Callable[..., Any]:
    """The callable an `Annotated[..., Depends(f)]` alias of service/deps.py stands for."""
    dependency: Callable[..., Any] = typing.get_args(alias)[1].dependency
    return dependency


_WORKSPACE = {_dependency(a) for a in (ViewerWorkspace, EditorWorkspace, AdminWorkspace)}
_ROLE_CHECKS = {_dependency(a) for a in (EditorWorkspace, AdminWorkspace, DeploymentAdmin)}
_PRINCIPAL = _dependency(PrincipalDep)


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for sub in dependant.dependencies:
        if sub.call is not None:
            yield sub.call
        yield from _calls(sub)


def _parameters(dependant: Dependant) -> int:
    own = (
        len(dependant.path_params)
        + len(dependant.query_params)
        + len(dependant.header_params)
        + len(dependant.cookie_params)
        + len(dependant.body_params)
    )
    return own + sum(_parameters(sub) for sub in dependant.dependencies)


def api_routes(app: FastAPI) -> Iterator[Any]:
    """Every API route of `app`, with its full path, as an `APIRoute` or a view of one.

    FastAPI 0.165 keeps included routers as they are and resolves their routes on demand
    (`iter_route_contexts`); earlier versions copy them into `app.routes`.
    """
    resolve = getattr(routing, "iter_route_contexts", None)
    for route in resolve(app.routes) if resolve is not None else app.routes:
        if isinstance(getattr(route, "original_route", route), APIRoute):
            yield route


def error_responses(route: Any, method: str) -> dict[str, dict[str, Any]]:
    """The error answers `method` on `route` can give, by status code."""
    from service.progress.polling import poll_scope

    calls = set(_calls(route.dependant))
    if poll_scope in calls:
        # Polled progress reads resolve the token and workspace themselves (from the
        # progress cache, without leaving the event loop): what a viewer workspace answers.
        calls |= {get_principal, _dependency(ViewerWorkspace)}
    takes_principal = any(sub.call is _PRINCIPAL for sub in route.dependant.dependencies)
    has_body = route.body_field is not None
    responses: dict[str, dict[str, Any]] = {}
    if has_body:
        responses["400"] = problem_response("The body could not be read (not UTF-8 text).")
    if get_principal in calls:
        responses["401"] = problem_response(
            "No token, or one that is unknown, revoked or expired.", _WWW_AUTHENTICATE
        )
    if calls & _ROLE_CHECKS or (takes_principal and method in _WRITES):
        responses["403"] = problem_response("The token's role is too low for this.")
    if calls & _WORKSPACE or route.dependant.path_params:
        responses["404"] = problem_response(
            "Not found in the token's workspace (the `X-Workspace` one, or a path id)."
        )
    conflict = CONFLICTS.get((method, route.path_format))
    if conflict is not None:
        responses["409"] = problem_response(conflict)
    if has_body:
        responses["413"] = problem_response("The body is larger than the server accepts.")
    if _parameters(route.dependant):
        responses["422"] = problem_response(
            "A parameter or the body is invalid; `field` and `errors` name what to fix."
        )
    if get_principal in calls:
        responses["429"] = problem_response("Too many requests with this token.", _RETRY_AFTER)
    responses["500"] = problem_response("An internal error; the server log has the details.")
    return responses


def _document(doc: dict[str, Any], app: FastAPI) -> None:
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for route in api_routes(app):
        if not route.include_in_schema:
            continue
        for method in sorted(route.methods):
            operation = doc["paths"][route.path_format][method.lower()]
            responses = operation["responses"]
            responses.pop("422", None)  # FastAPI's own shape; ours is problem+json
            responses.update(error_responses(route, method))
            if "304" in responses:
                responses["304"]["headers"] = _ETAG
                responses[str(route.status_code or 200)]["headers"] = _ETAG
            for status, response in responses.items():
                response.setdefault("description", HTTPStatus(int(status)).phrase)
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    problem = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(problem.pop("$defs", {}))
    schemas["Problem"] = problem
    doc["components"] = dict(sorted(doc["components"].items()))


def allowed_methods(doc: dict[str, Any], path: str) -> list[str]:
    """The methods the document lists for `path`: those of the path itself when it is in
    the document (`/mappings/preview`), else of every template it matches (OpenAPI's rule)."""
    paths: dict[str, dict[str, Any]] = doc["paths"]
    if path in paths:
        return sorted(method.upper() for method in paths[path])
    methods: set[str] = set()
    for template, operations in paths.items():
        regex, _, _ = compile_path(template)
        if regex.match(path):
            methods.update(method.upper() for method in operations)
    return sorted(methods)


def install_openapi(app: FastAPI) -> None:
    """Serve `app`'s OpenAPI document with every error documented (built once, on demand),
    and answer a method no route of a path takes with the `Allow` the document implies."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            _document(generate(), app)
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    async def method_not_allowed(request: Request, exc: Exception) -> JSONResponse:
        # Starlette names the methods of the first route whose path matched only, while
        # each method of a path is a route of its own here.
        assert isinstance(exc, HTTPException)
        response = problem(405, str(exc.detail))
        allowed = allowed_methods(app.openapi(), request.url.path)
        response.headers["Allow"] = ", ".join(allowed) or (exc.headers or {}).get("Allow", "")
        return response

    app.add_exception_handler(405, method_not_allowed)
