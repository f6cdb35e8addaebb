"""Schemathesis against the real app, in process: does the API answer what its OpenAPI
document says, and never a 5xx?

Run from CI (`.ci/run`) as `python -m tests.service.openapi_fuzz`; it prints schemathesis'
own report and exits non-zero on any failure. The app runs over ASGI on a temporary SQLite
database with the demo workspace loaded, acting with a deployment admin token, through
every phase (examples, coverage, fuzzing, stateful) with a bounded number of examples.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import schemathesis
from schemathesis.cli.commands.run.context import ExecutionContext
from schemathesis.cli.commands.run.handlers.output import OutputHandler
from schemathesis.cli.events import LoadingFinished, LoadingStarted
from schemathesis.cli.executor import execute_event_loop
from schemathesis.engine import from_schema
from schemathesis.engine.events import EngineEvent

from service import db
from service.main import create_app, startup
from tests.conftest import issue_token, make_settings

PHASES = ("examples", "coverage", "fuzzing", "stateful")
#: `all` but the checks that judge the API by what random data means, not by the
#: document: random ids name nothing (404), so valid-looking data is not always accepted.
EXCLUDED_CHECKS = ("positive_data_acceptance",)
SPEC_OPERATIONS = [
    "POST /api/v1/mappings",
    "POST /api/v1/mappings/preview",
    "PUT /api/v1/mappings/{mapping_id}",
]


def _events(app: Any, config: schemathesis.Config) -> Iterator[EngineEvent]:
    """The engine's events, after the loading ones the command line reports on."""
    started = LoadingStarted(location="/openapi.json")
    yield started
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)
    yield LoadingFinished.from_schema(
        schema,
        location="/openapi.json",
        start_time=started.timestamp,
        base_url=schema.get_base_url(),
    )
    yield from from_schema(schema).execute()


def run(max_examples: int, max_steps: int, seed: int) -> int:
    """Run schemathesis once; the exit code it would give on the command line."""
    # In memory where the system has it: every request writes (the token's last use).
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else None) as tmp:
        url = f"sqlite:///{Path(tmp) / 'fuzz.db'}"
        # Thousands of requests a minute with one token: the rate limit is not under test.
        settings = make_settings(
            url, load_demo=True, migrate_on_start=True, rate_limit_requests_per_minute=10**9
        )
        engine = db.make_engine(url)
        startup(settings, engine)
        token = issue_token(engine, name="schemathesis")
        app = create_app(settings, engine, run_startup=False)
        config = schemathesis.Config.from_dict(
            {
                "seed": seed,
                # Each run from scratch, as CI's: nothing learnt by an earlier one.
                "cache": {"enabled": False},
                "headers": {"Authorization": f"Bearer {token}"},
                "generation": {"max-examples": max_examples},
                "phases": {
                    **{
                        phase: {"enabled": phase in PHASES}
                        for phase in ("examples", "coverage", "fuzzing", "stateful")
                    },
                    "stateful": {"enabled": "stateful" in PHASES, "max-steps": max_steps},
                },
                "checks": {
                    "enabled": True,
                    **{name: {"enabled": False} for name in EXCLUDED_CHECKS},
                },
                "operations": [
                    {
                        # A metric spec is a deep tagged union: the coverage phase walks
                        # thousands of variants of it (4,000+ requests for each operation
                        # taking one, most of the run). These are fuzzed with more examples.
                        "include-name": SPEC_OPERATIONS,
                        "phases": {"coverage": {"enabled": False}},
                        "generation": {"max-examples": 4 * max_examples},
                    },
                    {
                        # The coverage phase of schemathesis 4.32.5 sends PATCH bodies
                        # "missing required property X" and expects a 4xx, though the
                        # document marks no property of these bodies required.
                        "include-method": "PATCH",
                        "checks": {"negative_data_rejection": {"enabled": False}},
                    },
                    {
                        # An event stream never ends, and schemathesis reads a response
                        # to its end: tests/service/progress/test_stream.py covers it.
                        "include-path": "/api/v1/stream",
                        "enabled": False,
                    },
                    {
                        # PUT, GET and DELETE of /mappings/preview are those of the mapping
                        # whose id is "preview": a 422 naming `mapping_id`, not a 405.
                        "include-path": "/api/v1/mappings/preview",
                        "checks": {"unsupported_method": {"enabled": False}},
                    },
                ],
            }
        )
        project = config.projects.get_default()
        started = time.monotonic()
        try:
            execute_event_loop(
                _events(app, config),
                config=project,
                args=[],
                params={},
                output_handler=OutputHandler(config=project),
                context_factory=lambda cfg: ExecutionContext(config=cfg),
            )
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        else:
            code = 0
        finally:
            engine.dispose()
        print(
            f"schemathesis {schemathesis.__version__}: phases {', '.join(PHASES)}; "
            f"max {max_examples} examples an operation, {max_steps} stateful steps; "
            f"seed {seed}; {time.monotonic() - started:.0f}s"
        )
        return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--max-examples", type=int, default=8)
    parser.add_argument("--max-steps", type=int, default=10)
    parser.add_argument("--seed", type=int, default=20260702)
    args: Any = parser.parse_args(argv)
    return run(args.max_examples, args.max_steps, args.seed)


if __name__ == "__main__":
    sys.exit(main())
