"""End to end, as a new user would: `okr-sync serve` on a fresh SQLite file, the Tartempion
demo over HTTP, then a restart that must not load the demo twice."""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import suite_wall_clock

API = "/api/v1"
DEMO = {"X-Workspace": "tartempion"}
STARTUP_TIMEOUT_S = 120.0
REPO = Path(__file__).resolve().parents[2]
#: uvicorn's startup line, which carries the port the OS picked.
LISTENING = re.compile(r"Uvicorn running on (http://127\.0\.0\.1:\d+)")
DEMO_TOKEN = re.compile(r"^    (okr_\S+)$", re.M)
NPS_TITLE = "NPS above 80 for new customers"


def _command(wall_clock: str | None) -> list[str]:
    """`okr-sync`, under `tests.wallclock` when the wall clock is moved (the suite's
    `--wall-clock`, or a test's own date), since a subprocess does not inherit it."""
    if wall_clock:
        return [sys.executable, "-m", "tests.wallclock", wall_clock]
    script = Path(sys.executable).parent / "okr-sync"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "service.cli"]


@dataclass(frozen=True)
class Served:
    """A running `okr-sync serve`: its base URL, the demo's admin token when this start
    loaded the demo, the process and its log."""

    base: str
    token: str | None
    process: subprocess.Popen[bytes]
    log: Path


@contextmanager
def serving(
    tmp_path: Path,
    database_url: str,
    wall_clock: str | None = None,
    settings: dict[str, str] | None = None,
) -> Iterator[tuple[str, str | None]]:
    """Run `okr-sync serve` on a port the OS picks until it is ready; yield its base URL
    and the demo's token; stop it whatever happens. `settings`: extra `OKR_*` variables."""
    with served_process(tmp_path, database_url, wall_clock, settings) as served:
        yield served.base, served.token


@contextmanager
def served_process(
    tmp_path: Path,
    database_url: str,
    wall_clock: str | None = None,
    settings: dict[str, str] | None = None,
) -> Iterator[Served]:
    """`serving`, yielding the process too (for a test that signals it itself)."""
    wall_clock = wall_clock or suite_wall_clock()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OKR_")}
    env["OKR_DATABASE_URL"] = database_url
    env.update(settings or {})
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    log = tmp_path / f"serve-{time.monotonic_ns()}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(  # noqa: S603 - our own console script
            # Port 0: the server binds a free port itself and logs it (no probe-then-bind
            # race with other tests).
            [*_command(wall_clock), "serve", "--host", "127.0.0.1", "--port", "0"],
            cwd=tmp_path,  # no stray .env from the repository
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + STARTUP_TIMEOUT_S
            base = None
            while True:
                if process.poll() is not None:
                    pytest.fail(
                        f"okr-sync serve exited with {process.returncode}:\n{log.read_text()}"
                    )
                if base is None:
                    found = LISTENING.search(log.read_text())
                    base = found.group(1) if found else None
                try:
                    if base and httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"okr-sync serve not ready in {STARTUP_TIMEOUT_S}s:\n{log.read_text()}"
                    )
                time.sleep(0.2)
            # The demo's admin token is printed once, at the start that loads it.
            token = DEMO_TOKEN.search(log.read_text())
            yield Served(base, token.group(1) if token else None, process, log)
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)  # uvicorn's graceful shutdown
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=15)


def _all(client: httpx.Client, resource: str, **params: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = params | ({"cursor": cursor} if cursor else {})
        response = client.get(f"{API}/{resource}", params=query, headers=DEMO)
        response.raise_for_status()
        page = response.json()
        rows.extend(page["items"])
        cursor = page["next_cursor"]
        if not cursor:
            return rows


def test_given_a_fresh_install_when_served_then_the_demo_answers_and_survives_a_restart(
    tmp_path: Path,
) -> None:
    database_url = f"sqlite:///{tmp_path / 'okr-sync.db'}"
    with serving(tmp_path, database_url) as (base, token):
        assert token is not None
        auth = {"Authorization": f"Bearer {token}"}
        client = httpx.Client(base_url=base, timeout=30, headers=auth)
        assert httpx.get(f"{base}{API}/objectives", headers=DEMO).status_code == 401
        assert client.get("/healthz").json() == {"status": "ok"}
        objectives = _all(client, "objectives")
        assert len(objectives) == 2
        key_results = []
        for objective in objectives:
            key_results += _all(client, "key-results", objective=objective["id"])
        assert len(key_results) == 5
        for kr in key_results:
            progress = client.get(f"{API}/key-results/{kr['id']}/progress", headers=DEMO)
            assert progress.status_code == 200, progress.text
            body = progress.json()
            assert body["status"] in {"no_data", "achieved", "on_track", "at_risk", "off_track"}
            assert 0 <= body["expected_progress"] <= 1
        before = {r: len(_all(client, r)) for r in ("teams", "periods", "initiatives")}
    # No OKR_SECRET_KEYS: the first start made a private key file beside the database, and
    # said so once.
    key_file = tmp_path / "okr-sync.key"
    assert key_file.exists()
    if os.name == "posix":
        for private in (key_file, tmp_path / "okr-sync.db"):
            assert stat.S_IMODE(private.stat().st_mode) == 0o600, private
    (first_log,) = tmp_path.glob("serve-*.log")
    assert f"created {key_file}" in first_log.read_text()
    key = key_file.read_bytes()

    with serving(tmp_path, database_url) as (base, again):
        assert again is None  # printed once: the demo is not loaded twice
        client = httpx.Client(base_url=base, timeout=30, headers=auth)
        workspaces = client.get(f"{API}/workspaces").json()["items"]
        assert [w["slug"] for w in workspaces] == ["tartempion"]
        assert len(_all(client, "objectives")) == 2
        assert len(_all(client, "key-results")) == 5
        assert {r: len(_all(client, r)) for r in ("teams", "periods", "initiatives")} == before
        assert before["initiatives"] == 3
    assert key_file.read_bytes() == key
    second_log = next(p for p in tmp_path.glob("serve-*.log") if p != first_log)
    assert "created" not in second_log.read_text()


@pytest.mark.parametrize("wall_clock", ["2027-01-03T09:00:00+01:00", "2027-07-03T09:00:00+02:00"])
def test_given_serve_started_in_january_or_july_then_every_key_result_has_a_value_and_status(
    tmp_path: Path, wall_clock: str
) -> None:
    database_url = f"sqlite:///{tmp_path / 'okr-sync.db'}"
    with (
        serving(tmp_path, database_url, wall_clock) as (base, token),
        httpx.Client(
            base_url=base, timeout=30, headers={"Authorization": f"Bearer {token}"}
        ) as client,
    ):
        tree = client.get(f"{API}/progress", headers=DEMO)
        assert tree.status_code == 200, tree.text
        assert tree.json()["period"] == wall_clock[:4]
        krs = [k for o in tree.json()["objectives"] for k in o["key_results"]]
        assert len(krs) == 5
        for kr in krs:
            if kr["value"] is None:
                # Only NPS may wait for its first answer, and says so.
                assert (kr["title"], kr["status"]) == (NPS_TITLE, "no_data"), kr
            else:
                assert kr["status"] in {"achieved", "on_track", "at_risk", "off_track"}, kr
