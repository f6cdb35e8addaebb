"""Progress reads: key results, objectives (weighted roll-up) and period trees.

Values are evaluated on sync or check-in and stored on the key result; reads only do the
maths of `progress.maths` on them. Time enters only in steps (expected progress per 0.1%
of the window, staleness when a source's interval runs out), and every build notes in a
`Horizon` when its next step begins, so `service.progress.polling` can serve the built
bytes until then.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlmodel import Session, col, select

from service.okr.models import (
    Initiative,
    InitiativeKeyResult,
    KeyResult,
    Objective,
    Period,
    Unit,
)
from service.progress import maths
from service.progress.models import (
    InitiativeSummary,
    KeyResultProgress,
    ObjectiveProgress,
    PeriodProgress,
    WindowPublic,
)
from service.workspaces.models import Workspace

#: Value-driven figures (progress, ratios) are rounded to 4 decimals; time-driven ones
#: move in the steps of `maths.EXPECTED_STEPS` and `maths.FORECAST_STEPS`.
DIGITS = 4


class Horizon:
    """The earliest time at which something a build showed changes by itself (a step of
    expected progress, a source turning stale, a new local day); None: never."""

    def __init__(self) -> None:
        self.until: datetime | None = None

    def note(self, at: datetime | None) -> None:
        if at is not None and (self.until is None or at < self.until):
            self.until = at


@dataclass(frozen=True, slots=True)
class Freshness:
    """Where a synced value comes from: when its sources last synced, and whether late."""

    last_synced_at: datetime | None
    stale: bool
    #: When `stale` flips to true by the passing of time alone (None: it cannot).
    stale_from: datetime | None = None


@dataclass(frozen=True, slots=True)
class Ambition:
    baseline: float | None
    ratio: float | None
    label: str | None


def margins(ws: Workspace) -> maths.Margins:
    return maths.Margins(on_track=ws.on_track_margin, at_risk=ws.at_risk_margin)


def key_result_window(kr: KeyResult, period: Period) -> tuple[date, date]:
    """The key result's own window, else its objective's period."""
    if kr.window_start is not None and kr.window_end is not None:
        return kr.window_start, kr.window_end
    return period.start, period.end


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, DIGITS)


def _freshness(session: Session, kr_ids: list[int], now: datetime) -> dict[int, Freshness]:
    from service.mappings.freshness import freshness_for

    return freshness_for(session, kr_ids, now)


def _ambitions(session: Session, krs: list[KeyResult]) -> dict[int, Ambition]:
    from service.mappings.freshness import ambitions_for

    return ambitions_for(session, krs)


def _initiatives(session: Session, kr_ids: list[int]) -> dict[int, list[InitiativeSummary]]:
    found: dict[int, list[InitiativeSummary]] = defaultdict(list)
    if not kr_ids:
        return found
    rows = session.exec(
        select(InitiativeKeyResult.key_result_id, Initiative)
        .join(Initiative, col(Initiative.id) == InitiativeKeyResult.initiative_id)
        .where(col(InitiativeKeyResult.key_result_id).in_(kr_ids))
        .order_by(col(Initiative.id))
    ).all()
    for kr_id, initiative in rows:
        found[kr_id].append(InitiativeSummary.model_validate(initiative, from_attributes=True))
    return found


class ProgressReader:
    """Builds progress objects for many key results with a constant number of queries."""

    def __init__(
        self, session: Session, ws: Workspace, now: datetime, horizon: Horizon | None = None
    ) -> None:
        self.session = session
        self.ws = ws
        self.now = now
        self.tz = ZoneInfo(ws.timezone)
        self.margins = margins(ws)
        self.horizon = horizon or Horizon()

    def expected(self, start: date, end: date) -> float:
        """Expected progress of the window of local days `[start, end)`, in steps."""
        window_start, window_end = maths.window_bounds(start, end, self.tz)
        expected, next_step = maths.stepped_elapsed(window_start, window_end, self.now)
        self.horizon.note(next_step)
        return expected

    def key_results(
        self, krs: list[KeyResult], periods: dict[int, Period], objectives: dict[int, Objective]
    ) -> list[KeyResultProgress]:
        ids = [kr.id for kr in krs if kr.id is not None]
        fresh = _freshness(self.session, ids, self.now)
        ambitions = _ambitions(self.session, krs)
        initiatives = _initiatives(self.session, ids)
        out = []
        for kr in krs:
            assert kr.id is not None
            period = periods[objectives[kr.objective_id].period_id]
            out.append(
                self._one(kr, period, fresh.get(kr.id), ambitions.get(kr.id), initiatives[kr.id])
            )
        return out

    def _one(
        self,
        kr: KeyResult,
        period: Period,
        fresh: Freshness | None,
        ambition: Ambition | None,
        initiatives: list[InitiativeSummary],
    ) -> KeyResultProgress:
        start_day, end_day = key_result_window(kr, period)
        expected = self.expected(start_day, end_day)
        progress = maths.progress_of(kr.kind, kr.start, kr.target, kr.value)
        forecast = maths.forecast_of(kr.kind, kr.unit, kr.start, kr.value, expected)
        if forecast is not None and maths.accumulates(kr.kind, kr.unit):
            forecast = maths.round_forecast(forecast, kr.start, kr.target)
        if fresh is not None and fresh.stale_from is not None:
            self.horizon.note(fresh.stale_from)
        details = kr.value_details or {}
        responses = details.get("responses")
        assert kr.id is not None
        return KeyResultProgress(
            key_result_id=kr.id,
            objective_id=kr.objective_id,
            title=kr.title,
            kind=kr.kind,
            currency=kr.currency,
            weight=kr.weight,
            window=WindowPublic(start=start_day, end=end_day, timezone=self.ws.timezone),
            value=kr.value,
            value_at=kr.value_at,
            start=kr.start,
            target=kr.target,
            unit=kr.unit,
            progress=round(progress, DIGITS),
            expected_progress=expected,
            status=maths.status_of(kr.value, progress, expected, self.margins),
            forecast=forecast,
            stale=fresh.stale if fresh else False,
            last_synced_at=fresh.last_synced_at if fresh else None,
            responses=int(responses) if isinstance(responses, int | float) else None,
            baseline_previous_period=ambition.baseline if ambition else None,
            target_to_baseline_ratio=_r(ambition.ratio) if ambition else None,
            ambition=ambition.label if ambition else None,
            initiatives=initiatives,
        )

    def objective(
        self, objective: Objective, period: Period, krs: list[KeyResultProgress]
    ) -> ObjectiveProgress:
        expected = self.expected(period.start, period.end)
        with_data = [k for k in krs if k.value is not None]
        progress = maths.weighted_mean([(k.progress, k.weight) for k in krs])
        value = None if not with_data else progress
        forecasts = [(self._forecast_progress(k), k.weight) for k in krs if k.forecast is not None]
        forecast = maths.weighted_mean(forecasts) * 100 if forecasts else None
        synced = [k.last_synced_at for k in krs if k.last_synced_at is not None]
        assert objective.id is not None
        return ObjectiveProgress(
            objective_id=objective.id,
            title=objective.title,
            team_id=objective.team_id,
            parent_id=objective.parent_id,
            period_id=objective.period_id,
            weight=objective.weight,
            value=_r(value * 100) if value is not None else None,
            start=0.0,
            target=100.0,
            unit=Unit.percent,
            progress=round(progress, DIGITS),
            expected_progress=expected,
            status=maths.status_of(value, progress, expected, self.margins),
            forecast=_r(forecast),
            stale=any(k.stale for k in krs),
            last_synced_at=min(synced) if synced else None,
            key_results=krs,
        )

    @staticmethod
    def _forecast_progress(k: KeyResultProgress) -> float:
        from service.okr.models import KeyResultKind

        return maths.progress_of(KeyResultKind(k.kind), k.start, k.target, k.forecast)


def _load(
    session: Session, ws: Workspace, objectives: Iterable[Objective]
) -> tuple[dict[int, Period], dict[int, Objective], dict[int, list[KeyResult]]]:
    objs = {o.id: o for o in objectives if o.id is not None}
    period_ids = {o.period_id for o in objs.values()}
    periods = {
        p.id: p
        for p in session.exec(select(Period).where(col(Period.id).in_(period_ids)))
        if p.id is not None
    }
    krs: dict[int, list[KeyResult]] = defaultdict(list)
    if objs:
        for kr in session.exec(
            select(KeyResult)
            .where(KeyResult.workspace_id == ws.id, col(KeyResult.objective_id).in_(list(objs)))
            .order_by(col(KeyResult.id))
        ):
            krs[kr.objective_id].append(kr)
    return periods, objs, krs


def key_result_progress(
    session: Session,
    ws: Workspace,
    krs: list[KeyResult],
    now: datetime,
    horizon: Horizon | None = None,
) -> list[KeyResultProgress]:
    """Progress objects of `krs` (all of `ws`)."""
    objectives = session.exec(
        select(Objective).where(col(Objective.id).in_({kr.objective_id for kr in krs}))
    ).all()
    periods, objs, _ = _load(session, ws, objectives)
    return ProgressReader(session, ws, now, horizon).key_results(krs, periods, objs)


def objectives_progress(
    session: Session,
    ws: Workspace,
    objectives: list[Objective],
    now: datetime,
    horizon: Horizon | None = None,
) -> list[ObjectiveProgress]:
    """Progress objects of `objectives`, each with its key results."""
    periods, objs, krs = _load(session, ws, objectives)
    reader = ProgressReader(session, ws, now, horizon)
    all_krs = [kr for o in objectives for kr in krs.get(o.id or 0, [])]
    kr_progress = {p.key_result_id: p for p in reader.key_results(all_krs, periods, objs)}
    out = []
    for o in objectives:
        mine = [kr_progress[kr.id] for kr in krs.get(o.id or 0, []) if kr.id is not None]
        out.append(reader.objective(o, periods[o.period_id], mine))
    return out


def period_progress(
    session: Session,
    ws: Workspace,
    period: Period,
    now: datetime,
    team_id: int | None = None,
    horizon: Horizon | None = None,
) -> PeriodProgress:
    """The period's objective tree (aligned objectives nested under their parent)."""
    horizon = horizon or Horizon()
    query = select(Objective).where(
        Objective.workspace_id == ws.id, Objective.period_id == period.id
    )
    if team_id is not None:
        query = query.where(Objective.team_id == team_id)
    objectives = list(session.exec(query.order_by(col(Objective.id))))
    flat = objectives_progress(session, ws, objectives, now, horizon)
    by_id = {o.objective_id: o for o in flat}
    roots = []
    for o in flat:
        parent = by_id.get(o.parent_id) if o.parent_id is not None else None
        if parent is not None:
            parent.children.append(o)
        else:
            roots.append(o)
    expected = ProgressReader(session, ws, now, horizon).expected(period.start, period.end)
    progress = maths.weighted_mean([(o.progress, o.weight) for o in roots])
    has_data = any(o.value is not None for o in flat)
    assert period.id is not None
    return PeriodProgress(
        period_id=period.id,
        period=period.name,
        window=WindowPublic(start=period.start, end=period.end, timezone=ws.timezone),
        expected_progress=expected,
        progress=round(progress, DIGITS),
        status=maths.status_of(progress if has_data else None, progress, expected, margins(ws)),
        objectives=roots,
    )


def next_local_day(ws: Workspace, now: datetime) -> datetime | None:
    """The next local midnight of the workspace (when `period=current` may name another
    period), None past the last representable day."""
    tz = ZoneInfo(ws.timezone)
    today = now.astimezone(tz).date()
    try:
        return datetime.combine(today + timedelta(days=1), time.min, tzinfo=tz)
    except OverflowError:
        return None
