"""The connector types okr-sync knows, by `type_name`."""

from __future__ import annotations

from connectors.base import Connector


def connector_types() -> dict[str, type[Connector]]:
    """Every available connector class, keyed by its `type_name`."""
    from connectors.delighted.connector import DelightedConnector
    from connectors.demo.connector import DemoConnector
    from connectors.hubspot.connector import HubSpotConnector
    from connectors.salesforce.connector import SalesforceConnector

    classes: list[type[Connector]] = [
        SalesforceConnector,
        HubSpotConnector,
        DelightedConnector,
        DemoConnector,
    ]
    return {cls.type_name: cls for cls in classes}
