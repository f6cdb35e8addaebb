"""One clock: nothing in `service/` or `connectors/` reads the wall clock except
`service/clock.py`, so every timestamp follows the injected clock."""

from __future__ import annotations

import ast
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from service.clock import in_utc

ROOT = Path(__file__).resolve().parents[2]
ALLOWED = {ROOT / "service" / "clock.py"}
#: Calls that read the wall clock: `datetime.now()`, `date.today()`, `time.time()`...
WALL_CLOCK_READS = {
    ("datetime", "now"),
    ("datetime", "utcnow"),
    ("datetime", "today"),
    ("date", "today"),
    ("time", "time"),
    ("time", "time_ns"),
    ("time", "localtime"),
    ("time", "gmtime"),
}


def _wall_clock_reads(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            name = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", "")
            if (name, node.func.attr) in WALL_CLOCK_READS:
                found.append(f"{path}:{node.lineno} {name}.{node.func.attr}()")
    return found


def test_given_the_source_tree_when_scanned_then_only_service_clock_reads_the_wall_clock() -> None:
    sources = sorted((ROOT / "service").rglob("*.py")) + sorted((ROOT / "connectors").rglob("*.py"))
    assert len(sources) > 40
    reads = [hit for path in sources if path not in ALLOWED for hit in _wall_clock_reads(path)]
    assert reads == []


def test_given_the_scanner_when_fed_a_wall_clock_read_then_it_finds_it(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import datetime, time\nx = datetime.datetime.now()\ny = time.time()\n")
    assert [h.split(" ")[1] for h in _wall_clock_reads(sample)] == [
        "datetime.now()",
        "time.time()",
    ]


@pytest.mark.parametrize("minutes", [1, 5, 90])
def test_given_a_clock_in_paris_on_the_spring_forward_night_when_adding_minutes_then_utc(
    minutes: int,
) -> None:
    # 02:59 Paris + 5 min as aware Paris datetimes gives 03:04 CEST, an hour *earlier*.
    paris = datetime(2027, 3, 28, 1, 59, tzinfo=ZoneInfo("Europe/Paris"))
    read = in_utc(lambda: paris)()
    assert read.tzinfo is UTC
    assert read + timedelta(minutes=minutes) > read
    assert (read + timedelta(minutes=minutes)) - paris == timedelta(minutes=minutes)
