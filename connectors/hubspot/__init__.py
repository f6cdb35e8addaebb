"""HubSpot CRM connector (private-app token; contacts, deals, feedback submissions)."""

from connectors.hubspot.connector import HubSpotConfig, HubSpotConnector, HubSpotSecrets

__all__ = ["HubSpotConfig", "HubSpotConnector", "HubSpotSecrets"]
