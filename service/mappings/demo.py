"""Tartempion's five key results bound to the demo connector (PRODUCT.md's table)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import Session, select

from service.mappings.service import bind
from service.mappings.spec import parse_spec
from service.okr.models import KeyResult
from service.workspaces.models import Workspace

NEW_CUSTOMER = "New Customer"


def tartempion_specs(connector_id: int) -> dict[str, dict[str, Any]]:
    """The metric of each Tartempion key result, by title, over the demo connector."""

    def won_new_customer_deals(*extra: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "count",
            "connector_id": connector_id,
            "kind": "opportunity",
            "filters": [
                {"field": "is_won", "op": "eq", "value": True},
                {"field": "deal_type", "op": "eq", "value": NEW_CUSTOMER},
                *extra,
            ],
            "date_field": "closed",
        }

    def closed(*filters: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "count",
            "connector_id": connector_id,
            "kind": "opportunity",
            "filters": list(filters),
            "date_field": "closed",
        }

    return {
        # Leads whose status is Qualified, counted in the year they were created.
        "Generate 1000 qualified leads by year end": {
            "type": "count",
            "connector_id": connector_id,
            "kind": "lead",
            "filters": [{"field": "status", "op": "eq", "value": "Qualified"}],
            "date_field": "created",
        },
        # Won ÷ closed (won or lost: the opportunities that reached a verdict) in the year.
        "Convert 50% of validated business opportunities": {
            "type": "ratio",
            "numerator": closed({"field": "is_won", "op": "eq", "value": True}),
            "denominator": closed({"field": "is_closed", "op": "eq", "value": True}),
        },
        # The demo's opportunity Amount is the deal's annual recurring amount, in EUR.
        "€1,000,000 ARR": {
            "type": "sum",
            "field": "amount",
            "connector_id": connector_id,
            "kind": "opportunity",
            "filters": [{"field": "is_won", "op": "eq", "value": True}],
            "date_field": "closed",
        },
        "NPS above 80 for new customers": {
            "type": "nps",
            "connector_id": connector_id,
            "kind": "survey_response",
            "score_field": "score",
            "filters": [
                {
                    "field": "raw.person_properties.Customer Type",
                    "op": "eq",
                    "value": NEW_CUSTOMER,
                }
            ],
            "date_field": "answered",
        },
        "20% of new customers through referral (word of mouth)": {
            "type": "ratio",
            "numerator": won_new_customer_deals(
                {"field": "lead_source", "op": "eq", "value": "Referral"}
            ),
            "denominator": won_new_customer_deals(),
        },
    }


def bind_tartempion(session: Session, ws: Workspace, connector_id: int, now: datetime) -> None:
    """Bind the five Tartempion key results of `ws` to the demo connector and evaluate them."""
    krs = {
        kr.title: kr
        for kr in session.exec(select(KeyResult).where(KeyResult.workspace_id == ws.id))
    }
    for title, spec in tartempion_specs(connector_id).items():
        kr = krs.get(title)
        if kr is not None:
            bind(session, ws, kr, parse_spec(spec), now)
