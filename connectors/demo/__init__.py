"""Demo connector: a deterministic Tartempion dataset (leads, opportunities, NPS answers)."""

from connectors.demo.connector import DemoConfig, DemoConnector, DemoSecrets

__all__ = ["DemoConfig", "DemoConnector", "DemoSecrets"]
