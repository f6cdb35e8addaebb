"""Mapping logic: bind key results to metric specs (versioned), evaluate them after syncs,
preview specs and explain values. Functions flush; routes (and the sync engine) commit."""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from connectors.base import Connector as VendorConnector
from connectors.base import RecordKind
from service.db import flush_or_conflict
from service.errors import ConflictError, InvalidError
from service.mappings import evaluate as ev
from service.mappings.models import (
    ExplainPublic,
    Mapping,
    MappingCreate,
    MappingPublic,
    MappingSource,
    MappingUpdate,
    MappingVersion,
    PartPublic,
    PreviewPublic,
    PreviewRequest,
    RecordRef,
    RecordsPage,
    SourcePublic,
)
from service.mappings.spec import MetricSpec, dump_spec, parse_spec
from service.okr.models import KeyResult, Unit, ValueSource
from service.okr.service import get_owned, record_value, wid
from service.pagination import decode_cursor, encode_cursor
from service.progress.maths import window_bounds
from service.settings import Settings
from service.sync.models import Connector
from service.sync.service import build_connector, is_stale
from service.workspaces.models import Workspace

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- evaluation


#: Plans of stored mappings, reused across syncs (specs are checked when bound; a plan's
#: SQL takes the window as parameters, so it stays valid as time passes).
_PLANS: OrderedDict[tuple[Any, ...], ev.Plan] = OrderedDict()
_PLANS_MAX = 1024
#: The scheduler's sync thread and request threads share the cache.
_PLANS_LOCK = threading.Lock()


@dataclass(frozen=True, slots=True)
class Batch:
    """What evaluating many mappings at once shares: two lookups instead of two per mapping."""

    windows: dict[int, tuple[date, date]]
    #: Connector rows as stored (id, workspace, type, config, kinds), part of plan keys.
    connectors: dict[int, tuple[Any, ...]]


def load_batch(session: Session, mappings: Sequence[Mapping], krs: Sequence[KeyResult]) -> Batch:
    """The key results' windows and the mappings' connectors, in one query each."""
    ids = set().union(*(_connector_ids(m.spec) for m in mappings)) if mappings else set()
    c = Connector.__table__.c  # type: ignore[attr-defined]
    rows = session.execute(
        sa_select(c.id, c.workspace_id, c.type, c.config, c.kinds).where(c.id.in_(sorted(ids)))
    ).all()
    return Batch(
        windows=ev.key_result_windows(session, krs),
        connectors={row[0]: tuple(row) for row in rows},
    )


def mapping_plan(
    session: Session, ctx: ev.Context, mapping: Mapping, batch: Batch | None = None
) -> ev.Plan:
    """The plan of a stored mapping's current version (cached per process).

    The key holds what a plan depends on: the spec, the key result's currency, and the
    connectors as stored now (a changed config or kind list is checked again).
    """
    kr = ctx.key_result
    if batch is None:
        batch = load_batch(session, [mapping], [])
    connectors = [batch.connectors.get(i) for i in sorted(_connector_ids(mapping.spec))]
    key = (
        str(session.get_bind().engine.url),
        mapping.id,
        mapping.version,
        json.dumps(mapping.spec, sort_keys=True),
        None if kr is None else (str(kr.unit), kr.currency),
        json.dumps(connectors, sort_keys=True, default=str),
    )
    with _PLANS_LOCK:
        found = _PLANS.get(key)
        if found is not None:
            _PLANS.move_to_end(key)
            return found
    the_plan = ev.plan(session, ctx, parse_spec(mapping.spec))
    with _PLANS_LOCK:
        _PLANS[key] = the_plan.detached()
        while len(_PLANS) > _PLANS_MAX:
            _PLANS.popitem(last=False)
    return the_plan


def _connector_ids(spec: Any) -> set[int]:
    if isinstance(spec, dict):
        found = {spec["connector_id"]} if isinstance(spec.get("connector_id"), int) else set()
        for value in spec.values():
            found |= _connector_ids(value)
        return found
    return set()


def evaluate_mapping(
    session: Session,
    ws: Workspace,
    mapping: Mapping,
    kr: KeyResult,
    now: datetime,
    batch: Batch | None = None,
) -> ev.Evaluation:
    """The value of a stored mapping at `now`, as a sync computes it (nothing written)."""
    ctx = ev.context_for(session, ws, now, kr, windows=batch.windows if batch else None)
    return ev.evaluate(session, ctx, mapping_plan(session, ctx, mapping, batch))


