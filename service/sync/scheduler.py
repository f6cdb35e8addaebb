"""Scheduled syncs: a loop that runs every connector that is due.

Any number of processes may run it (the `all` and `worker` roles): the engine's lease
makes sure a connector never syncs twice at once.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta

from sqlmodel import Session, col, func, select

from service.sync.engine import SyncAlreadyRunning, SyncEngine
from service.sync.models import Connector, SyncRun

log = logging.getLogger(__name__)


def due_connectors(session: Session, now: datetime) -> list[int]:
    """Ids of enabled connectors whose last run started more than an interval ago."""
    last_start = (
        select(SyncRun.connector_id, func.max(SyncRun.started_at).label("last"))
        .group_by(col(SyncRun.connector_id))
        .subquery()
    )
    rows = session.exec(
        select(Connector, last_start.c.last)
        .join(last_start, last_start.c.connector_id == Connector.id, isouter=True)
        .where(col(Connector.enabled).is_(True))
        .order_by(col(Connector.id))
    ).all()
    due = []
    for connector, last in rows:
        if last is None or now - last >= timedelta(seconds=connector.sync_interval_seconds):
            assert connector.id is not None
            due.append(connector.id)
    return due


def tick(engine: SyncEngine) -> int:
    """Run every due connector once; returns how many runs were made."""
    with Session(engine.engine) as session:
        ids = due_connectors(session, engine.clock())
    runs = 0
    for connector_id in ids:
        try:
            if engine.run_if_due(connector_id) is not None:
                runs += 1
        except SyncAlreadyRunning:
            continue
        except Exception:  # noqa: BLE001 - one connector's failure must not stop the loop
            log.exception("scheduled sync of connector %s crashed", connector_id)
    return runs


class Scheduler:
    """Runs `tick` every `interval_seconds` on a daemon thread until stopped."""

    def __init__(self, engine: SyncEngine, interval_seconds: float) -> None:
        self.engine = engine
        self.interval_seconds = interval_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="okr-sync-scheduler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                tick(self.engine)
            except Exception:  # noqa: BLE001 - keep scheduling (e.g. database briefly down)
                log.exception("scheduler tick failed")
            self._stop.wait(self.interval_seconds)
