"""Polled progress reads: the real service against a bare FastAPI app, driven by wrk.

Starts, each on uvicorn with one worker (what `okr-sync serve` runs):
  * the real service on a fresh SQLite database with the Tartempion demo loaded (its
    admin token is read from the first start's output), as deployed (`--role split`, the
    default): `okr-sync serve` with OKR_ROLE=api beside an `okr-sync worker` process that
    runs the syncs (the demo syncs every 60 s); or one `okr-sync serve` that also runs
    them (`--role all`);
  * a bare FastAPI app answering a constant JSON body of the same size as the service's
    answer, from an `async def` route.

Then drives each with wrk at 1, 50 and 200 connections (one wrk thread; a Lua script sets
`Authorization`, and `If-None-Match` for the 304 runs, and counts the statuses) and prints
req/s, p50, p99 and errors for: a key result's progress (200 and 304), the period tree
(200 and 304), and the bare app at both sizes. Errors are requests without an answer or
answered 4xx/5xx; "Changed" counts 200s where a 304 was asked for (the data moved).

Then the 200-connection runs again while the service syncs 200,000 leads (`--sync-leads`)
from the fake Salesforce org of `sync_throughput.py` (its own process, HTTPS on loopback)
into the demo workspace (asked for with POST /sync, run by whichever process runs syncs),
until the sync ends; the sync's records/s under load is printed.

Prerequisite: wrk (Debian: `apt-get install -y wrk`).

    python bench/progress_polling.py [--duration 10] [--connections 1,50,200]
        [--sync-leads 200000] [--role split|all]

The per-token rate limit is raised for the run (OKR_RATE_LIMIT_REQUESTS_PER_MINUTE): one
token makes every request here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OKR_SYNC = Path(sys.executable).parent / "okr-sync"

LUA = """
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) wanted = 0; other = 0; failed = 0 end
wrk.headers["Authorization"] = %(authorization)s
%(if_none_match)s
function response(status, headers, body)
  if status == %(expected)d then wanted = wanted + 1
  elseif status >= 400 then failed = failed + 1
  else other = other + 1 end
end
function done(summary, latency, requests)
  local w, o, f = 0, 0, 0
  for _, t in ipairs(threads) do
    w = w + t:get("wanted"); o = o + t:get("other"); f = f + t:get("failed")
  end
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests":%%d,"duration_us":%%d,"p50_us":%%d,"p99_us":%%d,' ..
    '"socket_errors":%%d,"expected":%%d,"other_status":%%d,"failed":%%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, w, o, f))
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not answer within {seconds} s")


def get(url: str, token: str) -> tuple[bytes, str]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as r:
        return r.read(), r.headers.get("ETag", "")


def serve_bare(size: int, port: int) -> None:
    """Subprocess: a bare FastAPI app answering `size` bytes of constant JSON."""
    import uvicorn
    from fastapi import FastAPI, Response

    envelope = len(b'{"pad":""}')
    body = json.dumps({"pad": "x" * max(0, size - envelope)}).encode()
    app = FastAPI()

    @app.get("/x")
    async def constant() -> Response:
        return Response(body, media_type="application/json")

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="info")