def _apply(
    session: Session,
    ws: Workspace,
    mapping: Mapping,
    kr: KeyResult,
    now: datetime,
    the_plan: ev.Plan | None = None,
    batch: Batch | None = None,
) -> bool:
    """Evaluate the mapping; store a history point when the value changed. Returns whether
    it changed. The baseline (previous equivalent window) is refreshed too, since the
    records of that window often arrive with the first sync, after the binding."""
    ctx = ev.context_for(session, ws, now, kr, windows=batch.windows if batch else None)
    the_plan = the_plan or mapping_plan(session, ctx, mapping, batch)
    result = ev.evaluate(session, ctx, the_plan)
    try:
        baseline = ev.evaluate(session, ctx, the_plan, previous=True)
    except (ValueError, OverflowError):
        # A window at the edge of the calendar has no previous one.
        mapping.baseline, mapping.baseline_start, mapping.baseline_end = None, None, None
    else:
        mapping.baseline = baseline.float_value
        first = baseline.parts[0]
        mapping.baseline_start, mapping.baseline_end = first.start, first.end
    value, details = result.float_value, result.details()
    changed = value != kr.value
    if changed:
        record_value(
            session,
            kr,
            value=value,
            at=now,
            source=ValueSource.sync,
            mapping_id=mapping.id,
            mapping_version=mapping.version,
            details=details,
        )
    else:
        # Same value: no history point, but counts beside it (responses, records) may move.
        kr.value_details = details
        session.flush()
    return changed


def reevaluate_after_sync(
    session: Session, connector_id: int, kinds: set[str], now: datetime
) -> int:
    """Re-evaluate the key results whose mappings read `connector_id`'s `kinds`; returns how
    many values changed. Flushes, never commits (the sync engine owns the transaction)."""
    if not kinds:
        return 0
    mappings = session.exec(
        select(Mapping)
        .where(
            col(Mapping.id).in_(
                select(MappingSource.mapping_id).where(
                    MappingSource.connector_id == connector_id,
                    col(MappingSource.kind).in_(sorted(kinds)),
                )
            )
        )
        .order_by(col(Mapping.id))
    ).all()
    if not mappings:
        return 0
    krs = {
        kr.id: kr
        for kr in session.exec(
            select(KeyResult).where(col(KeyResult.id).in_([m.key_result_id for m in mappings]))
        )
    }
    workspaces = {
        ws.id: ws
        for ws in session.exec(
            select(Workspace).where(col(Workspace.id).in_({m.workspace_id for m in mappings}))
        )
    }
    batch = load_batch(session, mappings, list(krs.values()))
    changed = 0
    for mapping in mappings:
        kr = krs.get(mapping.key_result_id)
        ws = workspaces.get(mapping.workspace_id)
        if kr is None or ws is None:
            continue
        try:
            changed += _apply(session, ws, mapping, kr, now, batch=batch)
        except (InvalidError, ValidationError) as exc:
            # The spec no longer fits its connector (config or kinds changed): keep the
            # last good value rather than failing the whole sync.
            log.warning("mapping %s cannot be evaluated: %s", mapping.id, exc)
    return changed


# ---------------------------------------------------------------------------- CRUD


def _key_result(session: Session, ws: Workspace, ident: int) -> KeyResult:
    return get_owned(session, KeyResult, ws, ident, field="key_result_id")


def _set_sources(session: Session, mapping: Mapping, the_plan: ev.Plan) -> None:
    for row in session.exec(select(MappingSource).where(MappingSource.mapping_id == mapping.id)):
        session.delete(row)
    session.flush()
    for connector_id, kind in sorted(the_plan.sources()):
        session.add(MappingSource(mapping_id=mapping.id, connector_id=connector_id, kind=kind))  # type: ignore[arg-type]
    session.flush()


def _flush_or_conflict(session: Session, kr: KeyResult) -> None:
    # A conflict: another request bound this key result (or versioned its mapping) meanwhile.
    flush_or_conflict(
        session,
        f"key result {kr.id} was bound concurrently; read its mapping and retry",
        "key_result_id",
    )


