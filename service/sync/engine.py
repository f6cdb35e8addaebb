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
* A lease on the connector row keeps a second worker from syncing it at the same time;
  a heartbeat renews it, and a lease left to expire (a dead worker) is taken over: the
  dead run ends `interrupted` and a new one resumes from the checkpoint (docs/sync.md).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from queue import Empty, Full, Queue
from typing import Any, TypeVar

from sqlalchemy import Engine, Table, and_, or_, select, text, update
from sqlmodel import Session

from connectors.base import Record, RecordKind, Runtime, Skipped, Window
from connectors.errors import ConnectorError, QuotaExceededError, RequestBudgetExceededError
from connectors.retry import RetryPolicy
from service import observability
from service.clock import Clock, in_utc, utc_now
from service.db import json_dumps
from service.errors import ConflictError, NotFoundError
from service.settings import Settings
from service.sync import reader
from service.sync import secrets as secret_store
from service.sync.budget import budget_for
from service.sync.models import (
    AMOUNT_SCALE,
    Connector,
    RunStatus,
    RunTrigger,
    SyncedRecord,
    SyncRun,
    SyncState,
)
from service.sync.service import (
    ConnectorPaused,
    account_key,
    active_run,
    build_connector,
    connector_class,
    enabled_kinds,
    next_scheduled,
    share_budget,
)
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


class RunInterrupted(Exception):
    """The worker is shutting down: the run stops after its last committed page."""


class RunPaused(Exception):
    """The connector was paused: the run stops after its last committed page."""


#: `error_class` of a run whose worker died or shut down before it finished.
INTERRUPTED = "interrupted"
#: `error_class` of a run stopped because its connector was paused while it ran (its
#: status is `failed`, as for `interrupted`: clients poll until succeeded or failed; the
#: queued run resuming it starts once the connector is unpaused).
PAUSED = "paused"
#: Why a due connector was not claimed: its vendor account runs `OKR_SYNC_MAX_PER_ACCOUNT`
#: syncs already.
ACCOUNT_BUSY = "account_busy"
#: The PostgreSQL advisory lock claims take one at a time (a constant of this service:
#: the first 8 bytes of sha256("okr-sync:claim"), as a signed bigint).
CLAIM_LOCK_KEY = int.from_bytes(hashlib.sha256(b"okr-sync:claim").digest()[:8], "big", signed=True)


@dataclass
class Counts:
    fetched: int = 0
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    #: Records stored with NUL characters removed from their text (PostgreSQL refuses
    #: U+0000 in text and jsonb: one such comment used to fail its whole page, forever).
    cleaned: int = 0

    def add(self, other: Counts) -> None:
        self.fetched += other.fetched
        self.inserted += other.inserted
        self.updated += other.updated
        self.deleted += other.deleted
        self.cleaned += other.cleaned


@dataclass
class KindReport:
    counts: Counts = field(default_factory=Counts)
    window_start: str | None = None
    window_end: str | None = None
    pages: int = 0
    resumed: bool = False
    #: Source records left out because they could not be normalised (Page.skipped).
    skipped: int = 0
    #: The first of them (id and why), for the run's details.
    skipped_records: list[dict[str, str]] = field(default_factory=list)
    #: Why this run's id reconciliation did not finish (None: finished, or not due).
    reconcile_incomplete: str | None = None
    #: Where the window was read: "process" (the reader process) or "thread".
    reader: str = "thread"

    def skip(self, skipped: Sequence[Skipped]) -> None:
        self.skipped += len(skipped)
        room = SKIPPED_LISTED - len(self.skipped_records)
        self.skipped_records += [{"id": s.source_id, "reason": s.reason} for s in skipped[:room]]


#: How many skipped records a run lists by id (all are counted).
SKIPPED_LISTED = 100


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

#: The stored version of each of a page's records, by one parameter holding all their ids.
_STORED_SQL = {
    "sqlite": "SELECT source_id, modified_at, deleted FROM record WHERE connector_id = ? "
    "AND kind = ? AND source_id IN (SELECT value FROM json_each(?))",
    "postgresql": "SELECT source_id, modified_at, deleted FROM record WHERE connector_id = %s "
    "AND kind = %s AND source_id = ANY(%s)",
}


