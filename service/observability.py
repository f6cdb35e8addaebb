"""Logs and Prometheus metrics.

Logs: one line per event on stderr, JSON when stderr is not a terminal (a container, a
log shipper) or when `OKR_LOG_FORMAT=json`, plain text on a terminal. Every line passes a
filter that masks API tokens, Fernet keys and database passwords, whatever logged them.

Metrics (prometheus-client): what this process did (HTTP requests, sync runs, records,
vendor requests) in process-wide counters and histograms, and what the key results are
now, read from the database at scrape time (`KeyResultCollector`). An API process
serves them at `/metrics`; a worker at `OKR_METRICS_PORT`.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from pythonjsonlogger.orjson import OrjsonFormatter
from sqlalchemy import Engine
from sqlmodel import Session, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.clock import Clock
from service.settings import Settings

if TYPE_CHECKING:
    from service.sync.models import Connector, SyncRun

log = logging.getLogger("okr_sync")
run_log = logging.getLogger("okr_sync.sync")
request_log = logging.getLogger("okr_sync.request")

# ---------------------------------------------------------------------------- logs

#: What must never reach a log line: API tokens, Fernet keys (44 url-safe base64
#: characters ending in '='), and the password of a URL.
_SECRETS = (
    (re.compile(r"okr_[A-Za-z0-9_-]{16,}"), "okr_***"),
    (re.compile(r"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{43}=(?![A-Za-z0-9_=-])"), "***"),
    (re.compile(r"(://[^:/@\s]+:)[^@\s]+@"), r"\1***@"),
)


def redact(text: str) -> str:
    """`text` with tokens, keys and URL passwords masked."""
    # Each pattern needs one of these substrings: most lines (every request line) have
    # none, and three substring tests cost a fraction of three regular-expression passes.
    if "okr_" not in text and "=" not in text and "://" not in text:
        return text
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


#: LogRecord attributes the logging module fills itself (file names, thread names...):
#: nothing a caller passes ends up in them, so they are not searched for secrets.
_RECORD_ATTRIBUTES = frozenset(logging.makeLogRecord({}).__dict__) - {"msg", "args"}
_NOT_EXTRA = _RECORD_ATTRIBUTES | {"msg", "message", "args"}


class RedactingFilter(logging.Filter):
    """Masks secrets in a record's message and extra string fields before it is written."""

    def filter(self, record: logging.LogRecord) -> bool:
        # uvicorn's copy of the message with terminal colour codes.
        record.__dict__.pop("color_message", None)
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        fields = record.__dict__
        # Only what a caller passed (`extra`): a set difference in C, not a loop over the
        # two dozen attributes logging fills itself (a request line's cost, measured).
        for key in fields.keys() - _NOT_EXTRA:
            value = fields[key]
            if isinstance(value, str):
                fields[key] = redact(value)
        return True


