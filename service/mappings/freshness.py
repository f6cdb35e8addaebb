"""What the mapping layer tells progress reads: source freshness and ambition.

Key results without a mapping are manual: never stale, no sync time, no baseline.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sqlmodel import Session

if TYPE_CHECKING:
    from service.okr.models import KeyResult
    from service.progress.service import Ambition, Freshness


def freshness_for(
    session: Session,  # noqa: ARG001
    key_result_ids: list[int],  # noqa: ARG001
    now: datetime,  # noqa: ARG001
) -> dict[int, Freshness]:
    """Freshness of each mapped key result's sources."""
    return {}


def ambitions_for(session: Session, krs: list[KeyResult]) -> dict[int, Ambition]:  # noqa: ARG001
    """Baseline over the previous equivalent window, per mapped key result."""
    return {}
