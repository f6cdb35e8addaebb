"""Sync jobs, timed on real processes: how fast `POST /connectors/{id}/sync` answers while
the vendor never answers, how long a SIGKILLed worker's syncs wait before another worker
takes them over, and how long `okr-sync worker` takes to exit on SIGTERM mid-sync.

1. `okr-sync serve` (role `all`, its scheduler running) on a fresh database; 50 HubSpot
   connectors point at a loopback socket that accepts connections and never answers a
   byte. Each is posted once (the run is queued), then the first one 150 times more while
   the scheduler's threads wait on the silent vendor (the running run is answered).
   Then SIGTERM: the server exits after OKR_SHUTDOWN_GRACE_SECONDS, the stuck runs handed
   back.
2. On PostgreSQL (`--database-url`): 20 HubSpot connectors on the suite's fake HubSpot
   (in this process, every page delayed `--page-delay` s), due now; `okr-sync worker` A
   starts, B starts once A is mid-sync, A is killed with SIGKILL. Printed: seconds from
   the kill to the start of each resuming run (B's), with OKR_SYNC_LEASE_SECONDS and
   OKR_SCHEDULER_TICK_SECONDS at their defaults unless given. Then one more sync is
   queued and B gets SIGTERM mid-sync: seconds to exit, and its exit code.

    python bench/sync_jobs.py [--database-url postgresql://root@127.0.0.1:5432/test]
        [--lease-seconds 60] [--tick-seconds 5]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.sync_throughput import fresh_pg  # noqa: E402 (after the path is set)

OKR_SYNC = Path(sys.executable).parent / "okr-sync"
KEY = "ZmDfcTF7_60GrrY167zsiPd67pEvs0aGOv2oS1MXFcA="
TOKEN = "pat-na1-0b1e2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"


def request(base: str, token: str, method: str, path: str, body: Any = None) -> Any:
    import json

    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        f"{base}/api/v1{path}",
        data=data,
        method=method,
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "X-Workspace": "tartempion",
        },
    )
    with urllib.request.urlopen(req, timeout=60) as answer:
        return json.loads(answer.read() or b"null")


def env_for(database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OKR_")}
    env.update(
        {
            "OKR_DATABASE_URL": database_url,
            "OKR_SECRET_KEYS": KEY,
            "OKR_CONNECTOR_ALLOWED_HOSTS": "127.0.0.1",
            "OKR_LOG_FORMAT": "text",
            "OKR_RATE_LIMIT_REQUESTS_PER_MINUTE": "1000000",
            # Every connector here uses one token (one account): the cap on syncs per
            # account would run them one at a time, and this measures takeover and
            # shutdown with several in flight.
            "OKR_SYNC_MAX_PER_ACCOUNT": "1000",
        }
        | extra
    )
    return env


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


def post_latency(database_url: str, tmp: Path) -> None:
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(64)
    port = hole.getsockname()[1]
    log_path = tmp / "serve.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(  # noqa: S603 - our own console script
            [str(OKR_SYNC), "serve", "--port", "0"],
            env=env_for(database_url, OKR_CONNECTOR_MAX_ATTEMPTS="1"),
            cwd=tmp,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        base = token = None
        deadline = time.monotonic() + 180
        while base is None or token is None:
            text = log_path.read_text()
            listening = re.search(r"Uvicorn running on (http://127\.0\.0\.1:\d+)", text)
            found = re.search(r"^    (okr_\S+)$", text, re.M)
            base = listening.group(1) if listening else None
            token = found.group(1) if found else None
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit(f"serve did not start:\n{text}")
            time.sleep(0.2)
        ids = [
            request(
                base,
                token,
                "POST",
                "/connectors",
                {
                    "name": f"silent {n}",
                    "type": "hubspot",
                    "config": {"base_url": f"http://127.0.0.1:{port}"},
                    "secrets": {"access_token": TOKEN},
                    "kinds": ["contact"],
                    "enabled": False,
                },
            )["id"]
            for n in range(50)
        ]
        queued: list[float] = []
        for connector_id in ids:
            started = time.perf_counter()
            request(base, token, "POST", f"/connectors/{connector_id}/sync")
            queued.append(time.perf_counter() - started)
        time.sleep(6)  # the scheduler's threads are now waiting on the silent vendor
        again: list[float] = []
        statuses = set()
        for _ in range(150):
            started = time.perf_counter()
            run = request(base, token, "POST", f"/connectors/{ids[0]}/sync")
            again.append(time.perf_counter() - started)
            statuses.add(run["status"])
        for name, values in (("queue a run", queued), (f"answer the {statuses} run", again)):
            ms = [v * 1000 for v in values]
            print(
                f"POST /sync, {name}: n={len(ms)} p50 {statistics.median(ms):.1f} ms, "
                f"p95 {pct(ms, 0.95):.1f} ms, max {max(ms):.1f} ms"
            )
        stopping = time.monotonic()
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=120)
        print(
            f"serve SIGTERM with syncs stuck on the vendor: exit {code} after "
            f"{time.monotonic() - stopping:.2f} s (OKR_SHUTDOWN_GRACE_SECONDS default)"
        )
    finally:
        if server.poll() is None:
            server.kill()
        hole.close()


def takeover(
    database_url: str, tmp: Path, lease: str | None, tick: str | None, delay: float
) -> None:
    from sqlmodel import Session, col, select

    from connectors.base import RecordKind
    from service import db
    from service.clock import utc_now
    from service.settings import Settings
    from service.sync import secrets as secret_store
    from service.sync.models import Connector, RunStatus, SyncRun, SyncState
    from service.workspaces.models import Workspace
    from tests.connectors.hubspot.harness import make_harness
    from tests.fakes.hubspot import Fault, on_path

    engine = db.make_engine(database_url)
    db.upgrade(engine)
    settings = Settings(database_url=database_url, secret_keys=KEY)
    extra = {"OKR_MIGRATE_ON_START": "false"}
    if lease:
        extra["OKR_SYNC_LEASE_SECONDS"] = lease
    if tick:
        extra["OKR_SCHEDULER_TICK_SECONDS"] = tick
    env = env_for(database_url, **extra)

    def runs() -> list[SyncRun]:
        with Session(engine) as session:
            return list(session.exec(select(SyncRun).order_by(col(SyncRun.id))).all())

    def mid_sync() -> list[SyncRun]:
        with Session(engine) as session:
            return list(
                session.exec(
                    select(SyncRun)
                    .join(SyncState, col(SyncState.connector_id) == SyncRun.connector_id)
                    .where(SyncRun.status == RunStatus.running, col(SyncState.resume).is_not(None))
                ).all()
            )

    def wait(what: str, condition: Any, timeout: float = 600) -> Any:
        deadline = time.monotonic() + timeout
        while not (found := condition()):
            if time.monotonic() > deadline:
                raise SystemExit(f"{what}: not within {timeout} s")
            time.sleep(0.05)
        return found

    def worker(n: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen(  # noqa: S603 - our own console script
            [str(OKR_SYNC), "worker"],
            env=env,
            cwd=tmp,
            stdout=(tmp / f"worker-{n}.log").open("wb"),
            stderr=subprocess.STDOUT,
        )

    with make_harness(tmp) as hubspot:
        hubspot.seed(RecordKind.contact, 60)
        hubspot.set_page_size(5)
        hubspot.fake.inject(Fault(when=on_path("/crm/"), delay=delay, times=None))
        now = utc_now()
        with Session(engine) as session:
            ws = Workspace(slug="bench", name="Bench", created_at=now)
            session.add(ws)
            session.flush()
            assert ws.id is not None
            for n in range(20):
                session.add(
                    Connector(
                        workspace_id=ws.id,
                        name=f"HubSpot {n}",
                        type="hubspot",
                        config={"base_url": hubspot.served.base_url},
                        secrets=secret_store.seal({"access_token": TOKEN}, settings),
                        kinds=["contact"],
                        sync_interval_seconds=86400,
                        created_at=now,
                        next_run_at=now,
                    )
                )
            session.commit()
        a = worker(0)
        victims = wait("A mid-sync", mid_sync)
        b = worker(1)
        time.sleep(1.0)
        a.send_signal(signal.SIGKILL)
        a.wait()
        killed = utc_now()
        dead = victims[0].worker
        wait(
            "every connector synced",
            lambda: (
                len({r.connector_id for r in runs() if r.status == RunStatus.succeeded}) == 20
                and not [r for r in runs() if r.status in (RunStatus.queued, RunStatus.running)]
            ),
        )
        by_id = {r.id: r for r in runs()}
        delays = [
            (by_id[r.resumed_by_run_id].started_at - killed).total_seconds()  # type: ignore[index,operator]
            for r in by_id.values()
            if r.worker == dead and r.error_class == "interrupted" and r.resumed_by_run_id
        ]
        lease_s = lease or settings.sync_lease_seconds
        tick_s = tick or settings.scheduler_tick_seconds
        print(
            f"takeover after SIGKILL ({len(delays)} runs; lease {lease_s} s, tick {tick_s} s):"
            f" {', '.join(f'{d:.2f}' for d in delays)} s"
        )
        with Session(engine) as session:
            row = session.exec(select(Connector)).first()
            assert row is not None
            row.next_run_at = utc_now()
            session.commit()
        wait("B mid-sync", mid_sync)
        stopping = time.monotonic()
        b.send_signal(signal.SIGTERM)
        code = b.wait(timeout=120)
        print(f"worker SIGTERM mid-sync: exit {code} after {time.monotonic() - stopping:.2f} s")
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--lease-seconds", default=None)
    parser.add_argument("--tick-seconds", default=None)
    parser.add_argument("--page-delay", type=float, default=0.5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        url = (
            fresh_pg(args.database_url, "okr_bench_sync_jobs_api")
            if args.database_url
            else f"sqlite:///{tmp / 'api.db'}"
        )
        post_latency(url, tmp)
        if args.database_url:
            url = fresh_pg(args.database_url, "okr_bench_sync_jobs_workers")
            takeover(url, tmp, args.lease_seconds, args.tick_seconds, args.page_delay)


if __name__ == "__main__":
    main()
