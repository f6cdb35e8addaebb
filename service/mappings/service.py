"""Mapping logic: bind key results to metric specs (versioned), evaluate them after syncs,
preview specs and explain values. Functions flush; routes (and the sync engine) commit."""

from __future__ import annotations

import logging
from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from connectors.base import Connector as VendorConnector
from connectors.base import RecordKind
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
from service.sync.models import Connector
from service.sync.service import build_connector, is_stale
from service.workspaces.models import Workspace

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- evaluation


def _apply(
    session: Session,
    ws: Workspace,
    mapping: Mapping,
    kr: KeyResult,
    now: datetime,
    the_plan: ev.Plan | None = None,
) -> bool:
    """Evaluate the mapping; store a history point when the value changed. Returns whether
    it changed. The baseline (previous equivalent window) is refreshed too, since the
    records of that window often arrive with the first sync, after the binding."""
    ctx = ev.context_for(session, ws, now, kr)
    the_plan = the_plan or ev.plan(session, ctx, parse_spec(mapping.spec))
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
    changed = 0
    for mapping in mappings:
        kr = session.get(KeyResult, mapping.key_result_id)
        ws = session.get(Workspace, mapping.workspace_id)
        if kr is None or ws is None:
            continue
        try:
            changed += _apply(session, ws, mapping, kr, now)
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
    kr_id = kr.id  # read before a rollback expires it
    try:
        session.flush()
    except IntegrityError:
        # Another request bound this key result (or versioned its mapping) meanwhile.
        session.rollback()
        raise ConflictError(
            f"key result {kr_id} was bound concurrently; read its mapping and retry",
            field="key_result_id",
        ) from None


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

    def __init__(self) -> None:
        self._built: dict[int, VendorConnector | None] = {}

    def url(
        self, connector: Connector, kind: str, source_id: str, permalink: str | None
    ) -> str | None:
        assert connector.id is not None
        if connector.id not in self._built:
            try:
                self._built[connector.id] = build_connector(connector)
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
        connector_id=part.connector.id or 0,
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


def preview(session: Session, ws: Workspace, data: PreviewRequest, now: datetime) -> PreviewPublic:
    """Evaluate a spec without saving anything: value, counts and a sample of records."""
    kr = _key_result(session, ws, data.key_result_id) if data.key_result_id is not None else None
    ctx = ev.context_for(session, ws, now, kr)
    the_plan = ev.plan(session, ctx, data.spec)
    result = ev.evaluate(session, ctx, the_plan)
    links = _Links()
    sample: dict[str, list[RecordRef]] = {}
    for part in result.parts:
        records, _ = ev.counted_records(
            session, part.part, part.start, part.end, ctx.tz, limit=data.sample_size
        )
        sample[part.part.name] = [_ref(r, part.part.connector, links) for r in records]
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
    links = _Links()
    sources = []
    for connector in ev.connectors_of(the_plan):
        kinds = sorted({p.kind for p in the_plan.parts if p.connector.id == connector.id})
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
            items=[_ref(r, chosen.part.connector, links) for r in records],
            next_cursor=encode_cursor(more) if more is not None else None,
        ),
    )


def spec_of(data: Any) -> MetricSpec:
    """A stored spec as its model."""
    return parse_spec(data)
