"""HTTP routes for mappings (bind a key result to a metric), previews and explanations."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from sqlmodel import col, select

from service.deps import ClockDep, EditorWorkspace, SessionDep, SettingsDep, ViewerWorkspace
from service.mappings import service
from service.mappings.models import (
    ExplainPublic,
    Mapping,
    MappingCreate,
    MappingPublic,
    MappingUpdate,
    MappingVersion,
    MappingVersionPublic,
    PreviewPublic,
    PreviewRequest,
)
from service.mappings.spec import EXAMPLES, UNION_TAGS, check_limits
from service.okr.models import KeyResult
from service.okr.service import get_owned, page_of
from service.pagination import Cursor, Id, Limit, Page, decode_cursor, page_size


def clean_location(loc: tuple[Any, ...] | list[Any], error_type: str) -> list[Any]:
    """An error location as users name fields: `spec.numerator.filters.0.field`.

    Pydantic puts "body" first and the tag of each tagged union it went through (`ratio`,
    `count`...) in the path; neither is a field the user wrote.
    """
    parts = list(loc)
    if parts and parts[0] == "body":
        parts = parts[1:]
    cleaned = [
        p for i, p in enumerate(parts) if not (isinstance(p, str) and p in UNION_TAGS and i > 0)
    ]
    if error_type in ("union_tag_invalid", "union_tag_not_found"):
        last = cleaned[-1] if cleaned else None
        cleaned.append("match" if last in ("filters",) or isinstance(last, int) else "type")
    return cleaned


class SpecRoute(APIRoute):
    """Routes whose body holds a spec report validation errors by the spec's field path."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                errors = []
                for err in exc.errors():
                    err = dict(err)
                    err["loc"] = tuple(clean_location(err.get("loc", ()), str(err.get("type"))))
                    errors.append(err)
                raise RequestValidationError(errors, body=exc.body) from None

        return route


router = APIRouter(tags=["mappings"], route_class=SpecRoute)


_CREATE_EXAMPLES = {
    name: {"summary": ex["summary"], "value": {"key_result_id": 1, "spec": ex["value"]}}
    for name, ex in EXAMPLES.items()
}
_UPDATE_EXAMPLES = {
    name: {"summary": ex["summary"], "value": {"spec": ex["value"]}}
    for name, ex in EXAMPLES.items()
}
_PREVIEW_EXAMPLES = {
    name: {
        "summary": ex["summary"],
        "value": {"key_result_id": 1, "spec": ex["value"], "sample_size": 20},
    }
    for name, ex in EXAMPLES.items()
}


@router.get("/mappings", response_model=Page[MappingPublic])
def list_mappings(
    session: SessionDep,
    ws: EditorWorkspace,
    settings: SettingsDep,
    limit: Limit = None,
    cursor: Cursor = None,
    key_result_id: Annotated[Id | None, Query(description="Only this key result's.")] = None,
) -> Page[MappingPublic]:
    """List the workspace's mappings (key result ↔ metric bindings)."""
    query = select(Mapping).where(Mapping.workspace_id == ws.id)
    if key_result_id is not None:
        query = query.where(Mapping.key_result_id == key_result_id)
    rows, nxt = page_of(session, query, Mapping, page_size(settings, limit), decode_cursor(cursor))
    return Page(items=[service.mapping_public(session, m) for m in rows], next_cursor=nxt)


@router.post("/mappings", response_model=MappingPublic, status_code=201)
def create_mapping(
    session: SessionDep,
    ws: EditorWorkspace,
    clock: ClockDep,
    settings: SettingsDep,
    data: Annotated[MappingCreate, Body(openapi_examples=_CREATE_EXAMPLES)],
) -> MappingPublic:
    """Bind a key result to a metric spec and evaluate it over the records synced so far."""
    check_limits(data.spec, settings)
    mapping = service.create_mapping(session, ws, data, clock())
    session.commit()
    return service.mapping_public(session, mapping)


@router.post("/mappings/preview", response_model=PreviewPublic)
def preview_mapping(
    session: SessionDep,
    ws: EditorWorkspace,
    clock: ClockDep,
    settings: SettingsDep,
    data: Annotated[PreviewRequest, Body(openapi_examples=_PREVIEW_EXAMPLES)],
) -> PreviewPublic:
    """Evaluate a spec without saving it: the value, the counts and a sample of records."""
    check_limits(data.spec, settings)
    try:
        return service.preview(session, ws, data, clock(), settings)
    finally:
        # A preview never changes stored data, whatever happened.
        session.rollback()


@router.get("/mappings/{mapping_id}", response_model=MappingPublic)
def read_mapping(session: SessionDep, ws: EditorWorkspace, mapping_id: Id) -> MappingPublic:
    """Read a mapping: its current spec, version, value and baseline."""
    return service.mapping_public(session, get_owned(session, Mapping, ws, mapping_id))


@router.put("/mappings/{mapping_id}", response_model=MappingPublic)
def update_mapping(
    session: SessionDep,
    ws: EditorWorkspace,
    clock: ClockDep,
    settings: SettingsDep,
    mapping_id: Id,
    data: Annotated[MappingUpdate, Body(openapi_examples=_UPDATE_EXAMPLES)],
) -> MappingPublic:
    """Replace a mapping's spec; this makes a new version and re-evaluates the key result."""
    check_limits(data.spec, settings)
    mapping = get_owned(session, Mapping, ws, mapping_id)
    mapping = service.update_mapping(session, ws, mapping, data, clock())
    session.commit()
    return service.mapping_public(session, mapping)


@router.delete("/mappings/{mapping_id}", status_code=204)
def delete_mapping(session: SessionDep, ws: EditorWorkspace, mapping_id: Id) -> None:
    """Unbind a key result: it keeps its value and history and becomes manual."""
    service.delete_mapping(session, get_owned(session, Mapping, ws, mapping_id))
    session.commit()


@router.get("/mappings/{mapping_id}/versions", response_model=list[MappingVersionPublic])
def list_mapping_versions(
    session: SessionDep, ws: EditorWorkspace, mapping_id: Id
) -> list[MappingVersion]:
    """Every version of a mapping's spec, oldest first."""
    mapping = get_owned(session, Mapping, ws, mapping_id)
    return list(
        session.exec(
            select(MappingVersion)
            .where(MappingVersion.mapping_id == mapping.id)
            .order_by(col(MappingVersion.version))
        )
    )


@router.get("/key-results/{key_result_id}/explain", response_model=ExplainPublic)
def explain_key_result(
    session: SessionDep,
    ws: ViewerWorkspace,
    clock: ClockDep,
    settings: SettingsDep,
    key_result_id: Id,
    part: Annotated[
        str | None,
        Query(description="Whose records to list: value, numerator, denominator or responses."),
    ] = None,
    limit: Limit = None,
    cursor: Cursor = None,
) -> ExplainPublic:
    """Explain a key result's value: spec, windows, counts, sources and the records counted."""
    kr = get_owned(session, KeyResult, ws, key_result_id)
    return service.explain(
        session,
        ws,
        kr,
        clock(),
        part=part,
        limit=page_size(settings, limit),
        cursor=cursor,
        settings=settings,
    )
