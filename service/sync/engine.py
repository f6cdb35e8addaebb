"""The sync engine: replicate a connector's records into the `record` table.

What must hold (PRODUCT.md, "Sync"): after any sequence of runs — interrupted, retried,
rate-limited, run by several workers — stored records equal the source's by id, deletes
applied, nothing counted twice. How:

* Each (connector, kind) reads a half-open window of modification time `[start, end)`,
  starting `sync_overlap_seconds` before the previous window's end, so records stamped
  late or sharing a timestamp with the boundary are read again rather than missed.
* Every page is upserted on (connector, kind, source id), newest `modified_at` wins, and
  committed in the same transaction as the page's checkpoint; a crash resumes there.
* Deletes are tombstones (`deleted = true`), so an older copy read again cannot resurrect
  a deleted record.
* A lease on the connector row keeps a second worker from syncing it at the same time.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from queue import Empty, Full, Queue
from typing import Any, TypeVar

from sqlalchemy import Engine, Table, and_, func, or_, select, text, update
from sqlmodel import Session

from connectors.base import Record, RecordKind, Runtime, Window
from connectors.errors import ConnectorError, QuotaExceededError
from connectors.retry import RetryPolicy
from service import observability
from service.clock import Clock, in_utc, utc_now
from service.db import json_dumps
from service.errors import ConflictError, NotFoundError
from service.settings import Settings
from service.sync import secrets as secret_store
from service.sync.models import (
    AMOUNT_SCALE,
    Connector,
    RunStatus,
    RunTrigger,
    SyncedRecord,
    SyncRun,
    SyncState,
)
from service.sync.service import build_connector, connector_class, enabled_kinds
from service.workspaces.models import Workspace

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Where a first sync starts when nothing narrower is configured: everything.
BEGINNING = datetime(1970, 1, 1, tzinfo=UTC)

RECORD: Table = SyncedRecord.__table__  # type: ignore[attr-defined]
_UPDATED_COLUMNS = (
    "workspace_id", "created_at", "modified_at", "deleted", "close_date", "status", "stage",
    "is_closed", "is_won", "amount_e4", "currency", "lead_source", "owner", "deal_type",
    "score", "email", "raw", "synced_at",
)  # fmt: skip


class SyncAlreadyRunning(ConflictError):
    """Another worker holds this connector's lease."""


class LeaseLost(Exception):
    """Our lease expired and another worker took the connector over."""


@dataclass
class Counts:
    fetched: int = 0
    inserted: int = 0
    updated: int = 0
    deleted: int = 0

    def add(self, other: Counts) -> None:
        self.fetched += other.fetched
        self.inserted += other.inserted
        self.updated += other.updated
        self.deleted += other.deleted


@dataclass
class KindReport:
    counts: Counts = field(default_factory=Counts)
    window_start: str | None = None
    window_end: str | None = None
    pages: int = 0
    resumed: bool = False


def amount_e4(amount: Decimal | None) -> int | None:
    """An amount as exact integer 1/10,000ths (banker's rounding beyond 4 decimals)."""
    if amount is None:
        return None
    return int((amount * AMOUNT_SCALE).to_integral_value(rounding=ROUND_HALF_EVEN))


_INSERT_COLUMNS = ("connector_id", "kind", "source_id", *_UPDATED_COLUMNS)


def _upsert_sql(dialect: str) -> str:
    """The page upsert as driver SQL: newest `modified_at` wins, even between racing writers.

    Rows are bound as driver-native tuples (see `_native_row`), skipping SQLAlchemy's
    per-value bind processors, which cost as much as SQLite's own insert on large syncs.
    """
    mark = "%s" if dialect == "postgresql" else "?"
    values = ", ".join(
        "CAST(%s AS jsonb)" if (dialect == "postgresql" and c == "raw") else mark
        for c in _INSERT_COLUMNS
    )
    updates = ", ".join(f"{c} = excluded.{c}" for c in _UPDATED_COLUMNS)
    return (
        f"INSERT INTO record ({', '.join(_INSERT_COLUMNS)}) VALUES ({values}) "
        f"ON CONFLICT (connector_id, kind, source_id) DO UPDATE SET {updates} "
        "WHERE record.modified_at <= excluded.modified_at"
    )


