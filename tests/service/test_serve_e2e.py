"""End to end, as a new user would: `okr-sync serve` on a fresh SQLite file, the Tartempion
demo over HTTP, then a restart that must not load the demo twice."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

API = "/api/v1"
DEMO = {"X-Workspace": "tartempion"}
STARTUP_TIMEOUT_S = 120.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _command() -> list[str]:
    script = Path(sys.executable).parent / "okr-sync"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "service.cli"]


@contextmanager
def serving(tmp_path: Path, database_url: str) -> Iterator[str]:
    """Run `okr-sync serve` until it is ready; yield its base URL; stop it whatever happens."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OKR_")}
    env["OKR_DATABASE_URL"] = database_url
    log = tmp_path / f"serve-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(  # noqa: S603 - our own console script
            [*_command(), "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=tmp_path,  # no stray .env from the repository
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + STARTUP_TIMEOUT_S
            while True:
                if process.poll() is not None:
                    pytest.fail(
                        f"okr-sync serve exited with {process.returncode}:\n{log.read_text()}"
                    )
                try:
                    if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"okr-sync serve not ready in {STARTUP_TIMEOUT_S}s:\n{log.read_text()}"
                    )
                time.sleep(0.2)
            yield base
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
    with serving(tmp_path, database_url) as base, httpx.Client(base_url=base, timeout=30) as client:
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

    with serving(tmp_path, database_url) as base, httpx.Client(base_url=base, timeout=30) as client:
        workspaces = client.get(f"{API}/workspaces").json()["items"]
        assert [w["slug"] for w in workspaces] == ["tartempion"]
        assert len(_all(client, "objectives")) == 2
        assert len(_all(client, "key-results")) == 5
        assert {r: len(_all(client, r)) for r in ("teams", "periods", "initiatives")} == before
        assert before["initiatives"] == 3
