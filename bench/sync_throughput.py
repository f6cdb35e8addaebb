"""Sync throughput: Salesforce leads from the local fake org into SQLite and PostgreSQL.

Measures, in one run:
  * full sync of N leads (default 200,000) end to end — the real SalesforceConnector
    (simple-salesforce over HTTPS on loopback), the sync engine, the `record` table — into
    SQLite and into PostgreSQL over REST (query/queryMore), and into SQLite over Bulk API 2.0
    (the default initial path above 50,000 records): records/s and peak RSS;
  * an incremental sync after 1% of the leads changed;
  * the ceilings, one per path: the same requests the connector makes for the records
    (the same SOQL with the same window, the same simple-salesforce settings, the same
    batch size or Bulk page size), read alone and upserted with a bare sqlite3
    `executemany`, raw fields serialised with orjson like the sync;
  * peak RSS of the end-to-end SQLite sync at N/4 and N leads (flat = pages are streamed),
    the syncing process's and the reader process's;
  * the same end-to-end syncs into SQLite with the reader process off (a reader thread in
    the syncing process, `OKR_SYNC_READER_PROCESS=false`).

Each fake org is read once in full before anything is measured: its first read is slower.

The fake org runs in its own process so that its memory is not counted; each scenario runs
in a fresh process so its peak RSS is its own.

    python bench/sync_throughput.py [--leads 200000] [--pg postgresql://root@127.0.0.1/postgres]

HubSpot: the initial sync's read of N contacts (default 200,000) by the real connector
against a fake account enforcing the Professional tier's 190 requests / 10 s, with 0 and
100 ms of latency per request; records/s against the limit's ceiling of 1,900 records/s
(190 requests of 100 records per 10 s), the fake's own count of 429s and peak window.

    python bench/sync_throughput.py hubspot [--contacts 200000] [--latency 0 0.1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --------------------------------------------------------------------------- the fake org


def serve_fake(leads: int) -> None:
    """Subprocess: seed a fake org with `leads` leads, serve it over TLS, print its address."""
    from tests.fakes.salesforce import FakeSalesforce
    from tests.fakes.server import serve

    fake = FakeSalesforce()
    fake.api_limit = 10**9
    fake.seed("Lead", leads)

    def now() -> dict[str, Any]:
        return {"now": fake.now().isoformat()}

    def touch(n: int) -> dict[str, Any]:
        ids = sorted(fake.live_ids("Lead"))[:: max(1, leads // n)][:n]
        fake.tick()
        for record_id in ids:
            fake.update("Lead", record_id, Status="Working - Contacted")
        return {"touched": len(ids), "now": fake.now().isoformat()}

    fake.app.add_api_route("/__bench/now", now, methods=["GET"])
    fake.app.add_api_route("/__bench/touch", touch, methods=["POST"])
    with serve(fake.app, tls=True) as served:
        print(
            json.dumps(
                {
                    "base_url": served.base_url,
                    "ca_bundle": served.ca_bundle,
                    "client_id": fake.client_id,
                    "client_secret": fake.client_secret,
                    "username": fake.username,
                    "password": fake.password,
                    "security_token": fake.security_token,
                }
            ),
            flush=True,
        )
        sys.stdin.read()  # serve until the parent closes our stdin


class Fake:
    """The fake org in a subprocess."""

    def __init__(self, leads: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "_fake", str(leads)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        assert self.proc.stdout is not None
        self.info: dict[str, Any] = json.loads(self.proc.stdout.readline())

    def warm(self, tmp: Path) -> None:
        """Read every lead once, unmeasured: a fresh fake answers its first full read about
        1.2 s slower than every later one (seen at 200,000 leads: 4.0 s, then 2.8-2.9 s),
        and whichever scenario ran first used to pay for it (the REST ceiling did)."""
        in_subprocess(
            "_ceiling", json.dumps(self.info), str(tmp / f"warm-up-{self.proc.pid}.db"), "rest"
        )

    def admin(self, method: str, path: str) -> dict[str, Any]:
        import httpx

        with httpx.Client(verify=self.info["ca_bundle"], timeout=120) as client:
            response = client.request(method, self.info["base_url"] + path)
            response.raise_for_status()
            result: dict[str, Any] = response.json()
            return result

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


# --------------------------------------------------------------------------- scenarios


#: Bulk job polls: the fake completes a job after one poll, so the connector's default first
#: delay (2 s) would only measure sleeping; both Bulk scenarios poll every 0.2 s.
BULK_POLL_SECONDS = 0.2


def connector_config(info: dict[str, Any], bulk: bool) -> dict[str, Any]:
    """The connector's config in the benchmark: REST (query/queryMore, 2,000 per batch) or
    Bulk API 2.0 for the initial sync (`bulk_threshold` 1)."""
    return {
        "login_url": info["base_url"],
        "bulk_threshold": 1 if bulk else None,
        "bulk_poll_seconds": BULK_POLL_SECONDS,
    }


def scenario_e2e(
    info: dict[str, Any],
    database_url: str,
    touch_after: bool,
    bulk: bool = False,
    reader_process: bool = True,
) -> dict[str, Any]:
    """Subprocess: full sync (and, optionally, then an incremental one) through the engine,
    the initial window read in the reader process (the default) or in a reader thread."""
    import httpx
    from sqlmodel import Session

    from connectors.base import Runtime
    from connectors.retry import RetryPolicy
    from service import db
    from service.settings import Settings
    from service.sync.engine import SyncEngine
    from service.sync.models import Connector
    from service.workspaces.models import Workspace

    engine = db.make_engine(database_url)
    db.upgrade(engine)
    with Session(engine) as session:
        ws = Workspace(slug="bench", name="Bench", created_at=datetime.now(UTC))
        session.add(ws)
        session.flush()
        assert ws.id is not None
        row = Connector(
            workspace_id=ws.id,
            name="sf",
            type="salesforce",
            config=connector_config(info, bulk),
            secrets={k: info[k] for k in ("client_id", "client_secret", "username", "password")}
            | {"security_token": info["security_token"]},
            kinds=["lead"],
            created_at=ws.created_at,
        )
        session.add(row)
        session.commit()
        connector_id = row.id
    assert connector_id is not None

    def fake_now() -> datetime:
        with httpx.Client(verify=info["ca_bundle"]) as client:
            now = client.get(info["base_url"] + "/__bench/now").json()["now"]
        return datetime.fromisoformat(now) + timedelta(seconds=1)

    clock_at = [fake_now()]
    settings = Settings(
        database_url=database_url,
        load_demo=False,
        migrate_on_start=False,
        sync_reader_process=reader_process,
    )
    sync = SyncEngine(
        engine,
        settings,
        clock=lambda: clock_at[0],
        runtime_factory=lambda _row: Runtime(
            retry=RetryPolicy(),
            timeout_seconds=120,
            ca_bundle=info["ca_bundle"],
            clock=lambda: clock_at[0],
            # The fake org is served on loopback, which the host policy refuses unless listed.
            allowed_hosts=("127.0.0.1",),
        ),
    )
    t0 = time.perf_counter()
    run = sync.run(connector_id)
    full_s = time.perf_counter() - t0
    assert run.status == "succeeded", run.error_message
    result: dict[str, Any] = {
        "fetched": run.fetched,
        "inserted": run.inserted,
        "seconds": round(full_s, 2),
        "records_per_s": round(run.fetched / full_s),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "reader": run.details["kinds"]["lead"]["reader"],
    }
    if reader_process:
        # The reader process's own peak (RUSAGE_CHILDREN: the largest child waited for),
        # pages it shares with this process included.
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        result["reader_peak_rss_mib"] = round(children.ru_maxrss / 1024, 1)
    if touch_after:
        with httpx.Client(verify=info["ca_bundle"], timeout=120) as client:
            touched = client.post(
                info["base_url"] + "/__bench/touch", params={"n": run.fetched // 100}
            ).json()
        clock_at[0] = fake_now()
        t0 = time.perf_counter()
        inc = sync.run(connector_id)
        inc_s = time.perf_counter() - t0
        assert inc.status == "succeeded", inc.error_message
        assert inc.updated == touched["touched"], (inc.updated, touched)
        result["incremental"] = {
            "changed_at_source": touched["touched"],
            "fetched": inc.fetched,
            "updated": inc.updated,
            "seconds": round(inc_s, 2),
        }
    engine.dispose()
    return result


def scenario_ceiling(info: dict[str, Any], sqlite_path: str, bulk: bool) -> dict[str, Any]:
    """Subprocess: the connector's record requests alone (same SOQL and window, same
    simple-salesforce settings, same page sizes) + bare sqlite3 `executemany` upserts, raw
    fields serialised with orjson; no normalisation, no sync bookkeeping."""
    import csv
    import io
    import sqlite3

    import orjson
    import requests
    from simple_salesforce import Salesforce

    from connectors.base import RecordKind, Runtime, Window
    from connectors.salesforce.connector import SalesforceConfig, SalesforceConnector
    from service.sync.engine import BEGINNING

    session = requests.Session()
    # REQUESTS_CA_BUNDLE in the environment would override `verify` otherwise.
    session.trust_env = False
    session.verify = info["ca_bundle"]
    token = session.post(
        info["base_url"] + "/services/oauth2/token",
        data={
            "grant_type": "password",
            "client_id": info["client_id"],
            "client_secret": info["client_secret"],
            "username": info["username"],
            "password": info["password"] + info["security_token"],
        },
    ).json()
    config = SalesforceConfig(**connector_config(info, bulk))
    # Exactly the connector's settings (SalesforceClient.login): plain dicts, not the
    # OrderedDict hook, and the configured API version.
    sf = Salesforce(
        instance_url=token["instance_url"],
        session_id=token["access_token"],
        session=session,
        version=config.api_version,
        object_pairs_hook=None,
    )
    # The query the connector sends for the engine's initial window [BEGINNING, now).
    with requests.Session() as probe:
        probe.trust_env = False
        probe.verify = info["ca_bundle"]
        now = datetime.fromisoformat(probe.get(info["base_url"] + "/__bench/now").json()["now"])
    window = Window(BEGINNING, now + timedelta(seconds=1))
    fields = SalesforceConnector.raw_fields(config, RecordKind.lead)
    builder = SalesforceConnector(
        config,
        SalesforceConnector.secrets_model.model_validate(
            {k: info[k] for k in ("client_id", "client_secret", "username", "password")}
        ),
        Runtime(),
    )
    soql = builder._soql(  # noqa: SLF001 - the very query the connector sends
        RecordKind.lead, window, None, select=", ".join(fields), ordered=not bulk
    )
    builder.close()

    conn = sqlite3.connect(sqlite_path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(
        "CREATE TABLE lead (id TEXT PRIMARY KEY, created TEXT, modified TEXT, deleted INT, "
        "status TEXT, source TEXT, owner TEXT, email TEXT, raw TEXT)"
    )
    sql = (
        "INSERT INTO lead VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET "
        "created=excluded.created, modified=excluded.modified, deleted=excluded.deleted, "
        "status=excluded.status, source=excluded.source, owner=excluded.owner, "
        "email=excluded.email, raw=excluded.raw WHERE lead.modified <= excluded.modified"
    )

    def store(records: list[dict[str, Any]]) -> int:
        rows = [
            (
                r["Id"],
                r["CreatedDate"],
                r["SystemModstamp"],
                r.get("IsDeleted", False),
                r["Status"],
                r["LeadSource"],
                r["OwnerId"],
                r["Email"],
                orjson.dumps({k: v for k, v in r.items() if k != "attributes"}).decode(),
            )
            for r in records
        ]
        conn.executemany(sql, rows)
        conn.commit()
        return len(rows)

    t0 = time.perf_counter()
    total = 0
    if not bulk:
        batch = {"Sforce-Query-Options": f"batchSize={config.page_size}"}
        page = sf.query(soql, include_deleted=True, headers=batch)
        while True:
            total += store(page["records"])
            if page["done"]:
                break
            page = sf.query_more(page["nextRecordsUrl"], identifier_is_url=True, headers=batch)
    else:
        job = sf.restful(
            "jobs/query",
            method="POST",
            json={
                "operation": "queryAll",
                "query": soql,
                "contentType": "CSV",
                "columnDelimiter": "COMMA",
                "lineEnding": "LF",
            },
        )
        while sf.restful(f"jobs/query/{job['id']}")["state"] != "JobComplete":
            time.sleep(BULK_POLL_SECONDS)
        locator: str | None = None
        headers = {"Authorization": f"Bearer {token['access_token']}", "Accept": "text/csv"}
        while True:
            params: dict[str, Any] = {"maxRecords": config.bulk_page_size}
            if locator:
                params["locator"] = locator
            response = session.get(
                f"{sf.base_url}jobs/query/{job['id']}/results", headers=headers, params=params
            )
            reader = csv.reader(io.StringIO(response.content.decode("utf-8"), newline=""))
            header = next(reader)
            total += store([dict(zip(header, row, strict=True)) for row in reader])
            locator = response.headers.get("Sforce-Locator")
            if not locator or locator == "null":
                break
    seconds = time.perf_counter() - t0
    return {
        "fetched": total,
        "seconds": round(seconds, 2),
        "records_per_s": round(total / seconds),
        "peak_rss_mib": round(peak_rss_mib(), 1),
    }


def in_subprocess(name: str, *args: str) -> dict[str, Any]:
    """Run a scenario in a fresh process; adds the CPU seconds it and its children used
    (start-up and imports included: about a second)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(
        [sys.executable, __file__, name, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if out.returncode != 0:
        raise SystemExit(f"{name} failed:\n{out.stderr[-3000:]}")
    last: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    last["process_cpu_seconds"] = round(cpu, 2)
    return last


def fresh_pg(base_url: str, name: str) -> str:
    from sqlalchemy import make_url, text

    from service import db
    from service.settings import Settings

    url = make_url(Settings(database_url=base_url).database_url)
    admin = db.make_engine(
        url.set(database="postgres").render_as_string(hide_password=False),
        isolation_level="AUTOCOMMIT",
    )
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return url.set(database=name).render_as_string(hide_password=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--leads", type=int, default=200_000)
    parser.add_argument(
        "--pg", default=os.environ.get("OKR_BENCH_PG", "postgresql://root@127.0.0.1:5432/postgres")
    )
    parser.add_argument("--no-pg", action="store_true", help="skip the PostgreSQL run")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "sync_throughput.json"))
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="okr-bench-"))
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()}: {os.cpu_count()} cores, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, "
        f"Python {platform.python_version()}",
        "leads": args.leads,
    }
    fake = Fake(args.leads)
    try:
        info = json.dumps(fake.info)
        print("warming the fake org up (one full read, not measured)...", flush=True)
        fake.warm(tmp)
        for path in ("rest", "bulk"):
            print(f"ceiling, {path} (connector's requests + bare executemany, SQLite)...")
            results[f"ceiling_{path}_sqlite"] = in_subprocess(
                "_ceiling", info, str(tmp / f"ceiling-{path}.db"), path
            )
            print(results[f"ceiling_{path}_sqlite"], flush=True)
        print("end to end into SQLite, REST...", flush=True)
        results["e2e_rest_sqlite"] = in_subprocess(
            "_e2e", info, f"sqlite:///{tmp / 'e2e.db'}", "touch", "rest"
        )
        print(results["e2e_rest_sqlite"], flush=True)
        print("end to end into SQLite, Bulk API 2.0...", flush=True)
        results["e2e_bulk_sqlite"] = in_subprocess(
            "_e2e", info, f"sqlite:///{tmp / 'e2e-bulk.db'}", "no", "bulk"
        )
        print(results["e2e_bulk_sqlite"], flush=True)
        for path in ("rest", "bulk"):
            print(f"end to end into SQLite, {path}, reader thread (no reader process)...")
            results[f"e2e_{path}_sqlite_thread"] = in_subprocess(
                "_e2e", info, f"sqlite:///{tmp / f'e2e-{path}-thread.db'}", "no", path, "thread"
            )
            print(results[f"e2e_{path}_sqlite_thread"], flush=True)
        if not args.no_pg:
            print("end to end into PostgreSQL, REST...", flush=True)
            pg = fresh_pg(args.pg, "okr_bench_sync")
            results["e2e_rest_postgresql"] = in_subprocess("_e2e", info, pg, "touch", "rest")
            print(results["e2e_rest_postgresql"], flush=True)
    finally:
        fake.close()
    quarter = max(1000, args.leads // 4)
    small = Fake(quarter)
    try:
        small.warm(tmp)
        print(f"end to end into SQLite with {quarter} leads (memory flatness)...", flush=True)
        for path in ("rest", "bulk"):
            results[f"e2e_{path}_sqlite_quarter"] = in_subprocess(
                "_e2e", json.dumps(small.info), f"sqlite:///{tmp / f'q-{path}.db'}", "no", path
            )
            print(results[f"e2e_{path}_sqlite_quarter"], flush=True)
    finally:
        small.close()
    for path in ("rest", "bulk"):
        for variant in ("", "_thread"):
            results[f"e2e_over_ceiling_{path}_sqlite{variant}"] = round(
                results[f"e2e_{path}_sqlite{variant}"]["records_per_s"]
                / results[f"ceiling_{path}_sqlite"]["records_per_s"],
                3,
            )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


# --------------------------------------------------------------------------- HubSpot


def serve_hubspot_fake(contacts: int, latency: float) -> None:
    """Subprocess: a fake HubSpot account enforcing 190 requests / 10 s (Professional) and
    search's 5 / s, answering every request after `latency` seconds, seeded with contacts."""
    from tests.connectors.hubspot.harness import GOOD_TOKEN, contact_properties
    from tests.fakes.hubspot import CLOCK_START_MS, FakeHubSpot
    from tests.fakes.server import serve

    fake = FakeHubSpot(
        token=GOOD_TOKEN,
        rate_limit=190,
        rate_interval_ms=10_000,
        search_per_second=5,
        latency_seconds=latency,
    )
    fake.daily_limit = 10**9
    stamps = [CLOCK_START_MS + 1000 * (i + 1) for i in range(contacts)]
    fake.add_many("contacts", stamps, contact_properties(1))

    def stats() -> dict[str, Any]:
        return {
            "rate_limited_429": fake.rate_limited,
            "peak_requests_in_10s": fake.peak_in_window,
            "peak_in_flight": fake.peak_in_flight,
            "requests": len(fake.requests),
        }

    fake.app.add_api_route("/__bench/stats", stats, methods=["GET"])
    with serve(fake.app) as served:
        print(json.dumps({"base_url": served.base_url, "token": GOOD_TOKEN}), flush=True)
        sys.stdin.read()


def scenario_hubspot(info: dict[str, Any]) -> dict[str, Any]:
    """Subprocess: the initial sync's read of every contact by the real HubSpotConnector
    (list endpoint, parallel id ranges, the account's governor at the Professional tier)."""
    import httpx

    from connectors.base import RecordKind, Runtime, Window
    from connectors.hubspot import HubSpotConfig, HubSpotConnector, HubSpotSecrets
    from connectors.retry import RetryPolicy

    clock_now = datetime(2030, 1, 1, tzinfo=UTC)
    connector = HubSpotConnector(
        HubSpotConfig(base_url=info["base_url"], tier="professional"),
        HubSpotSecrets(access_token=info["token"]),
        Runtime(
            retry=RetryPolicy(),
            timeout_seconds=60,
            clock=lambda: clock_now,
            allowed_hosts=("127.0.0.1",),
        ),
    )
    if info.get("shared_db"):
        # What a sync through the engine does (`SyncEngine._share_budget`): the portal's
        # governor leases its send cells from the database's schedule, shared with every
        # other process.
        from service import db
        from service.sync.budget import DatabaseBudget

        engine = db.make_engine(info["shared_db"])
        db.upgrade(engine)
        connector.governor.share(DatabaseBudget(engine))
    # The engine's initial window: from the epoch to now.
    window = Window(datetime(1970, 1, 1, tzinfo=UTC), clock_now)
    records = pages = 0
    seen: set[str] = set()
    t0 = time.perf_counter()
    for page in connector.read(RecordKind.contact, window):
        pages += 1
        records += len(page.records)
        seen.update(r.source_id for r in page.records)
    seconds = time.perf_counter() - t0
    connector.close()
    stats = httpx.get(info["base_url"] + "/__bench/stats").json()
    return {
        "records": records,
        "distinct": len(seen),
        "seconds": round(seconds, 2),
        "records_per_s": round(records / seconds),
        "ceiling_records_per_s": 1900,
        "over_ceiling": round(records / seconds / 1900, 3),
        "retries": connector.runtime.retry.retries,
        **stats,
    }


def main_hubspot(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="HubSpot initial sync at the 190/10 s tier")
    parser.add_argument("--contacts", type=int, default=200_000)
    parser.add_argument("--latency", type=float, nargs="+", default=[0.0, 0.1])
    parser.add_argument(
        "--shared-budget",
        action="store_true",
        help="also run each latency with the governor leasing from a database budget "
        "(SQLite file), as syncs through the engine do",
    )
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "sync_hubspot.json"))
    args = parser.parse_args(argv)
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()}: {os.cpu_count()} cores, Python {platform.python_version()}",
        "contacts": args.contacts,
        "runs": {},
    }
    variants = [False, True] if args.shared_budget else [False]
    for latency, shared in [(lat, shared) for lat in args.latency for shared in variants]:
        proc = subprocess.Popen(
            [sys.executable, __file__, "_hubspot_fake", str(args.contacts), str(latency)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        assert proc.stdout is not None
        assert proc.stdin is not None
        info = proc.stdout.readline()
        name = f"{latency * 1000:g}ms" + (", shared budget" if shared else "")
        if shared:
            budget_db = Path(tempfile.mkdtemp()) / "budget.db"
            info = json.dumps(json.loads(info) | {"shared_db": f"sqlite:///{budget_db}"})
        try:
            print(f"HubSpot initial sync, {name}...", flush=True)
            run = in_subprocess("_hubspot", info)
            print(run, flush=True)
            results["runs"][name] = run
        finally:
            proc.stdin.close()
            proc.wait(timeout=60)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "hubspot":
        main_hubspot(sys.argv[2:])
    elif len(sys.argv) > 1 and sys.argv[1] == "_hubspot_fake":
        serve_hubspot_fake(int(sys.argv[2]), float(sys.argv[3]))
    elif len(sys.argv) > 1 and sys.argv[1] == "_hubspot":
        print(json.dumps(scenario_hubspot(json.loads(sys.argv[2]))))
    elif len(sys.argv) > 1 and sys.argv[1] == "_fake":
        serve_fake(int(sys.argv[2]))
    elif len(sys.argv) > 1 and sys.argv[1] == "_e2e":
        info_arg, url, touch, path = sys.argv[2:6]
        reader = sys.argv[6] if len(sys.argv) > 6 else "process"
        result = scenario_e2e(
            json.loads(info_arg), url, touch == "touch", path == "bulk", reader == "process"
        )
        print(json.dumps(result))
    elif len(sys.argv) > 1 and sys.argv[1] == "_ceiling":
        info_arg, sqlite_path, path = sys.argv[2:5]
        print(json.dumps(scenario_ceiling(json.loads(info_arg), sqlite_path, path == "bulk")))
    else:
        main()
