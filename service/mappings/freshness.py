"""What the mapping layer tells progress reads: source freshness and ambition.

Key results without a mapping are manual: never stale, no sync time, no baseline.
Both functions answer for many key results with one query each (progress reads poll).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlmodel import Session, col, select

from service.mappings.models import Mapping, MappingSource
from service.okr.models import KeyResultKind
from service.settings import get_settings
from service.sync.models import Connector
from service.sync.service import is_stale, stale_after

if TYPE_CHECKING:
    from service.okr.models import KeyResult
    from service.progress.service import Ambition, Freshness


def freshness_for(
    session: Session, key_result_ids: list[int], now: datetime
) -> dict[int, Freshness]:
    """Freshness of each mapped key result's sources: the oldest last successful sync of
    the connectors it reads (None while one never synced), stale when any is stale."""
    from service.progress.service import Freshness

    if not key_result_ids:
        return {}
    rows = session.exec(
        select(Mapping.key_result_id, Connector)
        .join(MappingSource, col(MappingSource.mapping_id) == Mapping.id)
        .join(Connector, col(Connector.id) == MappingSource.connector_id)
        .where(col(Mapping.key_result_id).in_(key_result_ids))
    ).all()
    connectors: dict[int, dict[int, Connector]] = defaultdict(dict)
    for kr_id, connector in rows:
        connectors[kr_id][connector.id or 0] = connector
    out = {}
    for kr_id, found in connectors.items():
        syncs = [c.last_success_at for c in found.values()]
        last = None if any(s is None for s in syncs) else min(s for s in syncs if s is not None)
        stale = any(is_stale(c, now) for c in found.values())
        # Still fresh: it turns stale just after the first source's next run is due.
        due = [
            after + timedelta(microseconds=1)
            for after in (stale_after(c) for c in found.values())
            if after is not None
        ]
        out[kr_id] = Freshness(
            last_synced_at=last,
            stale=stale,
            stale_from=None if stale or not due else min(due),
        )
    return out


def ambition_of(
    kind: KeyResultKind, target: float, baseline: float | None, stretch: float, unrealistic: float
) -> tuple[float | None, str | None]:
    """(target ÷ baseline, label) — the label compares how far the target is from what the
    previous equivalent window achieved, in the key result's direction."""
    if baseline is None or baseline <= 0 or target <= 0 or kind is KeyResultKind.milestone:
        # No history, or signs (a negative NPS) for which a ratio means nothing.
        return None, None
    ratio = target / baseline
    lower_is_better = kind in (KeyResultKind.decrease, KeyResultKind.at_most)
    factor = 1 / ratio if lower_is_better else ratio
    if factor > unrealistic:
        return ratio, "unrealistic"
    if factor > stretch:
        return ratio, "stretch"
    return ratio, "realistic"


def ambitions_for(session: Session, krs: list[KeyResult]) -> dict[int, Ambition]:
    """Baseline over the previous equivalent window, per mapped key result."""
    from service.progress.service import Ambition

    by_id = {kr.id: kr for kr in krs if kr.id is not None}
    if not by_id:
        return {}
    settings = get_settings()
    out = {}
    for mapping in session.exec(select(Mapping).where(col(Mapping.key_result_id).in_(list(by_id)))):
        kr = by_id[mapping.key_result_id]
        ratio, label = ambition_of(
            kr.kind,
            kr.target,
            mapping.baseline,
            settings.ambition_stretch_ratio,
            settings.ambition_unrealistic_ratio,
        )
        out[mapping.key_result_id] = Ambition(baseline=mapping.baseline, ratio=ratio, label=label)
    return out