def _snapshot(session: Session, mapping: Mapping, now: datetime) -> None:
    session.add(
        MappingVersion(
            mapping_id=mapping.id,  # type: ignore[arg-type]
            version=mapping.version,
            spec=mapping.spec,
            created_at=now,
        )
    )


def bind(
    session: Session, ws: Workspace, kr: KeyResult, spec: MetricSpec, now: datetime
) -> Mapping:
    """Bind `kr` to `spec` (a new mapping, or a new version of its mapping) and evaluate it."""
    ctx = ev.context_for(session, ws, now, kr)
    the_plan = ev.plan(session, ctx, spec)
    mapping = session.exec(select(Mapping).where(Mapping.key_result_id == kr.id)).first()
    if mapping is None:
        mapping = Mapping(
            workspace_id=wid(ws),
            key_result_id=kr.id,  # type: ignore[arg-type]
            spec=dump_spec(spec),
            created_at=now,
            updated_at=now,
        )
        session.add(mapping)
    else:
        mapping.version += 1
        mapping.spec = dump_spec(spec)
        mapping.updated_at = now
    _flush_or_conflict(session, kr)
    _snapshot(session, mapping, now)
    _flush_or_conflict(session, kr)
    _set_sources(session, mapping, the_plan)
    _apply(session, ws, mapping, kr, now, the_plan)
    return mapping


def create_mapping(session: Session, ws: Workspace, data: MappingCreate, now: datetime) -> Mapping:
    kr = _key_result(session, ws, data.key_result_id)
    existing = session.exec(select(Mapping).where(Mapping.key_result_id == kr.id)).first()
    if existing is not None:
        raise ConflictError(
            f"key result {kr.id} is already bound by mapping {existing.id}; update that one",
            field="key_result_id",
        )
    return bind(session, ws, kr, data.spec, now)


def update_mapping(
    session: Session, ws: Workspace, mapping: Mapping, data: MappingUpdate, now: datetime
) -> Mapping:
    kr = _key_result(session, ws, mapping.key_result_id)
    return bind(session, ws, kr, data.spec, now)


def delete_mapping(session: Session, mapping: Mapping) -> None:
    """Unbind: the key result keeps its values and history, and becomes manual."""
    session.delete(mapping)
    session.flush()


def mapping_public(session: Session, mapping: Mapping) -> MappingPublic:
    kr = session.get(KeyResult, mapping.key_result_id)
    assert mapping.id is not None
    window = None
    if mapping.baseline_start is not None and mapping.baseline_end is not None:
        window = {
            "start": mapping.baseline_start.isoformat(),
            "end": mapping.baseline_end.isoformat(),
        }
    return MappingPublic(
        id=mapping.id,
        key_result_id=mapping.key_result_id,
        version=mapping.version,
        spec=mapping.spec,
        created_at=mapping.created_at,
        updated_at=mapping.updated_at,
        value=kr.value if kr else None,
        value_details=kr.value_details if kr else None,
        baseline_previous_period=mapping.baseline,
        baseline_window=window,
    )


# ---------------------------------------------------------------------------- preview / explain