class _RedactedTracebacks(logging.Formatter):
    """Tracebacks are written by the formatter, after filters ran: mask them here."""

    def formatException(self, ei: Any) -> str:  # noqa: N802 (logging's name)
        return redact(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:  # noqa: N802 (logging's name)
        return redact(super().formatStack(stack_info))


class _JsonFormatter(_RedactedTracebacks, OrjsonFormatter):
    """One JSON object per line (orjson), tracebacks masked."""


class _TextFormatter(_RedactedTracebacks):
    """`time level logger message key=value ...` with the record's extra fields."""

    _STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = {k: v for k, v in record.__dict__.items() if k not in self._STANDARD}
        if extra:
            line += " " + " ".join(f"{k}={v}" for k, v in extra.items())
        return line


def use_json(settings: Settings) -> bool:
    if settings.log_format == "json":
        return True
    if settings.log_format == "text":
        return False
    return not sys.stderr.isatty()


def configure_logging(settings: Settings) -> None:
    """Send every logger (ours, uvicorn's, SQLAlchemy's) to one stderr handler."""
    handler = logging.StreamHandler(sys.stderr)
    formatter: logging.Formatter
    if use_json(settings):
        formatter = _JsonFormatter(
            "{asctime}{levelname}{name}{message}",
            style="{",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            timestamp=False,
        )
    else:
        formatter = _TextFormatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    handler.setFormatter(formatter)
    handler.addFilter(RedactingFilter())
    # Where a call was made from, and thread and process names and ids: no line shows them,
    # and working them out was a fifth of a request line's cost (the logging HOWTO's
    # "Optimization" section names these switches).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    root.setLevel(settings.log_level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers = []
        logger.propagate = True
    root.handlers = [handler]


# ---------------------------------------------------------------------------- metrics

#: What this process did; one registry per process (counters are cumulative).
PROCESS = CollectorRegistry(auto_describe=True)

HTTP_LATENCY = Histogram(
    "okr_http_request_duration_seconds",
    "Time to answer an HTTP request, by route template.",
    ["method", "route"],
    registry=PROCESS,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
HTTP_REQUESTS = Counter(
    "okr_http_requests",
    "HTTP requests answered, by route template and status code.",
    ["method", "route", "status"],
    registry=PROCESS,
)
SYNC_RUNS = Counter(
    "okr_sync_runs",
    "Finished sync runs, by connector and outcome (succeeded, or the error class).",
    ["workspace", "connector", "type", "outcome"],
    registry=PROCESS,
)
SYNC_DEFERRED = Counter(
    "okr_sync_deferred",
    "Times a due connector was passed over by a worker's claim, by reason (account_busy:"
    " its vendor account already runs OKR_SYNC_MAX_PER_ACCOUNT syncs).",
    ["connector", "type", "reason"],
    registry=PROCESS,
)
SYNC_DURATION = Histogram(
    "okr_sync_run_duration_seconds",
    "Duration of finished sync runs.",
    ["workspace", "connector", "type"],
    registry=PROCESS,
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
)
SYNC_RECORDS = Counter(
    "okr_sync_records",
    "Records written by syncs, by kind and action (inserted, updated, deleted).",
    ["workspace", "connector", "kind", "action"],
    registry=PROCESS,
)
VENDOR_REQUESTS = Counter(
    "okr_vendor_requests",
    "Requests made to vendor APIs by sync runs.",
    ["workspace", "connector", "type"],
    registry=PROCESS,
)
VENDOR_RETRIES = Counter(
    "okr_vendor_retries",
    "Vendor requests retried (transient faults and rate limits).",
    ["workspace", "connector", "type"],
    registry=PROCESS,
)
VENDOR_RATE_LIMITED = Counter(
    "okr_vendor_rate_limited",
    "Vendor answers saying to slow down (HTTP 429 and equivalents).",
    ["workspace", "connector", "type"],
    registry=PROCESS,
)
VENDOR_QUOTA_REMAINING = Gauge(
    "okr_vendor_quota_remaining",
    "Requests left in the vendor's daily quota, where the vendor says (last run's view).",
    ["workspace", "connector", "type"],
    registry=PROCESS,
)
VENDOR_QUOTA_LIMIT = Gauge(
    "okr_vendor_quota_limit",
    "The vendor's daily request quota, where the vendor says.",
    ["workspace", "connector", "type"],
    registry=PROCESS,
)


def _connector_labels(connector: Connector, workspace: str) -> dict[str, str]:
    return {"workspace": workspace, "connector": str(connector.id), "type": connector.type}


def run_started(connector: Connector, workspace: str, run: SyncRun, kinds: list[str]) -> None:
    """A sync run began: one log line."""
    run_log.info(
        "sync started",
        extra={
            "event": "sync_started",
            "workspace": workspace,
            "connector_id": connector.id,
            "connector_type": connector.type,
            "run_id": run.id,
            "trigger": str(run.trigger),
            "kinds": kinds,
        },
    )


def run_finished(
    connector: Connector,
    workspace: str,
    run: SyncRun,
    details: dict[str, Any],
    rate_limited: int,
    quota: tuple[int, int] | None,
) -> None:
    """A sync run ended: one log line (warning when it failed) and the metrics."""
    labels = _connector_labels(connector, workspace)
    outcome = "succeeded" if run.error_class is None else run.error_class
    kinds: dict[str, Any] = details.get("kinds", {})
    fields = {
        "event": "sync_finished" if run.error_class is None else "sync_failed",
        "workspace": workspace,
        "connector_id": connector.id,
        "connector_type": connector.type,
        "run_id": run.id,
        "status": str(run.status),
        "error_class": run.error_class,
        "duration_seconds": (run.duration_ms or 0) / 1000,
        "fetched": run.fetched,
        "inserted": run.inserted,
        "updated": run.updated,
        "deleted": run.deleted,
        "requests": run.requests,
        "retries": run.retries,
        "kinds": sorted(kinds),
    }
    if run.error_class is None:
        run_log.info("sync finished", extra=fields)
    elif run.error_class == "paused":  # an operator's doing, not a fault
        run_log.info("sync stopped: %s", run.error_message, extra=fields | {"event": "sync_paused"})
    else:
        run_log.warning("sync failed: %s", run.error_message or run.error_class, extra=fields)
    SYNC_RUNS.labels(**labels, outcome=outcome).inc()
    SYNC_DURATION.labels(**labels).observe((run.duration_ms or 0) / 1000)
    for kind, counts in kinds.items():
        for action in ("inserted", "updated", "deleted"):
            if counts.get(action):
                SYNC_RECORDS.labels(
                    workspace=workspace, connector=labels["connector"], kind=kind, action=action
                ).inc(counts[action])
    VENDOR_REQUESTS.labels(**labels).inc(run.requests or 0)
    VENDOR_RETRIES.labels(**labels).inc(run.retries or 0)
    VENDOR_RATE_LIMITED.labels(**labels).inc(rate_limited)
    if quota is not None:
        used, limit = quota
        VENDOR_QUOTA_REMAINING.labels(**labels).set(max(0, limit - used))
        VENDOR_QUOTA_LIMIT.labels(**labels).set(limit)


class KeyResultCollector(Collector):
    """Each key result of each workspace's current period, as it stands at scrape time:
    value, progress (0-1) and status (one series per status, 1 for the current one)."""

    STATUSES = ("no_data", "achieved", "on_track", "at_risk", "off_track")

    def __init__(self, engine: Engine, clock: Clock) -> None:
        self.engine = engine
        self.clock = clock

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def _families(self) -> list[GaugeMetricFamily]:
        labels = ["workspace", "objective", "objective_title", "key_result", "key_result_title"]
        return [
            GaugeMetricFamily(
                "okr_key_result_value", "A key result's current value, in its unit.", labels=labels
            ),
            GaugeMetricFamily(
                "okr_key_result_progress_ratio",
                "A key result's progress from start to target (1 = reached).",
                labels=labels,
            ),
            GaugeMetricFamily(
                "okr_key_result_expected_progress_ratio",
                "Where the key result should be by now (linear over its window).",
                labels=labels,
            ),
            GaugeMetricFamily(
                "okr_key_result_status",
                "1 for the key result's current status, 0 for the others.",
                labels=[*labels, "status"],
            ),
        ]

    def collect(self) -> Iterator[Metric]:
        from service.errors import NotFoundError
        from service.okr.service import find_period
        from service.progress.service import period_progress
        from service.workspaces.models import Workspace

        value, progress, expected, status = self._families()
        now: datetime = self.clock()
        with Session(self.engine) as session:
            for ws in session.exec(select(Workspace)).all():
                try:
                    period = find_period(session, ws, "current", now)
                except NotFoundError:
                    continue
                tree = period_progress(session, ws, period, now)
                for objective in tree.objectives:
                    for kr in objective.key_results:
                        labels = [
                            ws.slug,
                            str(objective.objective_id),
                            objective.title,
                            str(kr.key_result_id),
                            kr.title,
                        ]
                        if kr.value is not None:
                            value.add_metric(labels, kr.value)
                        if kr.progress is not None:
                            progress.add_metric(labels, kr.progress)
                        expected.add_metric(labels, kr.expected_progress)
                        for name in self.STATUSES:
                            status.add_metric([*labels, name], float(kr.status == name))
        yield from (value, progress, expected, status)


class _Process(Collector):
    """The process-wide metrics, inside a per-app registry."""

    def collect(self) -> Iterator[Metric]:
        yield from PROCESS.collect()


def registry_for(engine: Engine, clock: Clock) -> CollectorRegistry:
    """What one app (or worker) exposes: this process's metrics and the key results."""
    registry = CollectorRegistry()
    registry.register(_Process())
    registry.register(KeyResultCollector(engine, clock))
    return registry


# ---------------------------------------------------------------------------- requests


#: The prefix the API router is included under (service.main); FastAPI leaves the
#: matched route's own, unprefixed path in the scope.
API_PREFIX = "/api/v1"


def _template(scope: Scope) -> str:
    route = scope.get("route")
    template = getattr(route, "path", None)
    if template is None:
        # Answered before routing: the fast path names its route; else none matched.
        return str(scope.get("route_template") or "(unmatched)")
    if scope["path"].startswith(API_PREFIX + "/") and not template.startswith(API_PREFIX):
        template = API_PREFIX + template
    return str(template)


class RequestMetrics:
    """ASGI middleware: one log line and the latency histogram per HTTP request, labelled
    by route template (`/api/v1/key-results/{key_result_id}/progress`), never the raw
    path, so ids and typos do not make new series."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def observe(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observe)
        finally:
            record_request(scope, status, time.perf_counter() - started)


def record_request(scope: Scope, status: int, elapsed: float) -> None:
    """The request's log line and metrics (`RequestMetrics`, and the polled reads answered
    before the middleware stack, `service.progress.fastpath`)."""
    template = _template(scope)
    method = scope["method"]
    HTTP_LATENCY.labels(method, template).observe(elapsed)
    HTTP_REQUESTS.labels(method, template, str(status)).inc()
    if request_log.isEnabledFor(logging.INFO):
        state = scope.get("state") or {}
        request_log.info(
            "%s %s %d",
            method,
            template,
            status,
            extra={
                "event": "request",
                "method": method,
                "route": template,
                "status": status,
                "latency_ms": round(elapsed * 1000, 2),
                "workspace": state.get("workspace"),
            },
        )
