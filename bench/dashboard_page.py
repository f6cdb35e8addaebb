"""The dashboard page's load time and transfer on the demo data, in Debian's chromium.

Starts `okr-sync serve` on a fresh SQLite file (the Tartempion demo loaded, synced once),
then opens `/` in a fresh browser profile `--runs` times (cold cache each time) with the
demo's admin token already stored, and prints, per run and as the median: the time from
navigation start until the five key result cards are drawn, the browser's
DOMContentLoaded and load events, and the bytes transferred (bodies and headers of every
request that finished; the event stream, still open, is not counted).

Prerequisite: chromium (Debian: `apt-get install -y chromium`), playwright (dev extra).

    python bench/dashboard_page.py [--runs 20] [--chromium /usr/bin/chromium]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent))
from progress_polling import OKR_SYNC, free_port, machine, wait_ready  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="okr-dashboard-"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = (tmp / "serve.log").open("w")
    server = subprocess.Popen(
        [str(OKR_SYNC), "serve", "--port", str(port)],
        env={k: v for k, v in os.environ.items() if not k.startswith("OKR_")}
        | {"OKR_DATABASE_URL": f"sqlite:///{tmp}/okr.db"},
        stdout=subprocess.DEVNULL,
        stderr=log,
        cwd=tmp,
    )
    try:
        wait_ready(f"{base}/readyz")
        token = next(
            line.strip()
            for line in (tmp / "serve.log").read_text().splitlines()
            if line.strip().startswith("okr_")
        )
        rows = []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium)
            for _ in range(args.runs):
                context = browser.new_context(viewport={"width": 1280, "height": 800})
                context.add_init_script(
                    f"localStorage.setItem('okr-sync-token', {json.dumps(token)})"
                )
                page = context.new_page()
                sizes: list[int] = []
                page.on(
                    "requestfinished",
                    lambda r: sizes.append(  # noqa: B023 - read before the next run
                        r.sizes()["responseBodySize"] + r.sizes()["responseHeadersSize"]
                    ),
                )
                page.goto(f"{base}/")
                page.wait_for_function("document.querySelectorAll('li.kr').length === 5")
                shown = page.evaluate("performance.now()")
                page.wait_for_load_state("load")
                # Every request made (the stream open): the transfer is the whole page's.
                page.wait_for_function("document.getElementById('live').textContent === 'Live'")
                timing = page.evaluate(
                    "(() => { const n = performance.getEntriesByType('navigation')[0];"
                    " return [n.domContentLoadedEventEnd, n.loadEventEnd]; })()"
                )
                rows.append((shown, timing[0], timing[1], sum(sizes), len(sizes)))
                context.close()
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=15)
    print(f"# {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {machine()}, {args.runs} cold loads")
    print("run  cards shown ms  DOMContentLoaded ms  load ms  bytes  requests")
    for i, (shown, dcl, load, size, count) in enumerate(rows, 1):
        print(f"{i:>3}  {shown:>14.0f}  {dcl:>19.0f}  {load:>7.0f}  {size:>5}  {count:>8}")
    print(
        "median  cards shown {:.0f} ms, DOMContentLoaded {:.0f} ms, load {:.0f} ms, "
        "{:.0f} bytes".format(*(statistics.median(r[i] for r in rows) for i in range(4)))
    )
    print(f"max     cards shown {max(r[0] for r in rows):.0f} ms")


if __name__ == "__main__":
    main()
