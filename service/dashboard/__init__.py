"""The dashboard page at `/` and the offline API docs, served from package data."""