_UPSERT_SQL = {name: _upsert_sql(name) for name in ("sqlite", "postgresql")}


def _sqlite_time(moment: datetime) -> str:
    # Exactly the text SQLAlchemy's SQLite DATETIME stores (naive UTC, always microseconds),
    # so values written here compare and read back like those written through the ORM.
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    text = moment.isoformat(" ")[:-6]  # drop "+00:00"
    return text if len(text) > 19 else text + ".000000"


def _native_row(
    record: Record, workspace_id: int, connector_id: int, now: Any, sqlite_dialect: bool
) -> tuple[Any, ...]:
    created, modified = record.created_at, record.modified_at
    close_date: Any = record.close_date
    if sqlite_dialect:
        created, modified = _sqlite_time(created), _sqlite_time(modified)  # type: ignore[assignment]
        close_date = close_date.isoformat() if close_date is not None else None
    return (
        connector_id,
        record.kind.value,
        record.source_id,
        workspace_id,
        created,
        modified,
        record.deleted,
        close_date,
        record.status,
        record.stage,
        record.is_closed,
        record.is_won,
        amount_e4(record.amount),
        record.currency,
        record.lead_source,
        record.owner,
        record.deal_type,
        record.score,
        record.email,
        json_dumps(record.raw),
        now,
    )


def upsert_page(
    session: Session,
    connector: Connector,
    kind: RecordKind,
    records: Sequence[Record],
    now: datetime,
    *,
    restore_equal: bool = False,
) -> Counts:
    """Store one page: insert new records, update newer versions, apply deletes. Flushes.

    Counts are decided against what is stored, so re-reading an overlap counts nothing.
    With `restore_equal` (reconciliation), a listed record whose version equals a stored
    tombstone brings it back: the listing proves it exists.
    """
    assert connector.id is not None
    counts = Counts(fetched=len(records))
    newest: dict[str, Record] = {}
    for record in records:
        if record.kind is not kind:
            raise ConnectorError(f"connector yielded a {record.kind} record while reading {kind}")
        seen = newest.get(record.source_id)
        if seen is None or record.modified_at >= seen.modified_at:
            newest[record.source_id] = record
    if not newest:
        return counts
    conn = session.connection()
    stored: dict[str, tuple[datetime, bool]] = {}
    ids = list(newest)
    for i in range(0, len(ids), 5000):
        for source_id, modified_at, deleted in conn.execute(
            select(RECORD.c.source_id, RECORD.c.modified_at, RECORD.c.deleted).where(
                RECORD.c.connector_id == connector.id,
                RECORD.c.kind == kind.value,
                RECORD.c.source_id.in_(ids[i : i + 5000]),
            )
        ):
            stored[source_id] = (modified_at, deleted)
    on_sqlite = conn.dialect.name == "sqlite"
    stamp: Any = _sqlite_time(now) if on_sqlite else now
    rows = []
    for source_id, record in newest.items():
        before = stored.get(source_id)
        if before is None:
            if record.deleted:
                continue  # deleted before we ever saw it: nothing to store or to count
            counts.inserted += 1
        else:
            old_modified, old_deleted = before
            if record.modified_at < old_modified:
                continue  # an older version than the one stored
            if record.modified_at == old_modified and not (
                restore_equal and old_deleted and not record.deleted
            ):
                continue  # the version already stored
            if record.deleted and not old_deleted:
                counts.deleted += 1
            else:
                counts.updated += 1
        rows.append(_native_row(record, connector.workspace_id, connector.id, stamp, on_sqlite))
    if rows:
        conn.exec_driver_sql(_UPSERT_SQL[conn.dialect.name], rows)
    return counts


def refresh_planner_statistics(session: Session) -> None:
    """On PostgreSQL, ANALYZE the record table while a large window loads.

    Without statistics (a new or fast-growing table) the planner answers the page's
    "which of these ids are stored" query with any index starting (connector_id, kind) and
    filters the ids row by row: measured at 7 s per 2,000-record page at 120,000 records,
    where the unique (connector_id, kind, source_id) index answers in milliseconds.
    Autovacuum analyzes too, but only every minute and after 10% of the table changed.
    """
    if session.connection().dialect.name == "postgresql":
        session.execute(text("ANALYZE record"))
        session.commit()