def wrk(
    url: str, connections: int, seconds: int, token: str, etag: str | None, tmp: Path
) -> dict[str, Any]:
    script = tmp / "poll.lua"
    script.write_text(
        LUA
        % {
            "authorization": json.dumps(f"Bearer {token}"),
            "if_none_match": f'wrk.headers["If-None-Match"] = {json.dumps(etag)}' if etag else "",
            "expected": 304 if etag else 200,
        }
    )
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s", "-s", str(script)]
        + [url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = re.search(r"^RESULT (.*)$", out, re.M)
    if found is None:
        raise SystemExit(f"wrk printed no result:\n{out}")
    result: dict[str, Any] = json.loads(found.group(1))
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    # Errors: no answer, or a 4xx/5xx. A 200 where a 304 was asked for is not one (the
    # data changed meanwhile); it is counted apart.
    result["errors"] = result["socket_errors"] + result["failed"]
    return result


def machine() -> str:
    mem = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f", {int(line.split()[1]) / 1024 / 1024:.0f} GiB"
    except OSError:
        pass
    load = ", load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    return f"{os.cpu_count()} cores{mem}{load}, Python {platform.python_version()}"


def row(c: int, label: str, size: int, r: dict[str, Any], baseline: dict[str, Any]) -> None:
    ratio = r["rps"] / baseline["rps"]
    print(
        f"| {c} | {label} | {size:,} | {r['rps']:,.0f} | {r['p50_us'] / 1000:.2f} "
        f"| {r['p99_us'] / 1000:.2f} | {r['errors']} | {r['other_status']} | {ratio:.2f}x |",
        flush=True,
    )


HEADER = (
    "| Connections | Request | Body bytes | req/s | p50 ms | p99 ms | Errors | Changed "
    "| vs bare |\n"
    "|---:|---|---:|---:|---:|---:|---:|---:|---:|"
)


def api(base: str, token: str, method: str, path: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        f"{base}/api/v1{path}",
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=3600) as r:
        return json.loads(r.read() or b"null")


def load_during_sync(
    base: str,
    token: str,
    leads: int,
    fake_info: dict[str, Any],
    targets: dict[str, str],
    bare: dict[str, str],
    seconds: int,
    tmp: Path,
    role: str,
) -> None:
    """The 200-connection runs again while `leads` leads are synced from the fake
    Salesforce org into the demo workspace: queued with POST /sync and run by the worker
    process (`role` split) or by the API process itself (`role` all)."""
    secrets = {k: fake_info[k] for k in ("client_id", "client_secret", "username", "password")}
    connector = api(
        base,
        token,
        "POST",
        "/connectors",
        {
            "name": "Bench org",
            "type": "salesforce",
            "kinds": ["lead"],
            # REST query/queryMore (the Bulk path is sync_throughput.py's subject).
            "config": {"login_url": fake_info["base_url"], "bulk_threshold": None},
            "secrets": secrets | {"security_token": fake_info["security_token"]},
        },
    )
    outcome: dict[str, Any] = {}

    def sync() -> None:
        started = time.perf_counter()
        run = api(base, token, "POST", f"/connectors/{connector['id']}/sync")
        while run["status"] in ("queued", "running"):
            time.sleep(0.5)
            run = api(base, token, "GET", f"/runs/{run['id']}")
        outcome["run"] = run
        outcome["seconds"] = time.perf_counter() - started

    import threading

    syncing = threading.Thread(target=sync)
    syncing.start()
    print()
    where = "in the API process" if role == "all" else "by the worker process"
    print(f"During a sync of {leads:,} leads {where} (200 connections, {seconds} s per run):")
    print()
    print(HEADER)
    rounds = 0
    while syncing.is_alive() or rounds == 0:
        rounds += 1
        for name, url in targets.items():
            baseline = wrk(bare[name], 200, seconds, token, None, tmp)
            row(200, f"bare app, same size as {name}", len(get(url, token)[0]), baseline, baseline)
            row(200, f"{name} 200", 0, wrk(url, 200, seconds, token, None, tmp), baseline)
            _, etag = get(url, token)
            row(200, f"{name} 304", 0, wrk(url, 200, seconds, token, etag, tmp), baseline)
    syncing.join()
    run = outcome["run"]
    print()
    print(
        f"sync: {run['status']}, {run['fetched']:,} records in {outcome['seconds']:.1f} s = "
        f"{run['fetched'] / outcome['seconds']:,.0f} records/s under load ({rounds} round(s) "
        "of load while it ran)"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", default="1,50,200")
    parser.add_argument(
        "--sync-leads", type=int, default=200_000, help="leads synced under load (0: skip)"
    )
    parser.add_argument(
        "--role",
        choices=("split", "all"),
        default="split",
        help="split: API process (OKR_ROLE=api) + worker process; all: one process",
    )
    parser.add_argument("--bare-app", nargs=2, type=int, metavar=("SIZE", "PORT"))
    args = parser.parse_args()
    if args.bare_app:
        serve_bare(*args.bare_app)
        return
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed (Debian: apt-get install -y wrk)")
    connections = [int(c) for c in args.connections.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="okr-poll-"))
    port = free_port()
    fake = None
    if args.sync_leads:
        sys.path.insert(0, str(ROOT / "bench"))
        from sync_throughput import Fake

        fake = Fake(args.sync_leads)
    env = os.environ | {
        "OKR_DATABASE_URL": f"sqlite:///{tmp}/okr.db",
        "OKR_RATE_LIMIT_REQUESTS_PER_MINUTE": "100000000",
    }
    if fake is not None:
        # The fake org is on loopback (refused unless listed) with its own certificate.
        env |= {
            "OKR_CONNECTOR_ALLOWED_HOSTS": "127.0.0.1",
            "OKR_CONNECTOR_CA_BUNDLE": fake.info["ca_bundle"],
        }
    log = (tmp / "serve.log").open("w")
    processes = [
        subprocess.Popen(
            [str(OKR_SYNC), "serve", "--port", str(port)],
            env=env | {"OKR_ROLE": "api" if args.role == "split" else "all"},
            stdout=subprocess.DEVNULL,
            stderr=log,
            cwd=tmp,
        )
    ]
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ready(f"{base}/healthz")
        if args.role == "split":
            # Started once the API process has migrated and loaded the demo.
            processes.append(
                subprocess.Popen(
                    [str(OKR_SYNC), "worker"],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=(tmp / "worker.log").open("w"),
                    cwd=tmp,
                )
            )
        token_match = re.search(r"okr_[A-Za-z0-9_-]{20,}", (tmp / "serve.log").read_text())
        if token_match is None:
            raise SystemExit("no token in the first start's output")
        token = token_match.group(0)
        targets = {
            "key result progress": f"{base}/api/v1/key-results/1/progress",
            "period tree": f"{base}/api/v1/progress?period=current",
        }
        bare: dict[str, str] = {}
        for name, url in targets.items():
            body, _ = get(url, token)
            bare_port = free_port()
            processes.append(
                subprocess.Popen(
                    [sys.executable, __file__, "--bare-app", str(len(body)), str(bare_port)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            wait_ready(f"http://127.0.0.1:{bare_port}/x")
            bare[name] = f"http://127.0.0.1:{bare_port}/x"
            print(f"{name}: {len(body)} bytes")
        print(
            f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {machine()}, {args.duration} s per run, "
            f"role {args.role}"
        )
        print()
        print(HEADER)
        for name, url in targets.items():
            # Warm-up, not recorded: FastAPI prepares a route's handling on its first
            # requests, and the service builds its first representations.
            body, etag = get(url, token)
            for warm_url, warm_etag in ((bare[name], None), (url, None), (url, etag)):
                wrk(warm_url, 50, 3, token, warm_etag, tmp)
        for c in connections:
            for name, url in targets.items():
                body, etag = get(url, token)
                baseline = wrk(bare[name], c, args.duration, token, None, tmp)
                row(c, f"bare app, same size as {name}", len(body), baseline, baseline)
                row(
                    c,
                    f"{name} 200",
                    len(body),
                    wrk(url, c, args.duration, token, None, tmp),
                    baseline,
                )
                # The tag current now (a demo sync may have moved the values meanwhile).
                body, etag = get(url, token)
                row(c, f"{name} 304", 0, wrk(url, c, args.duration, token, etag, tmp), baseline)
        if fake is not None:
            load_during_sync(
                base,
                token,
                args.sync_leads,
                fake.info,
                targets,
                bare,
                args.duration,
                tmp,
                args.role,
            )
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)
        if fake is not None:
            fake.close()
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
