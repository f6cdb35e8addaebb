"""HTTP routes for progress reads, served from built bytes (`service.progress.polling`):
ETag / If-None-Match answer 304 without building anything; and the same pushed as
server-sent events (`service.progress.stream`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.security import HTTPAuthorizationCredentials

from service.deps import bearer
from service.openapi import problem_response
from service.pagination import Id
from service.progress import polling
from service.progress.models import KeyResultProgress, ObjectiveProgress, PeriodProgress
from service.progress.polling import PollScopeDep, progress_cache
from service.progress.stream import MAX_FILTERED, MEDIA_TYPE, EventStream, stream_hub

router = APIRouter(tags=["progress"])

_304: dict[int | str, dict[str, Any]] = {
    304: {"description": "Not modified (the `If-None-Match` ETag still matches)."}
}


@router.get(
    "/key-results/{key_result_id}/progress", response_model=KeyResultProgress, responses=_304
)
async def read_key_result_progress(
    request: Request, scope: PollScopeDep, key_result_id: Id
) -> Response:
    """A key result's progress object."""
    return await progress_cache(request).serve(
        request, scope, ("key_result", key_result_id), polling.key_result(key_result_id)
    )


@router.get("/objectives/{objective_id}/progress", response_model=ObjectiveProgress, responses=_304)
async def read_objective_progress(
    request: Request, scope: PollScopeDep, objective_id: Id
) -> Response:
    """An objective's progress: the weighted mean of its key results, with theirs."""
    return await progress_cache(request).serve(
        request, scope, ("objective", objective_id), polling.objective(objective_id)
    )


@router.get("/progress", response_model=PeriodProgress, responses=_304)
async def read_period_progress(
    request: Request,
    scope: PollScopeDep,
    period: Annotated[
        str,
        Query(
            description="Period name (e.g. 2026), id, or `current`: the longest period "
            "containing today in the workspace's time zone (the default).",
        ),
    ] = "current",
    team: Annotated[Id | None, Query(description="Only this team's objectives.")] = None,
) -> Response:
    """The whole tree of a period: objectives > key results > initiatives."""
    return await progress_cache(request).serve(
        request, scope, ("tree", period, team), polling.period_tree(period, team)
    )


_STREAM_DESCRIPTION = """\
A stream of server-sent events (`text/event-stream`). Each event has an `event:` name, an
`id:` (the workspace's change counter, the same on every API process; the events of one
change share it) and one line of JSON `data:`:

- `snapshot`: `{"key_results": [ids]}`, the stream's whole set of key results; the
  `progress` events of each, and a `tree` event, follow. Sent first on a fresh connection,
  on a resumed one that this process cannot replay, and to a client too slow to keep up.
  Drop anything held that it does not list.
- `progress`: a key result's progress object (`KeyResultProgress`), exactly the bytes
  `GET /key-results/{key_result_id}/progress` answers, when its ETag changes (or it enters
  the stream's set).
- `removed`: `{"key_result_id": id}`, a key result deleted or no longer in the current
  period.
- `tree`: `{"period_id": id, "period": name, "etag": tag}`, the ETag
  `GET /progress` answers now for the current period (`period=current`, its name or id),
  when it changes; all null while no period contains today.

With `Last-Event-ID` (a browser's `EventSource` sends it when it reconnects) the stream
starts, instead of a snapshot, with the current state of what changed from that id on (the
change of that id included), when this process saw that id; any other value, malformed or
unknown, starts a fresh stream. Comments (`: ping`) come after
`OKR_STREAM_HEARTBEAT_SECONDS` without an event. Changes show at once when made through
this process, within `OKR_PROGRESS_VERSION_CHECK_SECONDS` when made through another."""


@router.get(
    "/stream",
    response_class=EventStream,
    status_code=200,
    responses={
        200: {
            "description": _STREAM_DESCRIPTION,
            "content": {MEDIA_TYPE: {"schema": {"type": "string"}}},
        },
        503: problem_response(
            "This process serves `OKR_STREAM_MAX_CLIENTS` streams already, or is stopping.",
            {
                "Retry-After": {
                    "description": "Seconds to wait before connecting again.",
                    "required": True,
                    "schema": {"type": "integer", "minimum": 1},
                }
            },
        ),
    },
)
async def stream_progress(
    request: Request,
    scope: PollScopeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    key_result: Annotated[
        list[Id] | None,
        Query(
            max_length=MAX_FILTERED,
            description="Only these key results (repeat the parameter for several; any of "
            "the workspace, of any period): their `progress` and `removed` events, no "
            "`tree` events.",
        ),
    ] = None,
    last_event_id: Annotated[
        str | None,
        Header(description="The `id` of the last event received, to resume from."),
    ] = None,
) -> EventStream:
    """Progress pushed as it changes: a snapshot of the current period, then every change."""
    token = credentials.credentials if credentials else None
    return await stream_hub(request).open(request, scope, token, key_result, last_event_id)