class _Links:
    """Record links per connector; a connector that cannot be built gives none."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._built: dict[int, VendorConnector | None] = {}

    def url(
        self, connector: Connector, kind: str, source_id: str, permalink: str | None
    ) -> str | None:
        assert connector.id is not None
        if connector.id not in self._built:
            try:
                self._built[connector.id] = build_connector(connector, self._settings)
            except Exception:  # noqa: BLE001 - a link is a courtesy; never fail for it
                self._built[connector.id] = None
        vendor = self._built[connector.id]
        url = None
        if vendor is not None:
            try:
                url = vendor.record_url(RecordKind(kind), source_id)
            except Exception:  # noqa: BLE001
                url = None
        if url is None and permalink and permalink.startswith(("https://", "http://")):
            return permalink
        return url


def _ref(record: ev.CountedRecord, connector: Connector, links: _Links) -> RecordRef:
    value = record.value
    if isinstance(value, Decimal):  # exact, as text
        value = ev.json_number(value)
    return RecordRef(
        id=record.id,
        source_id=record.source_id,
        connector_id=record.connector_id,
        kind=record.kind,
        url=links.url(connector, record.kind, record.source_id, record.permalink),
        value=value,
        currency=record.currency if record.currency else None,
    )


def _part_public(result: ev.PartResult, tz: str, ctx: ev.Context) -> PartPublic:
    part = result.part
    low, high = window_bounds(result.start, result.end, ctx.tz)
    return PartPublic(
        part=part.name,
        connector_id=part.connector_id,
        kind=part.kind,
        aggregate=part.aggregate,
        field=part.field.name if part.field else None,
        date_field=part.date_field.value,
        window={
            "start": result.start.isoformat(),
            "end": result.end.isoformat(),
            "timezone": tz,
            "start_at": low.isoformat(),
            "end_at": high.isoformat(),
        },
        records_counted=result.records,
        result=ev.json_number(result.result),
        other_currencies=result.other_currencies,
    )


def preview(
    session: Session, ws: Workspace, data: PreviewRequest, now: datetime, settings: Settings
) -> PreviewPublic:
    """Evaluate a spec without saving anything: value, counts and a sample of records."""
    kr = _key_result(session, ws, data.key_result_id) if data.key_result_id is not None else None
    ctx = ev.context_for(session, ws, now, kr)
    the_plan = ev.plan(session, ctx, data.spec)
    result = ev.evaluate(session, ctx, the_plan)
    links = _Links(settings)
    sample: dict[str, list[RecordRef]] = {}
    for part in result.parts:
        records, _ = ev.counted_records(
            session, part.part, part.start, part.end, ctx.tz, limit=data.sample_size
        )
        connector = the_plan.connectors[part.part.connector_id]
        sample[part.part.name] = [_ref(r, connector, links) for r in records]
    return PreviewPublic(
        value=result.float_value,
        details=result.details(),
        parts=[_part_public(p, ws.timezone, ctx) for p in result.parts],
        sample=sample,
    )


def explain(
    session: Session,
    ws: Workspace,
    kr: KeyResult,
    now: datetime,
    *,
    part: str | None,
    limit: int,
    cursor: str | None,
    settings: Settings,
) -> ExplainPublic:
    """Why the key result's value is what it is: spec, windows, counts, sources, records."""
    mapping = session.exec(select(Mapping).where(Mapping.key_result_id == kr.id)).first()
    if mapping is None:
        raise InvalidError(
            f"key result {kr.id} is not bound to a metric (its values are manual check-ins)",
            field="key_result_id",
        )
    ctx = ev.context_for(session, ws, now, kr)
    the_plan = ev.plan(session, ctx, parse_spec(mapping.spec))
    result = ev.evaluate(session, ctx, the_plan)
    names = [p.part.name for p in result.parts]
    wanted = part or names[0]
    if wanted not in names:
        raise InvalidError(f"part must be one of: {', '.join(names)}", field="part")
    chosen = result.parts[names.index(wanted)]
    records, more = ev.counted_records(
        session,
        chosen.part,
        chosen.start,
        chosen.end,
        ctx.tz,
        after_id=decode_cursor(cursor),
        limit=limit,
    )
    links = _Links(settings)
    sources = []
    for connector in the_plan.connectors.values():
        kinds = sorted({p.kind for p in the_plan.parts if p.connector_id == connector.id})
        sources.append(
            SourcePublic(
                connector_id=connector.id or 0,
                name=connector.name,
                type=connector.type,
                kinds=kinds,
                last_success_at=connector.last_success_at,
                last_run_status=connector.last_run_status,
                stale=is_stale(connector, now),
            )
        )
    assert kr.id is not None
    assert mapping.id is not None
    return ExplainPublic(
        key_result_id=kr.id,
        value=result.float_value,
        stored_value=kr.value,
        value_at=kr.value_at,
        unit=Unit(kr.unit).value,
        currency=kr.currency,
        mapping_id=mapping.id,
        mapping_version=mapping.version,
        spec=mapping.spec,
        timezone=ws.timezone,
        details=result.details(),
        parts=[_part_public(p, ws.timezone, ctx) for p in result.parts],
        sources=sources,
        records=RecordsPage(
            part=wanted,
            items=[_ref(r, the_plan.connectors[chosen.part.connector_id], links) for r in records],
            next_cursor=encode_cursor(more) if more is not None else None,
        ),
    )


def spec_of(data: Any) -> MetricSpec:
    """A stored spec as its model."""
    return parse_spec(data)