@functools.lru_cache(maxsize=4096)
def _sqlite_time(moment: datetime) -> str:
    # Cached: records share instants (created = modified until edited, imports), and this
    # was a tenth of a large sync's reading side (1 us a call, 0.1 us from the cache).
    # Exactly the text SQLAlchemy's SQLite DATETIME stores (naive UTC, always microseconds),
    # so values written here compare and read back like those written through the ORM.
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    text = moment.isoformat(" ")[:-6]  # drop "+00:00"
    return text if len(text) > 19 else text + ".000000"


_TEXT_FIELDS = ("status", "stage", "currency", "lead_source", "owner", "deal_type", "email")


def _without_nul(value: Any) -> Any:
    """`value` (JSON-like) with U+0000 removed from every string, keys included."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, Mapping):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_without_nul(v) for v in value]
    return value


def _storable(record: Record) -> tuple[Record, str, bool]:
    """The record as the database can store it, its raw JSON, and whether NUL characters
    had to be removed (the same on SQLite and PostgreSQL, so both store the same text)."""
    raw = json_dumps(record.raw)
    changes: dict[str, Any] = {}
    if "\\u0000" in raw:  # a cheap test first: orjson writes U+0000 as this escape
        cleaned = _without_nul(record.raw)
        cleaned_raw = json_dumps(cleaned)
        if cleaned_raw != raw:  # not just a backslash followed by "u0000" in some text
            changes["raw"], raw = cleaned, cleaned_raw
    for name in ("source_id", *_TEXT_FIELDS):
        text = getattr(record, name)
        if text is not None and "\x00" in text:
            changes[name] = text.replace("\x00", "")
    if not changes:
        return record, raw, False
    return replace(record, **changes), raw, True


def _native_row(
    record: Record, raw: str, workspace_id: int, connector_id: int, sqlite_dialect: bool
) -> tuple[Any, ...]:
    """A record as the driver binds it, but for `synced_at` (added when it is stored)."""
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
        raw,
    )


#: Where `_native_row` puts the fields the upsert compares.
_ROW_SOURCE_ID, _ROW_MODIFIED, _ROW_DELETED = 2, 5, 6


@dataclass(slots=True)
class PreparedPage:
    """A vendor page made ready to store: the newest version of each record as a driver
    row (`synced_at` aside), in the dialect's own types (text datetimes on SQLite).

    Everything here depends only on the page, so it can be built away from the database
    (in the reader process, `service.sync.reader`) and sent as plain tuples.
    """

    fetched: int
    rows: list[tuple[Any, ...]]
    #: Ids of the rows whose text had NUL characters removed.
    cleaned: set[str] = field(default_factory=set)
    checkpoint: Mapping[str, Any] | None = None
    skipped: tuple[Skipped, ...] = ()


def prepare_page(
    records: Sequence[Record],
    kind: RecordKind,
    connector_id: int,
    workspace_id: int,
    sqlite_dialect: bool,
    *,
    checkpoint: Mapping[str, Any] | None = None,
    skipped: tuple[Skipped, ...] = (),
) -> PreparedPage:
    """The rows `store_page` writes for `records` (read as `kind`), newest version per id."""
    newest: dict[str, tuple[Record, str, bool]] = {}
    for given in records:
        if given.kind is not kind:
            raise ConnectorError(f"connector yielded a {given.kind} record while reading {kind}")
        record, raw, cleaned = _storable(given)
        seen = newest.get(record.source_id)
        if seen is None or record.modified_at >= seen[0].modified_at:
            newest[record.source_id] = (record, raw, cleaned)
    return PreparedPage(
        fetched=len(records),
        rows=[
            _native_row(record, raw, workspace_id, connector_id, sqlite_dialect)
            for record, raw, _ in newest.values()
        ],
        cleaned={source_id for source_id, (_, _, cleaned) in newest.items() if cleaned},
        checkpoint=checkpoint,
        skipped=skipped,
    )


def store_page(
    session: Session,
    connector_id: int,
    kind: RecordKind,
    page: PreparedPage,
    now: datetime,
    *,
    restore_equal: bool = False,
) -> Counts:
    """Store one prepared page: insert new records, update newer versions, apply deletes.
    Flushes.

    Counts are decided against what is stored, so re-reading an overlap counts nothing.
    With `restore_equal` (reconciliation), a listed record whose version equals a stored
    tombstone brings it back: the listing proves it exists.
    """
    counts = Counts(fetched=page.fetched)
    if not page.rows:
        return counts
    conn = session.connection()
    on_sqlite = conn.dialect.name == "sqlite"
    stored: dict[str, tuple[Any, bool]] = {}
    # The page's ids as one parameter (a JSON array on SQLite, an array on PostgreSQL), in
    # driver SQL: SQLAlchemy's expanding IN compiled and bound one parameter per id, about
    # 5% of a large initial sync's time (py-spy) although that sync finds no row.
    listed = [row[_ROW_SOURCE_ID] for row in page.rows]
    ids: Any = json_dumps(listed) if on_sqlite else listed
    found = conn.exec_driver_sql(_STORED_SQL[conn.dialect.name], (connector_id, kind.value, ids))
    for source_id, modified_at, deleted in found:
        if on_sqlite:  # compared as the text `_sqlite_time` writes, whoever wrote it
            modified_at = _sqlite_time(datetime.fromisoformat(modified_at).replace(tzinfo=UTC))
        stored[source_id] = (modified_at, bool(deleted))
    stamp: Any = _sqlite_time(now) if on_sqlite else now
    rows = []
    for row in page.rows:
        source_id, modified_at, deleted = (
            row[_ROW_SOURCE_ID],
            row[_ROW_MODIFIED],
            row[_ROW_DELETED],
        )
        before = stored.get(source_id)
        if before is None:
            if deleted:
                continue  # deleted before we ever saw it: nothing to store or to count
            counts.inserted += 1
        else:
            old_modified, old_deleted = before
            if modified_at < old_modified:
                continue  # an older version than the one stored
            if modified_at == old_modified and not (restore_equal and old_deleted and not deleted):
                continue  # the version already stored
            if deleted and not old_deleted:
                counts.deleted += 1
            else:
                counts.updated += 1
        # Counted where written: an overlap re-read counts nothing.
        counts.cleaned += source_id in page.cleaned
        rows.append((*row, stamp))
    if rows:
        conn.exec_driver_sql(_UPSERT_SQL[conn.dialect.name], rows)
    return counts


def upsert_page(
    session: Session,
    connector: Connector,
    kind: RecordKind,
    records: Sequence[Record],
    now: datetime,
    *,
    restore_equal: bool = False,
) -> Counts:
    """Store one page of records (`prepare_page`, then `store_page`). Flushes."""
    assert connector.id is not None
    on_sqlite = session.connection().dialect.name == "sqlite"
    page = prepare_page(records, kind, connector.id, connector.workspace_id, on_sqlite)
    return store_page(session, connector.id, kind, page, now, restore_equal=restore_equal)


def _restore_listed(
    session: Session, connector_id: int, kind: RecordKind, listed: set[str], now: datetime
) -> int:
    """Bring back stored tombstones of `kind` whose id an id listing holds; how many."""
    conn = session.connection()
    tombstones = conn.execute(
        select(RECORD.c.source_id).where(
            RECORD.c.connector_id == connector_id,
            RECORD.c.kind == kind.value,
            RECORD.c.deleted.is_(True),
        )
    )
    back = [source_id for (source_id,) in tombstones if source_id in listed]
    for i in range(0, len(back), 5000):
        conn.execute(
            update(RECORD)
            .where(
                RECORD.c.connector_id == connector_id,
                RECORD.c.kind == kind.value,
                RECORD.c.source_id.in_(back[i : i + 5000]),
            )
            .values(deleted=False, synced_at=now)
        )
    return len(back)


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
        on_page: Callable[[str, int, int], None] | None = None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.clock = in_utc(clock)
        self.worker_id = f"{socket.gethostname()}:{uuid.uuid4().hex[:8]}"
        #: Set on shutdown: runs stop after the page being stored commits.
        self.stopping = threading.Event()
        self.runtime_factory = runtime_factory or (lambda c: runtime_for(c, settings, self.clock))
        #: Test hook: called after each committed page with (kind, page number).
        self.after_commit = after_commit
        #: Progress display: called after each committed page with (kind, pages committed,
        #: records fetched) so far in this run's pass over that kind.
        self.on_page = on_page
        #: Connectors this worker passed over for their account's cap and has not claimed
        #: since (their `sync_deferred` line is written).
        self._deferred: set[int] = set()
        self._deferred_lock = threading.Lock()
        #: HubSpot's request budget per portal, shared with every other process.
        self.rate_budget = budget_for(engine)

    # ------------------------------------------------------------------ leases

    def _lease_free(self, now: datetime) -> Any:
        table = Connector.__table__  # type: ignore[attr-defined]
        return or_(table.c.lease_until.is_(None), table.c.lease_until < now)

    def _acquire(self, connector_id: int) -> None:
        now = self.clock()
        until = now + timedelta(seconds=self.settings.sync_lease_seconds)
        table = Connector.__table__  # type: ignore[attr-defined]
        with Session(self.engine) as session:
            result = session.execute(
                update(table)
                .where(table.c.id == connector_id, self._lease_free(now))
                .values(lease_owner=self.worker_id, lease_until=until)
            )
            session.commit()
            if result.rowcount != 1:  # type: ignore[attr-defined]
                if session.get(Connector, connector_id) is None:
                    raise NotFoundError("connector", connector_id)
                raise SyncAlreadyRunning(f"connector {connector_id} is already syncing")

    def claim(self, limit: int) -> list[int]:
        """Take the leases of up to `limit` connectors with work: due (`next_run_at` passed,
        which a queued run sets too) and not leased, or leased by a worker that stopped
        renewing its lease (a takeover).

        At most `OKR_SYNC_MAX_PER_ACCOUNT` connectors of one vendor account
        (`service.account_key`) hold a live lease at once, across every worker: a candidate
        whose account is full is passed over (it stays due, and a later claim takes it once
        one of its account's syncs ends), with a `sync_deferred` log line the first time.
        The count must not be read by two claims at once, or both could take the last
        slot: on PostgreSQL, the claim's transaction first takes an advisory lock, so claims
        run one after another (they last milliseconds); on SQLite, it first takes the
        database's write lock (one writer at a time), to the same effect.

        Both conditions are indexed, so a tick reads only those rows. On PostgreSQL,
        `FOR UPDATE SKIP LOCKED` passes over a candidate another transaction is changing;
        on SQLite the clause is left out. The conditional UPDATE of the lease decides.
        """
        if limit <= 0:
            return []
        now = self.clock()
        until = now + timedelta(seconds=self.settings.sync_lease_seconds)
        cap = self.settings.sync_max_per_account
        table = Connector.__table__  # type: ignore[attr-defined]
        columns = (table.c.id, table.c.type, table.c.config, table.c.secrets)
        claimed: list[int] = []
        deferred: dict[int, tuple[str, str]] = {}
        with Session(self.engine) as session:
            self._serialise_claims(session)
            busy: Counter[str] = Counter(
                account_key(row.id, row.type, row.config, row.secrets, self.settings)
                for row in session.execute(select(*columns).where(table.c.lease_until >= now))
            )
            # Enough candidates for the free slots, and more while some are passed over.
            # A claimed row no longer matches, so the next batch skips only those passed.
            batch = max(2 * limit, 20)
            passed = 0
            while len(claimed) < limit:
                rows = session.execute(
                    select(*columns)
                    .where(
                        or_(
                            and_(table.c.next_run_at <= now, table.c.lease_until.is_(None)),
                            table.c.lease_until < now,
                        )
                    )
                    # A dead worker's runs first (work in progress, resumed), then by due
                    # time, so a slot freeing up goes to the longest waiting.
                    .order_by(table.c.lease_until.is_(None), table.c.next_run_at, table.c.id)
                    .offset(passed)
                    .limit(batch)
                    .with_for_update(skip_locked=True)
                ).all()
                for row in rows:
                    if len(claimed) == limit:
                        break
                    account = account_key(row.id, row.type, row.config, row.secrets, self.settings)
                    if busy[account] >= cap:
                        deferred[row.id] = (row.type, account)
                        passed += 1
                        continue
                    result = session.execute(
                        update(table)
                        .where(table.c.id == row.id, self._lease_free(now))
                        .values(lease_owner=self.worker_id, lease_until=until)
                    )
                    if result.rowcount == 1:  # type: ignore[attr-defined]
                        claimed.append(row.id)
                        busy[account] += 1
                    else:
                        passed += 1
                if len(rows) < batch:
                    break
            session.commit()
        self._report_deferred(deferred, claimed, cap)
        return claimed

    def _serialise_claims(self, session: Session) -> None:
        """Make this claim's transaction the only one counting leases until it commits."""
        if session.connection().dialect.name == "postgresql":
            session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CLAIM_LOCK_KEY})
        else:
            # A write as the transaction's first statement takes SQLite's write lock (and
            # waits for it, `timeout`) before anything is read; it changes nothing.
            session.execute(text("UPDATE connector SET id = id WHERE 0 = 1"))

    def _report_deferred(
        self, deferred: dict[int, tuple[str, str]], claimed: list[int], cap: int
    ) -> None:
        """Log each connector the account cap holds back, once per wait (not on every tick:
        until this worker claims it), and count every pass-over in `okr_sync_deferred`."""
        with self._deferred_lock:
            fresh = deferred.keys() - self._deferred
            self._deferred |= deferred.keys()
            self._deferred -= set(claimed)
        for connector_id, (connector_type, account) in deferred.items():
            observability.SYNC_DEFERRED.labels(
                connector=str(connector_id), type=connector_type, reason=ACCOUNT_BUSY
            ).inc()
            if connector_id in fresh:
                log.info(
                    "connector %s waits: %d sync(s) of its vendor account already run "
                    "(OKR_SYNC_MAX_PER_ACCOUNT)",
                    connector_id,
                    cap,
                    extra={
                        "event": "sync_deferred",
                        "reason": ACCOUNT_BUSY,
                        "connector_id": connector_id,
                        "connector_type": connector_type,
                        "account": account,
                    },
                )

    def _renew(self, session: Session, connector_id: int) -> bool:
        """Extend our lease; whether the connector was paused meanwhile (the page loop
        stops at this page, see `_check_stopping`)."""
        table = Connector.__table__  # type: ignore[attr-defined]
        until = self.clock() + timedelta(seconds=self.settings.sync_lease_seconds)
        result = session.execute(
            update(table)
            .where(and_(table.c.id == connector_id, table.c.lease_owner == self.worker_id))
            .values(lease_until=until)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            raise LeaseLost(f"lease on connector {connector_id} was taken over")
        paused = session.execute(select(table.c.paused).where(table.c.id == connector_id))
        return bool(paused.scalar_one())

    def _heartbeat(self, connector_id: int, done: threading.Event) -> None:
        """Renew the lease every third of its length until `done`, so a page slower than
        the lease (or a long reconciliation) keeps it, and a dead process loses it within
        `sync_lease_seconds`."""
        period = self.settings.sync_lease_seconds / 3
        while not done.wait(period):
            try:
                with Session(self.engine) as session:
                    self._renew(session, connector_id)
                    session.commit()
            except LeaseLost:
                log.warning("lease on connector %s was taken over", connector_id)
                return
            except Exception:  # noqa: BLE001 - the database may come back before expiry
                log.exception("could not renew the lease on connector %s", connector_id)

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
        """Sync every enabled kind of the connector now, in this thread; returns the
        finished run (a queued one is the one run).

        Raises SyncAlreadyRunning when another worker holds the connector, and
        ConnectorPaused when it is paused.
        """
        self._acquire(connector_id)
        try:
            started = self._begin(connector_id, trigger)
            assert started is not None
            return self._execute(*started)
        finally:
            self._release(connector_id)

    def work(self, connector_id: int) -> SyncRun | None:
        """Run what a claimed connector (`claim`) has to do, then release it: resume a run
        whose worker died, start its queued run, or its scheduled one. None if nothing
        was left to do (another worker ran it meanwhile, or it was paused)."""
        try:
            if self.stopping.is_set():  # claimed just before the shutdown: leave it
                return None
            started = self._begin(connector_id, None)
            return self._execute(*started) if started is not None else None
        finally:
            self._release(connector_id)

    def _begin(
        self, connector_id: int, trigger: RunTrigger | None
    ) -> tuple[Connector, SyncRun, str] | None:
        """Under the lease: close a dead worker's run, then start the run to make (a queued
        one, the dead one's continuation, `trigger`'s, or the schedule's)."""
        now = self.clock()
        dead: SyncRun | None = None
        with Session(self.engine, expire_on_commit=False) as session:
            row = session.get(Connector, connector_id)
            if row is None:
                raise NotFoundError("connector", connector_id)
            active = active_run(session, connector_id)
            if active is not None and active.status == RunStatus.running:
                # The lease was free or expired: the worker running it is gone.
                dead, active = active, None
                dead.status = RunStatus.failed
                dead.error_class = INTERRUPTED
                dead.error_message = (
                    f"worker {dead.worker} stopped renewing its lease; "
                    "the next run resumes from the last committed page"
                )
                dead.finished_at = now
                row.last_run_status = RunStatus.failed
                session.flush()
            if row.paused:
                row.next_run_at = None
                session.commit()
                if dead is not None:
                    self._report_dead(row, dead)
                if trigger is not None:
                    raise ConnectorPaused(
                        f"connector {connector_id} is paused: unpause it to sync", field="paused"
                    )
                return None
            if active is not None:
                run = active
            elif dead is not None or trigger is not None or self._scheduled(row, now):
                run = SyncRun(
                    workspace_id=row.workspace_id,
                    connector_id=connector_id,
                    trigger=dead.trigger if dead is not None else trigger or RunTrigger.schedule,
                    status=RunStatus.queued,
                    queued_at=now,
                )
                session.add(run)
            else:
                if not row.enabled:
                    row.next_run_at = None  # disabled meanwhile: no claim on every tick
                session.commit()
                return None
            run.status = RunStatus.running
            run.started_at = now
            run.worker = self.worker_id
            row.next_run_at = next_scheduled(row, now)
            session.flush()
            if dead is not None:
                dead.resumed_by_run_id = run.id
            session.commit()
            workspace = session.get(Workspace, row.workspace_id)
            slug = workspace.slug if workspace is not None else str(row.workspace_id)
        if dead is not None:
            self._report_dead(row, dead, slug)
        return row, run, slug

    @staticmethod
    def _scheduled(row: Connector, now: datetime) -> bool:
        return (
            row.enabled
            and not row.paused
            and row.next_run_at is not None
            and row.next_run_at <= now
        )

    def _report_dead(self, row: Connector, dead: SyncRun, slug: str | None = None) -> None:
        log.warning(
            "run %s of connector %s was interrupted (worker %s stopped renewing its lease)",
            dead.id,
            row.id,
            dead.worker,
        )
        observability.run_finished(row, slug or str(row.workspace_id), dead, {}, 0, None)

    def _share_budget(self, row: Connector, vendor: object) -> None:
        share_budget(row, vendor, self.rate_budget)

    def _execute(self, row: Connector, run: SyncRun, slug: str) -> SyncRun:
        assert row.id is not None
        assert run.started_at is not None
        started = run.started_at
        t0 = time.monotonic()
        observability.run_started(row, slug, run, [k.value for k in enabled_kinds(row)])
        reports: dict[str, KindReport] = {}
        runtime = self.runtime_factory(row)
        error: BaseException | None = None
        quota: tuple[int, int] | None = None
        done = threading.Event()
        heartbeat = threading.Thread(
            target=self._heartbeat, args=(row.id, done), name="okr-sync-heartbeat", daemon=True
        )
        heartbeat.start()
        try:
            vendor = build_connector(row, self.settings, runtime)
            self._share_budget(row, vendor)
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
        finally:
            done.set()
            heartbeat.join()
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
                    "cleaned": r.counts.cleaned,
                    "skipped": r.skipped,
                    "skipped_records": r.skipped_records,
                    "pages": r.pages,
                    "window_start": r.window_start,
                    "window_end": r.window_end,
                    "resumed": r.resumed,
                    "reader": r.reader,
                }
                | (
                    {"reconcile_incomplete": r.reconcile_incomplete}
                    if r.reconcile_incomplete
                    else {}
                )
                for kind, r in reports.items()
            }
        }
        if isinstance(error, QuotaExceededError):
            details["quota"] = {"used": error.used, "limit": error.limit}
        with Session(self.engine, expire_on_commit=False) as session:
            stored = session.get(SyncRun, run.id, with_for_update=True)
            assert stored is not None
            if (
                isinstance(error, LeaseLost)
                or stored.status != RunStatus.running
                or stored.worker != self.worker_id
            ):
                # Another worker took the connector over and closed this run already.
                log.warning("run %s lost its lease to another worker", run.id)
                session.commit()
                return stored
            run = stored
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
            elif isinstance(error, RunInterrupted | RunPaused):
                # Shutting down, or paused: a queued run resumes from the checkpoint, on
                # any worker; a paused connector's waits until it is unpaused.
                run.status = RunStatus.failed
                run.error_class = INTERRUPTED if isinstance(error, RunInterrupted) else PAUSED
                run.error_message = str(error)
                session.flush()
                resume = SyncRun(
                    workspace_id=run.workspace_id,
                    connector_id=run.connector_id,
                    trigger=run.trigger,
                    status=RunStatus.queued,
                    queued_at=self.clock(),
                )
                session.add(resume)
                session.flush()
                run.resumed_by_run_id = resume.id
                connector.next_run_at = None if connector.paused else self.clock()
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

    def _check_stopping(self, paused: bool) -> None:
        """After a committed page: stop there if the worker shuts down or the connector
        was paused (`paused`, read when the page renewed the lease)."""
        if self.stopping.is_set():
            raise RunInterrupted(
                f"worker {self.worker_id} shut down; the next run resumes from the last "
                "committed page"
            )
        if paused:
            raise RunPaused(
                "the connector was paused: the run stopped after its last committed page, "
                "and the next run after unpausing resumes from there"
            )

    def abandon(self, connector_id: int) -> None:
        """Give a connector up while its run is still stuck (a vendor call outlasting the
        shutdown grace): the run ends interrupted, a queued run resumes it, the lease is
        released. The stuck thread can commit nothing more: its lease check fails."""
        now = self.clock()
        with Session(self.engine, expire_on_commit=False) as session:
            row = session.get(Connector, connector_id, with_for_update=True)
            if row is None or row.lease_owner != self.worker_id:
                return
            active = active_run(session, connector_id)
            if active is not None and active.status == RunStatus.running:
                active.status = RunStatus.failed
                active.error_class = INTERRUPTED
                active.error_message = f"worker {self.worker_id} shut down mid-page"
                active.finished_at = now
                session.flush()
                resume = SyncRun(
                    workspace_id=active.workspace_id,
                    connector_id=connector_id,
                    trigger=active.trigger,
                    status=RunStatus.queued,
                    queued_at=now,
                )
                session.add(resume)
                session.flush()
                active.resumed_by_run_id = resume.id
                row.next_run_at = now
                row.last_run_status = RunStatus.failed
            row.lease_owner = None
            row.lease_until = None
            session.commit()

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

            on_sqlite = session.connection().dialect.name == "sqlite"
            for page in self._read(row, vendor, kind, window, resume, on_sqlite, report):
                counts = store_page(session, row.id, kind, page, self.clock())
                if page.skipped:
                    report.skip(page.skipped)
                    log.warning(
                        "connector %s: %d %s record(s) skipped, e.g. %s (%s)",
                        row.id,
                        len(page.skipped),
                        kind.value,
                        page.skipped[0].source_id,
                        page.skipped[0].reason,
                        extra={"event": "records_skipped", "connector_id": row.id},
                    )
                state.resume = dict(page.checkpoint) if page.checkpoint is not None else None
                state.updated_at = self.clock()
                paused = self._renew(session, row.id)
                session.commit()
                report.counts.add(counts)
                report.pages += 1
                # From the second page on: a one-page incremental window never pays for it.
                if report.pages == 2 or report.pages % 100 == 0:
                    refresh_planner_statistics(session)
                if self.after_commit is not None:
                    self.after_commit(kind.value, report.pages)
                if self.on_page is not None:
                    self.on_page(kind.value, report.pages, report.counts.fetched)
                self._check_stopping(paused)

            state.watermark = window.end
            state.window_start = state.window_end = None
            state.resume = None
            state.updated_at = self.clock()
            session.commit()

            # Per connector: vendors that miss some deletes (never report them, or forget
            # them after a while) are reconciled; the config may set the interval or opt out.
            interval = vendor.reconcile_interval_seconds(self.settings.sync_reconcile_seconds)
            due = interval is not None and (
                state.reconciled_at is None
                or (now - state.reconciled_at) >= timedelta(seconds=interval)
            )
            if due and window.start == BEGINNING:
                # This window was read from the beginning (a first sync, maybe over several
                # runs): a reconciliation's full read would find nothing more.
                state.reconciled_at = now
                session.commit()
            elif due:
                try:
                    report.counts.add(self._reconcile(session, row, vendor, kind, now))
                except RequestBudgetExceededError as exc:
                    # A full listing does not fit in what is left of the run's budget. The
                    # window's records are committed; the listing waits for the next interval
                    # rather than spending every run's budget, and the run says so.
                    session.rollback()
                    report.reconcile_incomplete = exc.message
                    log.warning("reconciliation of connector %s %s: %s", row.id, kind, exc)
                state.reconciled_at = now
                session.commit()

    def _read(
        self,
        row: Connector,
        vendor: Any,
        kind: RecordKind,
        window: Window,
        resume: Mapping[str, Any] | None,
        sqlite_dialect: bool,
        report: KindReport,
    ) -> Iterator[PreparedPage]:
        """The window's pages, prepared to store, read ahead of the storing: in the reader
        process for an initial window where the connector allows it (both cores work),
        else in a reader thread (network waits overlap)."""
        connector_id, workspace_id = row.id, row.workspace_id
        assert connector_id is not None

        def pages(forked: bool = False) -> Iterator[PreparedPage]:
            if forked:
                vendor.after_fork()
            for page in vendor.read(kind, window, resume):
                yield prepare_page(
                    page.records,
                    kind,
                    connector_id,
                    workspace_id,
                    sqlite_dialect,
                    checkpoint=page.checkpoint,
                    skipped=page.skipped,
                )

        if not (
            self.settings.sync_reader_process
            and window.start == BEGINNING
            and type(vendor).reads_in_child_process
            and reader.can_fork()
        ):
            return prefetched(pages())
        report.reader = "process"
        retry = vendor.runtime.retry

        def adopt(state: tuple[Any, Any]) -> None:
            retry.adopt_counters(state[0])
            vendor.adopt_read_state(state[1])

        return reader.read_in_child(
            lambda: pages(forked=True),
            state=lambda: (retry.counters(), vendor.read_state()),
            adopt=adopt,
        )

    def _reconcile(
        self, session: Session, row: Connector, vendor: Any, kind: RecordKind, now: datetime
    ) -> Counts:
        """Tombstone stored records the vendor no longer lists (it never reports deletes).

        Where the vendor's API lists ids alone (`read_ids`), only ids are read, and a
        listed id stored as a tombstone is live again (the listing proves it exists).
        Otherwise the full listing is upserted on the way, which also restores a record a
        previous reconciliation tombstoned by mistake.
        """
        assert row.id is not None
        counts = Counts()
        listed: set[str] = set()
        id_batches = vendor.read_ids(kind)
        if id_batches is not None:
            for ids in id_batches:
                listed.update(source_id.replace("\x00", "") for source_id in ids)
                paused = self._renew(session, row.id)
                session.commit()
                self._check_stopping(paused)
            counts.updated += _restore_listed(session, row.id, kind, listed, now)
        else:
            for page in vendor.read(kind, Window(BEGINNING, now)):
                listed.update(
                    r.source_id.replace("\x00", "") for r in page.records if not r.deleted
                )
                # A record that could not be normalised still exists at the source.
                listed.update(s.source_id for s in page.skipped)
                counts.add(upsert_page(session, row, kind, page.records, now, restore_equal=True))
                paused = self._renew(session, row.id)
                session.commit()
                self._check_stopping(paused)
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
