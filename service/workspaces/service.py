"""Rules on workspaces that span several fields."""

from __future__ import annotations

from collections.abc import Collection

from service.errors import InvalidError


def check_margins(on_track: float, at_risk: float, sent: Collection[str]) -> None:
    """Refuse an at-risk margin below the on-track one (no key result could be at risk).

    `on_track` and `at_risk` are the values the workspace would have (sent, stored or
    default); the error names the margin the request sent, `at_risk_margin` if it sent both.
    """
    if at_risk >= on_track:
        return
    if "at_risk_margin" in sent or "on_track_margin" not in sent:
        raise InvalidError(
            f"at_risk_margin ({at_risk}) must be >= on_track_margin ({on_track})",
            field="at_risk_margin",
        )
    raise InvalidError(
        f"on_track_margin ({on_track}) must be <= at_risk_margin ({at_risk})",
        field="on_track_margin",
    )