_DONE = object()


def prefetched(pages: Iterator[T], depth: int = 2) -> Iterator[T]:
    """Iterate `pages` while a background thread already fetches the next ones.

    Reading a vendor page is mostly waiting on the network, storing it mostly CPU and disk:
    overlapping the two roughly hides the faster one. At most `depth` pages wait in the
    queue, so memory stays flat. The vendor iterator runs entirely in the helper thread;
    its exceptions are re-raised here, and stopping early (a failed commit) stops it.
    """
    queue: Queue[Any] = Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for page in pages:
                while not stop.is_set():
                    try:
                        queue.put((page, None), timeout=0.1)
                        break
                    except Full:
                        continue
                if stop.is_set():
                    return
            queue.put((_DONE, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            queue.put((None, exc))
        finally:
            close = getattr(pages, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="okr-sync-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, error = queue.get()
            if error is not None:
                raise error
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            try:
                queue.get(timeout=0.1)
            except Empty:
                pass
        thread.join()


def runtime_for(connector: Connector, settings: Settings, clock: Clock) -> Runtime:
    """Retry, throttle, budget, TLS settings and the clock for one run of `connector`."""
    cls = connector_class(connector.type)
    rate: tuple[int, float] | None = getattr(cls, "default_rate", None)
    config = cls.config_model.model_validate(connector.config)
    budget = config.request_budget or settings.connector_request_budget
    policy = RetryPolicy(
        max_attempts=settings.connector_max_attempts,
        request_budget=budget,
        rate_requests=rate[0] if rate else None,
        rate_period_seconds=rate[1] if rate else 10.0,
    )
    return Runtime(
        retry=policy,
        timeout_seconds=settings.connector_timeout_seconds,
        ca_bundle=settings.connector_ca_bundle,
        clock=clock,
        allowed_hosts=settings.connector_allowed_hosts,
    )


class SyncEngine:
    """Runs syncs. One instance per process; `worker_id` names it in leases."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        clock: Clock = utc_now,
        runtime_factory: Callable[[Connector], Runtime] | None = None,
        after_commit: Callable[[str, int], None] | None = None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.clock = in_utc(clock)
        self.worker_id = f"{socket.gethostname()}:{uuid.uuid4().hex[:8]}"
        self.runtime_factory = runtime_factory or (lambda c: runtime_for(c, settings, self.clock))
        #: Test hook: called after each committed page with (kind, page number).
        self.after_commit = after_commit

    # ------------------------------------------------------------------ leases

    def _acquire(self, connector_id: int) -> Connector:
        now = self.clock()
        until = now + timedelta(seconds=self.settings.sync_lease_seconds)
        table = Connector.__table__  # type: ignore[attr-defined]
        with Session(self.engine, expire_on_commit=False) as session:
            result = session.execute(
                update(table)
                .where(
                    table.c.id == connector_id,
                    or_(table.c.lease_until.is_(None), table.c.lease_until < now),
                )
                .values(lease_owner=self.worker_id, lease_until=until)
            )
            session.commit()
            row = session.get(Connector, connector_id)
            if row is None:
                raise NotFoundError("connector", connector_id)
            if result.rowcount != 1:  # type: ignore[attr-defined]
                raise SyncAlreadyRunning(f"connector {connector_id} is already syncing")
            return row

    def _renew(self, session: Session, connector_id: int) -> None:
        table = Connector.__table__  # type: ignore[attr-defined]
        until = self.clock() + timedelta(seconds=self.settings.sync_lease_seconds)
        result = session.execute(
            update(table)
            .where(and_(table.c.id == connector_id, table.c.lease_owner == self.worker_id))
            .values(lease_until=until)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            raise LeaseLost(f"lease on connector {connector_id} was taken over")

    def _release(self, connector_id: int) -> None:
        table = Connector.__table__  # type: ignore[attr-defined]
        with Session(self.engine) as session:
            session.execute(
                update(table)
                .where(and_(table.c.id == connector_id, table.c.lease_owner == self.worker_id))
                .values(lease_owner=None, lease_until=None)
            )
            session.commit()

    # ------------------------------------------------------------------ runs

    def run(self, connector_id: int, trigger: RunTrigger = RunTrigger.manual) -> SyncRun:
        """Sync every enabled kind of the connector; returns the finished run.

        Raises SyncAlreadyRunning when another worker holds the connector.
        """
        row = self._acquire(connector_id)
        try:
            return self._run(row, trigger)
        finally:
            self._release(connector_id)

    def run_if_due(self, connector_id: int) -> SyncRun | None:
        """A scheduled run, unless another worker ran it within its interval.

        Due-ness is checked again under the lease: two schedulers that both saw the
        connector due must not both sync it, one after the other.
        """
        row = self._acquire(connector_id)
        try:
            with Session(self.engine) as session:
                last = session.execute(
                    select(func.max(SyncRun.started_at)).where(
                        SyncRun.connector_id == connector_id  # type: ignore[arg-type]
                    )
                ).scalar_one()
            if last is not None and self.clock() - last < timedelta(
                seconds=row.sync_interval_seconds
            ):
                return None
            return self._run(row, RunTrigger.schedule)
        finally:
            self._release(connector_id)

    def _run(self, row: Connector, trigger: RunTrigger) -> SyncRun:
        assert row.id is not None
        started = self.clock()
        t0 = time.monotonic()
        with Session(self.engine, expire_on_commit=False) as session:
            run = SyncRun(
                workspace_id=row.workspace_id,
                connector_id=row.id,
                trigger=trigger,
                status=RunStatus.running,
                started_at=started,
            )
            session.add(run)
            session.commit()
            workspace = session.get(Workspace, row.workspace_id)
            slug = workspace.slug if workspace is not None else str(row.workspace_id)
        observability.run_started(row, slug, run, [k.value for k in enabled_kinds(row)])
        reports: dict[str, KindReport] = {}
        runtime = self.runtime_factory(row)
        error: BaseException | None = None
        quota: tuple[int, int] | None = None
        try:
            vendor = build_connector(row, self.settings, runtime)
            try:
                for kind in enabled_kinds(row):
                    report = KindReport()
                    reports[kind.value] = report
                    self._sync_kind(row, vendor, kind, started, report)
            finally:
                quota = vendor.quota_usage()
                vendor.close()
        except Exception as exc:  # noqa: BLE001 - every failure is recorded on the run
            error = exc
        totals = Counts()
        for report in reports.values():
            totals.add(report.counts)
        finished = self._finish(row, run, started, t0, totals, reports, runtime, error)
        observability.run_finished(
            row, slug, finished, finished.details or {}, runtime.retry.rate_limited, quota
        )
        return finished

    def _finish(
        self,
        row: Connector,
        run: SyncRun,
        started: datetime,
        t0: float,
        totals: Counts,
        reports: dict[str, KindReport],
        runtime: Runtime,
        error: BaseException | None,
    ) -> SyncRun:
        secrets = secret_store.known_values(row.secrets, self.settings)
        details: dict[str, Any] = {
            "kinds": {
                kind: {
                    "fetched": r.counts.fetched,
                    "inserted": r.counts.inserted,
                    "updated": r.counts.updated,
                    "deleted": r.counts.deleted,
                    "pages": r.pages,
                    "window_start": r.window_start,
                    "window_end": r.window_end,
                    "resumed": r.resumed,
                }
                for kind, r in reports.items()
            }
        }
        if isinstance(error, QuotaExceededError):
            details["quota"] = {"used": error.used, "limit": error.limit}
        with Session(self.engine, expire_on_commit=False) as session:
            run = session.merge(run)
            run.finished_at = self.clock()
            run.duration_ms = int((time.monotonic() - t0) * 1000)
            run.fetched, run.inserted = totals.fetched, totals.inserted
            run.updated, run.deleted = totals.updated, totals.deleted
            run.requests = runtime.retry.requests_made
            run.retries = runtime.retry.retries
            connector = session.get(Connector, row.id)
            assert connector is not None
            if error is None:
                run.status = RunStatus.succeeded
                connector.last_success_at = started
                self._reevaluate(session, connector, set(reports), started)
            else:
                run.status = RunStatus.failed
                if isinstance(error, ConnectorError):
                    run.error_class = error.error_class
                    message = error.message
                else:
                    run.error_class = "internal"
                    message = f"{type(error).__name__}: {error}"
                    log.exception("sync of connector %s failed", row.id, exc_info=error)
                run.error_message = secret_store.redact(message, secrets)[:4000]
            run.details = json.loads(json.dumps(details, default=str))
            connector.last_run_status = run.status
            session.commit()
            return run

    def _reevaluate(
        self, session: Session, connector: Connector, kinds: set[str], now: datetime
    ) -> None:
        from service.mappings.service import reevaluate_after_sync

        assert connector.id is not None
        reevaluate_after_sync(session, connector.id, kinds, now)

    def _sync_kind(
        self,
        row: Connector,
        vendor: Any,
        kind: RecordKind,
        now: datetime,
        report: KindReport,
    ) -> None:
        assert row.id is not None
        overlap = timedelta(seconds=self.settings.sync_overlap_seconds)
        with Session(self.engine, expire_on_commit=False) as session:
            state = session.get(SyncState, (row.id, kind.value))
            if state is None:
                state = SyncState(connector_id=row.id, kind=kind.value, updated_at=self.clock())
                session.add(state)
            if state.window_start is not None and state.window_end is not None:
                # A run died inside this window: finish it from the last committed page.
                window = Window(state.window_start, state.window_end)
                resume = state.resume
                report.resumed = True
            else:
                start = state.watermark - overlap if state.watermark else BEGINNING
                window = Window(min(start, now), now)
                resume = None
                state.window_start, state.window_end, state.resume = window.start, window.end, None
            state.updated_at = self.clock()
            session.commit()
            report.window_start = window.start.isoformat()
            report.window_end = window.end.isoformat()

            for page in prefetched(iter(vendor.read(kind, window, resume))):
                counts = upsert_page(session, row, kind, page.records, self.clock())
                state.resume = dict(page.checkpoint) if page.checkpoint is not None else None
                state.updated_at = self.clock()
                self._renew(session, row.id)
                session.commit()
                report.counts.add(counts)
                report.pages += 1
                # From the second page on: a one-page incremental window never pays for it.
                if report.pages == 2 or report.pages % 100 == 0:
                    refresh_planner_statistics(session)
                if self.after_commit is not None:
                    self.after_commit(kind.value, report.pages)

            state.watermark = window.end
            state.window_start = state.window_end = None
            state.resume = None
            state.updated_at = self.clock()
            session.commit()

            interval = vendor.config.reconcile_seconds
            if interval is None:
                interval = self.settings.sync_reconcile_seconds
            due = state.reconciled_at is None or (now - state.reconciled_at) >= timedelta(
                seconds=interval
            )
            if (not vendor.reports_deletes or vendor.reconcile_ids) and due:
                report.counts.add(self._reconcile(session, row, vendor, kind, now))
                state.reconciled_at = now
                session.commit()

    def _reconcile(
        self, session: Session, row: Connector, vendor: Any, kind: RecordKind, now: datetime
    ) -> Counts:
        """Tombstone stored records the vendor no longer lists (it never reports deletes).

        The full listing is upserted on the way, which also restores a record a previous
        reconciliation tombstoned by mistake.
        """
        assert row.id is not None
        counts = Counts()
        listed: set[str] = set()
        for page in vendor.read(kind, Window(BEGINNING, now)):
            listed.update(r.source_id for r in page.records if not r.deleted)
            counts.add(upsert_page(session, row, kind, page.records, now, restore_equal=True))
            self._renew(session, row.id)
            session.commit()
        conn = session.connection()
        live = conn.execute(
            select(RECORD.c.source_id).where(
                RECORD.c.connector_id == row.id,
                RECORD.c.kind == kind.value,
                RECORD.c.deleted.is_(False),
                RECORD.c.synced_at < now,
            )
        )
        gone = [source_id for (source_id,) in live if source_id not in listed]
        for i in range(0, len(gone), 5000):
            conn.execute(
                update(RECORD)
                .where(
                    RECORD.c.connector_id == row.id,
                    RECORD.c.kind == kind.value,
                    RECORD.c.source_id.in_(gone[i : i + 5000]),
                )
                .values(deleted=True, synced_at=now)
            )
        counts.deleted += len(gone)
        return counts
