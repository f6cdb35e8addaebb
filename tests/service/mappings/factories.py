"""Plain factory functions for mapping tests: rows inserted directly (no HTTP), so that
datasets of records can be generated quickly and compared with ground truth."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlmodel import Session

from service.okr.models import KeyResult, KeyResultKind, Objective, Period, Unit
from service.sync.models import AMOUNT_SCALE, Connector, SyncedRecord
from service.workspaces.models import Workspace
from tests.factories import CREATED_AT

_ids = itertools.count(1)


def make_workspace(session: Session, slug: str = "acme", tz: str = "UTC") -> Workspace:
    ws = Workspace(slug=slug, name=slug.title(), timezone=tz, created_at=CREATED_AT)
    session.add(ws)
    session.flush()
    return ws


def make_key_result(
    session: Session,
    ws: Workspace,
    *,
    start: date = date(2026, 1, 1),
    end: date = date(2027, 1, 1),
    title: str = "KR",
    unit: Unit = Unit.count,
    currency: str | None = None,
    kind: KeyResultKind = KeyResultKind.increase,
    start_value: float | None = 0,
    target: float = 100,
) -> KeyResult:
    period = Period(workspace_id=ws.id, name=f"P{next(_ids)}", start=start, end=end)
    session.add(period)
    session.flush()
    objective = Objective(
        workspace_id=ws.id,  # type: ignore[arg-type]
        title="Objective",
        period_id=period.id,  # type: ignore[arg-type]
        created_at=CREATED_AT,
    )
    session.add(objective)
    session.flush()
    kr = KeyResult(
        workspace_id=ws.id,  # type: ignore[arg-type]
        objective_id=objective.id,  # type: ignore[arg-type]
        title=title,
        kind=kind,
        unit=unit,
        currency=currency,
        start=start_value,
        target=target,
        created_at=CREATED_AT,
    )
    session.add(kr)
    session.flush()
    return kr


def make_connector(
    session: Session,
    ws: Workspace,
    *,
    name: str | None = None,
    type: str = "demo",
    config: dict[str, Any] | None = None,
    kinds: list[str] | None = None,
    last_success_at: datetime | None = None,
    interval: int = 900,
    cron: str | None = None,
) -> Connector:
    row = Connector(
        workspace_id=ws.id,  # type: ignore[arg-type]
        name=name or f"{type}-{next(_ids)}",
        type=type,
        config=config or {},
        kinds=kinds,
        last_success_at=last_success_at,
        sync_interval_seconds=interval,
        sync_cron=cron,
        created_at=CREATED_AT,
    )
    session.add(row)
    session.flush()
    return row


def record_row(
    connector: Connector,
    kind: str,
    *,
    source_id: str | None = None,
    created_at: datetime = datetime(2026, 3, 1, 10, tzinfo=UTC),
    modified_at: datetime | None = None,
    amount: Decimal | str | int | None = None,
    raw: dict[str, Any] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """Column values of one record (for bulk inserts)."""
    return {
        "workspace_id": connector.workspace_id,
        "connector_id": connector.id,
        "kind": kind,
        "source_id": source_id or f"S{next(_ids)}",
        "created_at": created_at,
        "modified_at": modified_at or created_at,
        "deleted": fields.pop("deleted", False),
        "close_date": fields.pop("close_date", None),
        "status": fields.pop("status", None),
        "stage": fields.pop("stage", None),
        "is_closed": fields.pop("is_closed", None),
        "is_won": fields.pop("is_won", None),
        "amount_e4": None if amount is None else int(Decimal(amount) * AMOUNT_SCALE),
        "currency": fields.pop("currency", None),
        "lead_source": fields.pop("lead_source", None),
        "owner": fields.pop("owner", None),
        "deal_type": fields.pop("deal_type", None),
        "score": fields.pop("score", None),
        "email": fields.pop("email", None),
        "raw": raw or {},
        "synced_at": created_at,
        **fields,
    }


def add_records(session: Session, rows: list[dict[str, Any]]) -> None:
    if rows:
        session.execute(SyncedRecord.__table__.insert(), rows)  # type: ignore[attr-defined]
        session.flush()


def add_record(session: Session, connector: Connector, kind: str, **kw: Any) -> dict[str, Any]:
    row = record_row(connector, kind, **kw)
    add_records(session, [row])
    return row
