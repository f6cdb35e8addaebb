"""What progress reads get from the mapping layer: source freshness and the ambition check."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlmodel import Session

from service.mappings.freshness import ambition_of, ambitions_for, freshness_for
from service.mappings.service import bind
from service.mappings.spec import parse_spec
from service.okr.models import KeyResultKind
from tests.conftest import FROZEN_NOW
from tests.service.mappings.factories import (
    add_records,
    make_connector,
    make_key_result,
    make_workspace,
    record_row,
)

NOW = FROZEN_NOW


def test_given_two_sources_when_freshness_is_read_then_the_oldest_sync_and_any_staleness_win(
    session: Session,
) -> None:
    ws = make_workspace(session)
    recent = make_connector(session, ws, last_success_at=NOW - timedelta(minutes=1))
    older = make_connector(session, ws, last_success_at=NOW - timedelta(minutes=10), interval=900)
    kr = make_key_result(session, ws)
    manual = make_key_result(session, ws, title="manual")
    spec = {
        "type": "ratio",
        "numerator": {"type": "count", "connector_id": recent.id, "kind": "lead"},
        "denominator": {"type": "count", "connector_id": older.id, "kind": "lead"},
    }
    bind(session, ws, kr, parse_spec(spec), NOW)
    assert kr.id is not None
    assert manual.id is not None
    fresh = freshness_for(session, [kr.id, manual.id], NOW)
    assert set(fresh) == {kr.id}
    assert fresh[kr.id].last_synced_at == NOW - timedelta(minutes=10)
    assert fresh[kr.id].stale is False
    # Six minutes later the older source is past its 15-minute interval.
    later = freshness_for(session, [kr.id], NOW + timedelta(minutes=6))
    assert later[kr.id].stale is True


@pytest.mark.parametrize(
    ("kind", "target", "baseline", "ratio", "label"),
    [
        (KeyResultKind.increase, 1000, 800, 1.25, "realistic"),
        (KeyResultKind.increase, 1000, 600, 1000 / 600, "stretch"),
        (KeyResultKind.increase, 1000, 300, 1000 / 300, "unrealistic"),
        (KeyResultKind.at_least, 80, 80, 1.0, "realistic"),
        # Lower is better: a target a third of last period's value is as ambitious as x3.
        (KeyResultKind.decrease, 10, 40, 0.25, "unrealistic"),
        (KeyResultKind.at_most, 20, 25, 0.8, "realistic"),
        (KeyResultKind.increase, 1000, 0, None, None),
        (KeyResultKind.at_least, 80, -20, None, None),
        (KeyResultKind.increase, 1000, None, None, None),
        (KeyResultKind.milestone, 1, 1, None, None),
    ],
)
def test_given_a_target_and_a_baseline_when_ambition_is_judged_then_ratio_and_label_follow(
    kind: KeyResultKind,
    target: float,
    baseline: float | None,
    ratio: float | None,
    label: str | None,
) -> None:
    got_ratio, got_label = ambition_of(kind, target, baseline, 1.5, 3.0)
    assert got_label == label
    assert got_ratio == (pytest.approx(ratio) if ratio is not None else None)


def test_given_last_year_records_when_a_key_result_is_bound_then_its_baseline_is_last_year(
    session: Session,
) -> None:
    from datetime import UTC, datetime

    ws = make_workspace(session)
    c = make_connector(session, ws)
    kr = make_key_result(session, ws, target=30)
    add_records(
        session,
        [record_row(c, "lead", created_at=datetime(2025, 6, 1, tzinfo=UTC)) for _ in range(10)]
        + [record_row(c, "lead", created_at=datetime(2026, 6, 1, tzinfo=UTC)) for _ in range(4)],
    )
    mapping = bind(
        session, ws, kr, parse_spec({"type": "count", "connector_id": c.id, "kind": "lead"}), NOW
    )
    assert (kr.value, mapping.baseline) == (4, 10)
    assert (str(mapping.baseline_start), str(mapping.baseline_end)) == ("2025-01-01", "2026-01-01")
    [ambition] = ambitions_for(session, [kr]).values()
    assert (ambition.baseline, ambition.ratio, ambition.label) == (10, 3.0, "stretch")
