"""Run the `okr-sync` command line with the wall clock moved (time-machine), so tests can
start a real `okr-sync serve` on 3 January or 3 July whatever today is.

    python -m tests.wallclock 2027-01-03T09:00:00+01:00 serve --port 0
"""

from __future__ import annotations

import sys
from datetime import datetime

import time_machine


def main(argv: list[str]) -> None:
    moment = datetime.fromisoformat(argv[0])
    if moment.tzinfo is None:
        raise SystemExit("tests.wallclock needs an instant with a time zone offset")
    # tick=True: time passes from `moment` on, as it would on a machine set to that date.
    with time_machine.travel(moment, tick=True):
        from service.cli import app

        app(args=argv[1:], prog_name="okr-sync")


if __name__ == "__main__":
    main(sys.argv[1:])
