"""The canonical example of PRODUCT.md: company Tartempion, loaded into the current year."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from connectors.demo.dataset import PARIS
from service.okr import service as okr
from service.okr.models import (
    InitiativeCreate,
    InitiativeStatus,
    KeyResult,
    KeyResultCreate,
    KeyResultKind,
    ObjectiveCreate,
    PeriodCreate,
    TeamCreate,
    Unit,
)
from service.okr.service import wid
from service.sync.models import Connector
from service.workspaces.models import Workspace

SLUG = "tartempion"


def load_tartempion(session: Session, now: datetime) -> Workspace | None:
    """Create the Tartempion workspace unless it exists; returns it when created.

    Idempotent, and safe when several replicas start at once (the slug is unique).
    """
    if session.exec(select(Workspace).where(Workspace.slug == SLUG)).first() is not None:
        return None
    # The year of the workspace's calendar: at 00:30 on 1 January in Paris it is UTC's
    # 31 December still, but Tartempion's new year has begun.
    year = now.astimezone(PARIS).year
    ws = Workspace(slug=SLUG, name="Tartempion", timezone="Europe/Paris", created_at=now)
    session.add(ws)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        return None
    company = okr.create_team(session, ws, TeamCreate(name="Tartempion"))
    sales = okr.create_team(session, ws, TeamCreate(name="Sales", parent_id=company.id))
    for name in ("Marketing", "Ops"):
        okr.create_team(session, ws, TeamCreate(name=name, parent_id=company.id))
    period = okr.create_period(
        session, ws, PeriodCreate(name=str(year), start=date(year, 1, 1), end=date(year + 1, 1, 1))
    )
    for q in range(4):
        end = date(year + 1, 1, 1) if q == 3 else date(year, 3 * q + 4, 1)
        okr.create_period(
            session,
            ws,
            PeriodCreate(name=f"{year}-Q{q + 1}", start=date(year, 3 * q + 1, 1), end=end),
        )
    assert period.id is not None
    assert company.id is not None
    assert sales.id is not None
    o1 = okr.create_objective(
        session,
        ws,
        ObjectiveCreate(title="Reach €1M ARR", period_id=period.id, team_id=company.id),
        now,
    )
    o2 = okr.create_objective(
        session,
        ws,
        ObjectiveCreate(
            title="Create a differentiating commercial approach: a unique customer experience",
            period_id=period.id,
            team_id=company.id,
        ),
        now,
    )
    assert o1.id is not None
    assert o2.id is not None

    def kr(objective_id: int, title: str, **kw: object) -> KeyResult:
        return okr.create_key_result(
            session,
            ws,
            KeyResultCreate(objective_id=objective_id, title=title, **kw),  # type: ignore[arg-type]
            now,
        )

    kr11 = kr(o1.id, "Generate 1000 qualified leads by year end", start=0, target=1000)
    kr12 = kr(
        o1.id,
        "Convert 50% of validated business opportunities",
        unit=Unit.percent,
        start=0,
        target=50,
    )
    kr(o1.id, "€1,000,000 ARR", unit=Unit.currency, currency="EUR", start=0, target=1_000_000)
    kr21 = kr(
        o2.id,
        "NPS above 80 for new customers",
        kind=KeyResultKind.at_least,
        unit=Unit.score,
        start=0,
        target=80,
    )
    kr22 = kr(
        o2.id,
        "20% of new customers through referral (word of mouth)",
        kind=KeyResultKind.at_least,
        unit=Unit.percent,
        start=0,
        target=20,
    )
    initiatives = [
        ("Implement a new Sales Engagement Platform", [kr11, kr12], InitiativeStatus.in_progress),
        ("Rework the Sales playbook", [kr12, kr22], InitiativeStatus.in_progress),
        ("Organise 3 team-building events in Q1", [kr21], InitiativeStatus.done),
    ]
    for title, krs, status in initiatives:
        okr.create_initiative(
            session,
            ws,
            InitiativeCreate(
                title=title,
                owner="Sales",
                status=status,
                progress=1.0 if status is InitiativeStatus.done else 0.0,
                due_date=date(year, 3, 31) if "Q1" in title else date(year, 12, 31),
                key_result_ids=[k.id for k in krs if k.id is not None],
            ),
        )
    demo = Connector(
        workspace_id=wid(ws),
        name="Tartempion demo CRM",
        type="demo",
        # Last year's data gives the ambition check a baseline and books year-end deals on
        # 1 January; the live NPS stream, started now, moves a number every two minutes.
        config={
            "seed": 42,
            "history_years": 1,
            "live_since": now.isoformat(),
            "live_interval_seconds": 120,
        },
        secrets={},
        created_at=now,
        # A short interval so the demo's numbers visibly move while you watch.
        sync_interval_seconds=60,
    )
    session.add(demo)
    session.flush()
    assert demo.id is not None
    from service.mappings.demo import bind_tartempion

    bind_tartempion(session, ws, demo.id, now)
    session.flush()
    return ws


def demo_connector_id(session: Session) -> int | None:
    """The id of Tartempion's demo connector, if the example is loaded."""
    row = session.exec(
        select(Connector)
        .join(Workspace, col(Workspace.id) == Connector.workspace_id)
        .where(Workspace.slug == SLUG, Connector.type == "demo")
    ).first()
    return row.id if row is not None else None
