"""Delighted (NPS survey tool) connector: survey responses over the REST API v1."""

from connectors.delighted.connector import DelightedConfig, DelightedConnector, DelightedSecrets

__all__ = ["DelightedConfig", "DelightedConnector", "DelightedSecrets"]
