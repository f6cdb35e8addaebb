"""The reader process: a sync's read path in a forked child (`service.sync.reader`)."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from connectors.errors import QuotaExceededError, RecordDataError
from connectors.salesforce.connector import SalesforceConnector
from service.sync import reader
from service.sync.engine import SyncEngine
from service.sync.models import RunStatus
from service.sync.reader import ReaderProcessError, read_in_child
from tests.conftest import make_settings
from tests.connectors.salesforce.harness import SalesforceHarness
from tests.harnesses import open_harness
from tests.service.sync.test_engine import (
    assert_equals_source,
    harness_runtime,
    store_connector,
)

pytestmark = pytest.mark.skipif(not reader.can_fork(), reason="needs the fork start method")


def pids(count: int) -> Iterator[int]:
    for _ in range(count):
        yield os.getpid()


def test_items_are_produced_in_a_child_process_whose_state_the_parent_adopts() -> None:
    adopted: list[Any] = []
    items = list(read_in_child(lambda: pids(5), lambda: ("state", os.getpid()), adopted.append))
    assert len(items) == 5
    assert len(set(items)) == 1
    assert items[0] != os.getpid()
    assert adopted == [("state", items[0])]


def drain(items: Iterator[int], into: list[int]) -> None:
    for item in items:
        into.append(item)


def fail_after(count: int, error: Exception) -> Iterator[int]:
    yield from range(count)
    raise error


def test_an_error_in_the_child_is_raised_in_the_parent_with_its_details() -> None:
    adopted: list[Any] = []
    got: list[int] = []
    error = QuotaExceededError("daily API requests spent", used=15_000, limit=15_000)
    with pytest.raises(QuotaExceededError) as raised:
        drain(read_in_child(lambda: fail_after(2, error), lambda: "after", adopted.append), got)
    assert got == [0, 1]
    assert raised.value.message == "daily API requests spent"
    assert (raised.value.used, raised.value.limit) == (15_000, 15_000)
    assert raised.value.error_class == "quota_exceeded"
    assert adopted == ["after"], "the state is adopted before the error is raised"


def test_an_error_pickle_cannot_rebuild_keeps_its_message_and_class() -> None:
    # RecordDataError's constructor takes two arguments: pickle cannot rebuild it.
    error = RecordDataError("00Q1", "unreadable CreatedDate")
    with pytest.raises(ReaderProcessError) as raised:
        list(read_in_child(lambda: fail_after(1, error), lambda: None, lambda _s: None))
    assert raised.value.message == "unreadable CreatedDate"
    assert raised.value.error_class == RecordDataError.error_class


def die_after(count: int) -> Iterator[int]:
    yield from range(count)
    time.sleep(0.2)  # the items are on their way before the process ends
    os._exit(3)


def test_a_child_that_dies_fails_the_read_naming_its_exit_status() -> None:
    got: list[int] = []
    with pytest.raises(ReaderProcessError, match=r"exited \(status 3\)"):
        drain(read_in_child(lambda: die_after(2), lambda: None, lambda _s: None), got)
    assert got == [0, 1]


def endless(log: Path) -> Iterator[tuple[int, bytes]]:
    """Page-sized items (a pipe holds less than one), each logged as it is produced."""
    for n in itertools.count():
        with log.open("a") as f:
            f.write(f"{n}\n")
        yield os.getpid(), b"x" * 300_000


def test_stopping_early_stops_the_child(tmp_path: Path) -> None:
    items = read_in_child(lambda: endless(tmp_path / "log"), lambda: None, lambda _s: None)
    child, _ = next(items)
    os.kill(child, 0)  # alive while the parent reads
    items.close()  # type: ignore[attr-defined]
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)


def test_the_child_reads_only_a_few_pages_ahead_of_the_parent(tmp_path: Path) -> None:
    log = tmp_path / "log"
    items = read_in_child(lambda: endless(log), lambda: None, lambda _s: None)
    next(items)
    time.sleep(1.0)  # the parent stores a slow page; the child must wait, not read on
    produced = len(log.read_text().splitlines())
    items.close()  # type: ignore[attr-defined]
    # The one taken, those queued in the child, one in the pipe, one being queued.
    assert produced <= 1 + reader._PAGES_AHEAD + 2  # noqa: SLF001


# ------------------------------------------------------------------- through the engine


@pytest.fixture
def salesforce(tmp_path: Path) -> Iterator[SalesforceHarness]:
    with open_harness("salesforce", tmp_path) as harness:
        assert isinstance(harness, SalesforceHarness)
        yield harness


def seed(harness: SalesforceHarness) -> None:
    """Several pages of each kind."""
    for kind in harness.kinds:
        harness.seed(kind, 30)
    harness.set_page_size(8)


def sync_engine(
    engine: Engine, database_url: str, harness: SalesforceHarness, **settings: Any
) -> SyncEngine:
    return SyncEngine(
        engine,
        make_settings(database_url, sync_overlap_seconds=60, **settings),
        clock=harness.now,
        runtime_factory=harness_runtime(harness),
    )


def test_an_initial_salesforce_sync_reads_in_the_reader_process_and_keeps_its_session(
    engine: Engine, database_url: str, salesforce: SalesforceHarness
) -> None:
    seed(salesforce)
    connector_id = store_connector(engine, salesforce)
    sync = sync_engine(engine, database_url, salesforce)

    run = sync.run(connector_id)

    assert run.status == RunStatus.succeeded, run.error_message
    assert {k: v["reader"] for k, v in run.details["kinds"].items()} == {
        "lead": "process",
        "opportunity": "process",
    }
    assert run.details["kinds"]["lead"]["pages"] > 1
    # Each kind was read in its own child; the second started with the session the first
    # logged in with, and the run counts the children's requests.
    assert salesforce.fake.requests_to("token") == 1
    assert run.requests == len(salesforce.fake.log)
    assert_equals_source(engine, connector_id, salesforce)

    for kind in salesforce.kinds:
        salesforce.mutate(kind)
    incremental = sync.run(connector_id)
    assert incremental.status == RunStatus.succeeded, incremental.error_message
    assert {v["reader"] for v in incremental.details["kinds"].values()} == {"thread"}
    assert_equals_source(engine, connector_id, salesforce)


def test_with_the_reader_process_off_an_initial_sync_reads_in_a_thread(
    engine: Engine, database_url: str, salesforce: SalesforceHarness
) -> None:
    seed(salesforce)
    connector_id = store_connector(engine, salesforce)
    sync = sync_engine(engine, database_url, salesforce, sync_reader_process=False)

    run = sync.run(connector_id)

    assert run.status == RunStatus.succeeded, run.error_message
    assert {v["reader"] for v in run.details["kinds"].values()} == {"thread"}
    assert_equals_source(engine, connector_id, salesforce)


def test_a_reader_process_killed_mid_sync_fails_the_run_and_the_next_run_resumes(
    engine: Engine,
    database_url: str,
    salesforce: SalesforceHarness,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seed(salesforce)
    connector_id = store_connector(engine, salesforce)
    sync = sync_engine(engine, database_url, salesforce)
    real_read = SalesforceConnector.read
    parent = os.getpid()

    def read_then_die(self: SalesforceConnector, *args: Any, **kwargs: Any) -> Iterator[Any]:
        for number, page in enumerate(real_read(self, *args, **kwargs)):
            if number == 2 and os.getpid() != parent:
                time.sleep(0.2)  # two pages reach the parent first
                os.kill(os.getpid(), 9)  # the OOM killer, say
            yield page

    monkeypatch.setattr(SalesforceConnector, "read", read_then_die)
    failed = sync.run(connector_id)
    assert failed.status == RunStatus.failed
    assert failed.error_class == "reader_process"
    assert "status -9" in (failed.error_message or "")
    assert failed.details["kinds"]["lead"]["pages"] == 2

    monkeypatch.setattr(SalesforceConnector, "read", real_read)
    resumed = sync.run(connector_id)
    assert resumed.status == RunStatus.succeeded, resumed.error_message
    assert resumed.details["kinds"]["lead"]["resumed"] is True
    assert_equals_source(engine, connector_id, salesforce)
