"""Sync workers: claim connectors with work from the database and run them on threads.

Any number of processes may run a `Scheduler` (`okr-sync serve` in the `all` role, and
`okr-sync worker`): each tick claims, through the connector's lease, the connectors that
are due, have a queued run, or were left by a worker that stopped renewing its lease
(`SyncEngine.claim`), at most `OKR_WORKER_CONCURRENCY` at a time per process. Nothing is
kept in memory between ticks: a process may die at any moment, and another takes its
connectors over once their leases run out.
"""

from __future__ import annotations

import logging
import threading
import time

from service.sync.engine import SyncAlreadyRunning, SyncEngine

log = logging.getLogger(__name__)


def tick(engine: SyncEngine, limit: int = 1_000) -> int:
    """Claim and run, one after another in this thread, every connector with work (tests
    and one-off use); returns how many runs were made."""
    runs = 0
    for connector_id in engine.claim(limit):
        try:
            if engine.work(connector_id) is not None:
                runs += 1
        except SyncAlreadyRunning:
            continue
        except Exception:  # noqa: BLE001 - one connector's failure must not stop the loop
            log.exception("scheduled sync of connector %s crashed", connector_id)
    return runs


def load_sync_code() -> None:
    """Import what a sync runs and the rest of the process imports lazily: every connector
    type (their vendor SDKs) and the evaluation code. Done before the first claim, a
    worker's first sync no longer spends a tenth of a second or more importing while it
    holds a lease and takes a core from whatever shares the machine (a serving process's
    requests)."""
    import service.mappings.service  # noqa: F401 - imported by every sync's re-evaluation
    from connectors.registry import connector_types

    connector_types()


class Scheduler:
    """Every `interval_seconds`, claims connectors for the free slots of `concurrency`
    threads and runs each on its own thread, until stopped."""

    def __init__(self, engine: SyncEngine, interval_seconds: float, concurrency: int = 2) -> None:
        self.engine = engine
        self.interval_seconds = interval_seconds
        self.concurrency = concurrency
        self._stop = threading.Event()
        #: Set when a slot frees up, so a queued run waits for no full tick.
        self._wake = threading.Event()
        self._lock = threading.Lock()
        #: Connector id -> the thread syncing it.
        self._running: dict[int, threading.Thread] = {}
        self._thread = threading.Thread(target=self._loop, name="okr-sync-scheduler", daemon=True)

    def start(self) -> None:
        load_sync_code()
        self._thread.start()

    def stop(self, grace_seconds: float = 30.0) -> None:
        """Claim nothing more; let each running sync commit its current page and stop
        (its run ends `interrupted`, a queued run resumes it); after `grace_seconds`,
        give up the connectors still stuck (a vendor call that does not answer)."""
        self._stop.set()
        self._wake.set()
        self.engine.stopping.set()
        deadline = time.monotonic() + grace_seconds
        if self._thread.is_alive():
            self._thread.join(timeout=max(0.0, deadline - time.monotonic()))
        with self._lock:
            running = dict(self._running)
        for thread in running.values():
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        with self._lock:
            stuck = [cid for cid, thread in self._running.items() if thread.is_alive()]
        for connector_id in stuck:
            log.warning("sync of connector %s did not stop in time: giving it up", connector_id)
            try:
                self.engine.abandon(connector_id)
            except Exception:  # noqa: BLE001 - its lease runs out and another worker resumes
                log.exception("could not give up connector %s", connector_id)

    def _work(self, connector_id: int) -> None:
        try:
            self.engine.work(connector_id)
        except Exception:  # noqa: BLE001 - one connector's failure must not stop the others
            log.exception("sync of connector %s crashed", connector_id)
        finally:
            with self._lock:
                self._running.pop(connector_id, None)
            self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                with self._lock:
                    free = self.concurrency - len(self._running)
                for connector_id in self.engine.claim(free):
                    thread = threading.Thread(
                        target=self._work,
                        args=(connector_id,),
                        name=f"okr-sync-run-{connector_id}",
                        daemon=True,
                    )
                    with self._lock:
                        self._running[connector_id] = thread
                    thread.start()
            except Exception:  # noqa: BLE001 - keep scheduling (e.g. database briefly down)
                log.exception("scheduler tick failed")
            self._wake.wait(self.interval_seconds)
