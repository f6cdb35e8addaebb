"""Registry of connector test harnesses (each wires a connector to its vendor fake)."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.connectors.harness import SourceHarness

#: Connector type name -> module defining `make_harness(tmp_path)` (a context manager).
HARNESS_MODULES = {
    "salesforce": "tests.connectors.salesforce.harness",
    "hubspot": "tests.connectors.hubspot.harness",
    "delighted": "tests.connectors.delighted.harness",
    "demo": "tests.connectors.demo.harness",
}


@contextmanager
def open_harness(name: str, tmp_path: Path) -> Iterator[SourceHarness]:
    """Start the named harness (its fake included) for the duration of the block."""
    module = importlib.import_module(HARNESS_MODULES[name])
    with module.make_harness(tmp_path) as harness:
        yield harness
