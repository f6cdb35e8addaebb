"""Polled progress reads: the real service against a bare FastAPI app, driven by wrk.

Starts, each on uvicorn with one worker (what `okr-sync serve` runs):
  * the real service, `okr-sync serve`, on a fresh SQLite database with the Tartempion
    demo loaded (its admin token is read from the first start's output), the scheduler
    running as in production (the demo syncs every 60 s);
  * a bare FastAPI app answering a constant JSON body of the same size as the service's
    answer, from an `async def` route.

Then drives each with wrk at 1, 50 and 200 connections (one wrk thread; a Lua script sets
`Authorization`, and `If-None-Match` for the 304 runs, and counts the statuses) and prints
req/s, p50, p99 and errors for: a key result's progress (200 and 304), the period tree
(200 and 304), and the bare app at both sizes.

Prerequisite: wrk (Debian: `apt-get install -y wrk`).

    python bench/progress_polling.py [--duration 10] [--connections 1,50,200]

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
function init(args) wanted = 0; other = 0 end
wrk.headers["Authorization"] = %(authorization)s
%(if_none_match)s
function response(status, headers, body)
  if status == %(expected)d then wanted = wanted + 1 else other = other + 1 end
end
function done(summary, latency, requests)
  local w, o = 0, 0
  for _, t in ipairs(threads) do w = w + t:get("wanted"); o = o + t:get("other") end
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests":%%d,"duration_us":%%d,"p50_us":%%d,"p99_us":%%d,' ..
    '"socket_errors":%%d,"expected":%%d,"other_status":%%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, w, o))
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
    result["errors"] = result["socket_errors"] + result["other_status"]
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", default="1,50,200")
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
    env = os.environ | {
        "OKR_DATABASE_URL": f"sqlite:///{tmp}/okr.db",
        "OKR_RATE_LIMIT_REQUESTS_PER_MINUTE": "100000000",
    }
    log = (tmp / "serve.log").open("w")
    processes = [
        subprocess.Popen(
            [str(OKR_SYNC), "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
            cwd=tmp,
        )
    ]
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ready(f"{base}/healthz")
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
        print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {machine()}, {args.duration} s per run")
        print()
        print("| Connections | Request | Body bytes | req/s | p50 ms | p99 ms | Errors | vs bare |")
        print("|---:|---|---:|---:|---:|---:|---:|---:|")
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
                rows = [
                    (f"bare app, same size as {name}", len(body), baseline),
                    (f"{name} 200", len(body), wrk(url, c, args.duration, token, None, tmp)),
                ]
                # The tag current now (a demo sync may have moved the values meanwhile).
                body, etag = get(url, token)
                rows.append((f"{name} 304", 0, wrk(url, c, args.duration, token, etag, tmp)))
                for label, size, r in rows:
                    ratio = r["rps"] / baseline["rps"]
                    print(
                        f"| {c} | {label} | {size:,} | {r['rps']:,.0f} | {r['p50_us'] / 1000:.2f} "
                        f"| {r['p99_us'] / 1000:.2f} | {r['errors']} | {ratio:.2f}x |",
                        flush=True,
                    )
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
