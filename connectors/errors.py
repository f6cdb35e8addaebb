"""Connector errors, grouped by what the caller does about them.

The retry policy (`connectors.retry`) is the only place that reacts to these: it retries
`RetriableError`, waits on `RateLimitedError`, refreshes credentials once on
`SessionExpiredError`, and lets everything else stop the run.
"""

from __future__ import annotations


class ConnectorError(Exception):
    """Base class. `message` must never contain a secret (clients redact before raising)."""

    #: Stable, machine-readable name stored on a failed sync run.
    error_class = "connector_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class RetriableError(ConnectorError):
    """A transient fault (5xx, timeout, dropped connection): retry with backoff."""

    error_class = "retriable"


class RateLimitedError(RetriableError):
    """The vendor asked us to slow down; wait `retry_after_seconds` (if given) then retry."""

    error_class = "rate_limited"

    def __init__(self, message: str, retry_after_seconds: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class QuotaExceededError(ConnectorError):
    """A quota that retrying cannot help with (Salesforce daily API requests): stop cleanly."""

    error_class = "quota_exceeded"

    def __init__(self, message: str, used: int | None = None, limit: int | None = None) -> None:
        super().__init__(message)
        self.used = used
        self.limit = limit


class RequestBudgetExceededError(QuotaExceededError):
    """This run spent the request budget it was given; the next run resumes from the checkpoint."""

    error_class = "request_budget_exceeded"


class AuthError(ConnectorError):
    """Credentials are wrong or revoked: a person has to fix the connector's secrets."""

    error_class = "auth"


class SessionExpiredError(AuthError):
    """The access token or session expired: log in again once, then retry the request."""

    error_class = "session_expired"


class ConfigError(ConnectorError):
    """The connector's configuration is wrong (URL, API version, unknown field or kind)."""

    error_class = "config"


class SourceDataError(ConnectorError):
    """The vendor sent a response we cannot interpret (malformed page, missing field)."""

    error_class = "source_data"


class RecordDataError(SourceDataError):
    """One record of an otherwise sound page cannot be normalised (a bad date, a score
    outside 0..10, a field of the wrong type). Readers catch it, leave the record out of
    its page and list it as skipped: one bad record never fails a sync."""

    def __init__(self, source_id: str, message: str) -> None:
        super().__init__(message)
        self.source_id = source_id
