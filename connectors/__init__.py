"""Vendor connectors. This package never imports `service`."""
