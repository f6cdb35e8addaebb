"""The `okr-sync` command line as a person or a script meets it, in real processes: the live
progress display in a pseudo-terminal, plain lines in a pipe, one-line errors with their
exit codes, `--version`, `okr-sync demo`, and a clean exit on SIGTERM."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import socket
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import httpx
import pytest
from sqlmodel import Session
from sqlmodel import select as sql_select

from service import db
from service.cli import ExitCode
from service.sync.models import Connector
from service.sync.secrets import plain
from service.workspaces.models import Workspace
from tests.conftest import TEST_SECRET_KEY, suite_wall_clock
from tests.connectors.hubspot.harness import HubSpotHarness
from tests.factories import CREATED_AT
from tests.harnesses import open_harness

REPO = Path(__file__).resolve().parents[2]
DEMO_KINDS = ("lead", "opportunity", "survey_response")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
LISTENING = re.compile(r"Uvicorn running on (http://127\.0\.0\.1:\d+)")
TIMEOUT_S = 120.0


def _command() -> list[str]:
    """`okr-sync`, under `tests.wallclock` when the suite's wall clock is moved (a
    subprocess does not inherit time-machine)."""
    wall_clock = suite_wall_clock()
    if wall_clock:
        return [sys.executable, "-m", "tests.wallclock", wall_clock]
    return [sys.executable, "-m", "service.cli"]


def _env(database_url: str, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OKR_")}
    env["OKR_DATABASE_URL"] = database_url
    # PostgreSQL has no key file beside the database: every process gets the same key.
    env["OKR_SECRET_KEYS"] = TEST_SECRET_KEY
    env.update(settings)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    # Rich reads these: keep the terminal wide enough and colours on, as a person's.
    env.pop("NO_COLOR", None)
    env["TERM"] = "xterm-256color"
    env["COLUMNS"] = "120"
    return env


def okr_sync(
    tmp_path: Path, database_url: str, *args: str, **settings: str
) -> subprocess.CompletedProcess[str]:
    """Run `okr-sync ARGS` in a pipe (stdout and stderr apart)."""
    return subprocess.run(  # noqa: S603 - our own command line
        [*_command(), *args],
        cwd=tmp_path,
        env=_env(database_url, **settings),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )


def in_terminal(tmp_path: Path, database_url: str, *args: str) -> tuple[int, str]:
    """Run `okr-sync ARGS` with a pseudo-terminal as stdin, stdout and stderr; returns the
    exit status and everything it wrote."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(  # noqa: S603 - our own command line
        [*_command(), *args],
        cwd=tmp_path,
        env=_env(database_url),
        stdin=follower,
        stdout=follower,
        stderr=follower,
        close_fds=True,
    )
    os.close(follower)
    chunks: list[bytes] = []
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.5)
            if ready:
                try:
                    data = os.read(leader, 65536)
                except OSError:  # EIO: the process closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif process.poll() is not None:
                break
        status = process.wait(timeout=TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
        os.close(leader)
    return status, b"".join(chunks).decode("utf-8", errors="replace")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A database file not created yet (no schema)."""
    return f"sqlite:///{tmp_path / 'cli.db'}"


@pytest.fixture
def demo_loaded(tmp_path: Path, database_url: str) -> str:
    """The suite's database (SQLite, or PostgreSQL with OKR_TEST_DATABASE_URL) with the
    Tartempion example loaded by `okr-sync demo`."""
    result = okr_sync(tmp_path, database_url, "demo")
    assert result.returncode == 0, result.stderr
    return database_url


def _connector_id(stderr: str) -> str:
    found = re.search(r"okr-sync sync (\d+)", stderr)
    assert found, stderr
    return found.group(1)


def test_given_a_terminal_when_syncing_then_a_live_display_shows_each_kind(
    tmp_path: Path, demo_loaded: str
) -> None:
    status, output = in_terminal(tmp_path, demo_loaded, "sync", "1")

    assert status == 0, output
    # Rich's live display: the cursor hidden while it redraws, shown again at the end.
    assert "\x1b[?25l" in output
    assert "\x1b[?25h" in output
    text = ANSI.sub("", output)
    display, _, summary = text.partition("\n{")
    for kind in DEMO_KINDS:
        row = re.search(rf"✓ {kind}\s+(\d+) pages\s+([\d,]+) records\s+([\d,]+) records/s", display)
        assert row, display
    lead = re.findall(r"lead\s+(\d+) pages\s+([\d,]+) records", display)
    # A live display: the lead row drawn before its first page, then again as pages commit.
    assert lead[0][0] == "0"
    assert len({pages for pages, _ in lead}) > 1, display
    run = json.loads("{" + summary.replace("\r\n", "\n"))
    assert run["status"] == "succeeded"
    assert int(lead[-1][1].replace(",", "")) == run["details"]["kinds"]["lead"]["fetched"]


def test_given_a_pipe_when_syncing_then_plain_lines_on_stderr_and_the_run_on_stdout(
    tmp_path: Path, demo_loaded: str
) -> None:
    result = okr_sync(tmp_path, demo_loaded, "sync", "1")

    assert result.returncode == 0, result.stderr
    assert not ANSI.search(result.stderr)
    lines = result.stderr.splitlines()
    assert lines[0] == f"sync connector 1: {', '.join(DEMO_KINDS)}"
    run = json.loads(result.stdout)
    assert run["status"] == "succeeded"
    for kind in DEMO_KINDS:
        report = run["details"]["kinds"][kind]
        assert (
            f"sync connector 1: {kind} done: {report['pages']} pages, {report['fetched']} records"
            in result.stderr
        )
    pages = [
        line for line in lines if re.match(r"sync connector 1: lead page \d+, \d+ records", line)
    ]
    assert pages, result.stderr


def test_given_an_unknown_connector_when_syncing_then_one_line_and_exit_3(
    tmp_path: Path, demo_loaded: str
) -> None:
    result = okr_sync(tmp_path, demo_loaded, "sync", "999")

    assert result.returncode == ExitCode.NOT_FOUND == 3
    assert result.stderr == "okr-sync: connector 999 not found\n"
    assert result.stdout == ""


def test_given_an_unmigrated_database_that_may_not_be_migrated_then_one_line_and_exit_4(
    tmp_path: Path, sqlite_url: str
) -> None:
    for command in (["sync", "1"], ["demo"], ["tokens", "revoke", "1"]):
        result = okr_sync(tmp_path, sqlite_url, *command, OKR_MIGRATE_ON_START="false")

        assert result.returncode == ExitCode.DATABASE == 4, result.stderr
        [line] = result.stderr.splitlines()
        assert "is not migrated" in line
        assert "okr-sync db upgrade" in line


def test_given_an_unreachable_database_then_one_line_and_exit_4_without_the_password(
    tmp_path: Path,
) -> None:
    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"postgresql://okr:pg-pass-w0rd@127.0.0.1:{port}/okr"
    key = okr_sync(tmp_path, url, "secrets", "new-key").stdout.strip()

    for command in (["sync", "1"], ["serve", "--port", "0"]):
        result = okr_sync(tmp_path, url, *command, OKR_SECRET_KEYS=key)

        assert result.returncode == ExitCode.DATABASE, result.stderr
        [line] = [x for x in result.stderr.splitlines() if x.startswith("okr-sync:")]
        assert line.startswith("okr-sync: database error: ")
        assert "Traceback" not in result.stderr
        assert "pg-pass-w0rd" not in result.stderr


def test_given_invalid_settings_then_one_line_naming_the_setting_and_exit_2(
    tmp_path: Path, sqlite_url: str
) -> None:
    result = okr_sync(tmp_path, sqlite_url, "sync", "1", OKR_LOG_FORMAT="loud")

    assert result.returncode == ExitCode.USAGE == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("okr-sync: invalid settings: OKR_LOG_FORMAT: ")


def test_given_credentials_the_vendor_refuses_when_syncing_then_one_line_and_exit_5(
    tmp_path: Path, demo_loaded: str
) -> None:
    with open_harness("hubspot", tmp_path) as hubspot:
        assert isinstance(hubspot, HubSpotHarness)
        vendor = hubspot.bad_credentials_connector()
        engine = db.make_engine(demo_loaded)
        with Session(engine) as session:
            workspace = session.exec(sql_select(Workspace)).one()
            row = Connector(
                workspace_id=workspace.id,
                name="HubSpot, revoked token",
                type=vendor.type_name,
                config=vendor.config.model_dump(mode="json"),
                secrets=plain(vendor.secrets),
                kinds=[k.value for k in hubspot.kinds],
                created_at=CREATED_AT,
            )
            session.add(row)
            session.commit()
            connector_id = row.id
        engine.dispose()

        # The fake HubSpot listens on loopback, which connectors may reach only when told.
        result = okr_sync(
            tmp_path,
            demo_loaded,
            "sync",
            str(connector_id),
            OKR_CONNECTOR_ALLOWED_HOSTS="127.0.0.1",
        )

    assert result.returncode == ExitCode.VENDOR == 5, result.stderr
    [line] = [x for x in result.stderr.splitlines() if x.startswith("okr-sync:")]
    assert line.startswith(f"okr-sync: sync {json.loads(result.stdout)['id']} of connector")
    assert "(auth: " in line
    assert "Traceback" not in result.stderr
    assert json.loads(result.stdout)["error_class"] == "auth"


def test_given_a_sync_under_way_when_interrupted_then_one_line_and_exit_130(
    tmp_path: Path, demo_loaded: str
) -> None:
    process = subprocess.Popen(  # noqa: S603 - our own command line
        [*_command(), "sync", "1"],
        cwd=tmp_path,
        env=_env(demo_loaded),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    # The first progress line is written once the command runs: Ctrl-C from then on.
    first = process.stderr.readline()
    assert first.startswith("sync connector 1: ")
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=TIMEOUT_S)

    assert process.returncode == ExitCode.INTERRUPTED == 130, stderr
    assert stderr.splitlines()[-1] == "okr-sync: interrupted"
    assert "Traceback" not in stderr
    assert stdout == ""


def test_version(tmp_path: Path, sqlite_url: str) -> None:
    result = okr_sync(tmp_path, sqlite_url, "--version")

    assert result.returncode == 0
    assert result.stdout == f"okr-sync {version('okr-sync')}\n"


def test_given_an_empty_database_when_loading_the_demo_twice_then_it_is_loaded_once(
    tmp_path: Path, database_url: str
) -> None:
    first = okr_sync(tmp_path, database_url, "demo")
    assert first.returncode == 0, first.stderr
    token = first.stdout.strip()
    assert token.startswith("okr_")
    connector = _connector_id(first.stderr)

    again = okr_sync(tmp_path, database_url, "demo")
    assert again.returncode == 0, again.stderr
    assert again.stdout == ""
    assert "already loaded" in again.stderr
    assert _connector_id(again.stderr) == connector

    synced = okr_sync(tmp_path, database_url, "sync", connector)
    assert synced.returncode == 0, synced.stderr
    assert json.loads(synced.stdout)["fetched"] > 0


def test_given_serve_running_when_sent_sigterm_then_it_shuts_down_and_exits_0(
    tmp_path: Path, sqlite_url: str
) -> None:
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(  # noqa: S603 - our own command line
            [*_command(), "serve", "--host", "127.0.0.1", "--port", "0"],
            cwd=tmp_path,
            env=_env(sqlite_url, OKR_LOAD_DEMO="false", OKR_LOG_FORMAT="text"),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            assert process.poll() is None, log.read_text()
            found = LISTENING.search(log.read_text())
            if found:
                try:
                    if httpx.get(f"{found.group(1)}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)

        process.send_signal(signal.SIGTERM)
        status = process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert status == 0, log.read_text()
    assert "Application shutdown complete" in log.read_text()
