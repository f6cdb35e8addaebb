"""Benchmark: evaluate the five Tartempion key results over 1,000,000 stored records.

Tartempion's demo connector holds `--years` years of the deterministic demo dataset at
`--size` leads a year (plus their opportunities and NPS answers); the rest of the
1,000,000 records belong to other workspaces (a consultancy's other clients: copies of the
same data under their own connectors). `--size 100000 --years 8` puts all 1,000,000 records
in Tartempion's own connector instead.

Each key result is evaluated the way a sync does it (`evaluate_mapping`: the stored spec's
plan, the window resolved at "now", the aggregate in SQL; the windows and connectors of all
the key results a sync touches are looked up once per sync, reported apart) and compared
with the equivalent hand-written SQL aggregate, timed interleaved on the same connection.

    .venv/bin/python -m bench.metric_eval                       # SQLite (a file in /tmp)
    .venv/bin/python -m bench.metric_eval --postgresql postgresql://root@127.0.0.1:5432/bench
    .venv/bin/python -m bench.metric_eval --size 100000 --years 8   # one big tenant

Targets (issue 4): p95 <= 10 ms per key result, and p95 within 2x of the hand-written SQL.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from datetime import time as dtime
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, bindparam, text
from sqlmodel import Session, select

from connectors.base import RecordKind, Window
from connectors.demo.connector import DemoConfig, DemoConnector, DemoSecrets
from service import db
from service.db_types import UTCDateTime
from service.demo import SLUG, demo_connector_id, load_tartempion
from service.mappings.models import Mapping
from service.mappings.service import _PLANS, evaluate_mapping, load_batch
from service.okr.models import KeyResult
from service.sync.models import AMOUNT_SCALE, Connector, SyncedRecord
from service.workspaces.models import Workspace

#: "Now" of the run: the current year is the key results' window (as the demo loads it).
NOW = datetime(2026, 11, 26, 12, tzinfo=UTC)
PARIS = ZoneInfo("Europe/Paris")
KINDS = (RecordKind.lead, RecordKind.opportunity, RecordKind.survey_response)
SHORT = {
    "Generate 1000 qualified leads by year end": "KR1.1 qualified leads (count)",
    "Convert 50% of validated business opportunities": "KR1.2 win rate (ratio)",
    "€1,000,000 ARR": "KR1.3 ARR (sum EUR)",
    "NPS above 80 for new customers": "KR2.1 NPS new customers (nps, raw filter)",
    "20% of new customers through referral (word of mouth)": "KR2.2 referral share (ratio)",
}


# ---------------------------------------------------------------------------- data


def records(total: int, size: int, years: int) -> Iterator[dict[str, Any]]:
    """Up to `total` demo records: the current year as of NOW, then whole earlier years."""
    year, produced = NOW.year, 0
    while produced < total and year > NOW.year - years:
        # Past years are read as of June of the next year, when their late deals have closed.
        as_of = NOW if year == NOW.year else datetime(year + 1, 6, 1, tzinfo=UTC)
        vendor = DemoConnector(DemoConfig(seed=42, size=size, year=year, now=as_of), DemoSecrets())
        everything = Window(datetime(1970, 1, 1, tzinfo=UTC), datetime(2200, 1, 1, tzinfo=UTC))
        for kind in KINDS:
            for page in vendor.read(kind, everything):
                for r in page.records:
                    if produced >= total:
                        return
                    produced += 1
                    yield {
                        "kind": r.kind.value,
                        # Demo survey ids restart every year; CRM ids carry the year.
                        "source_id": r.source_id
                        if r.kind is not RecordKind.survey_response
                        else f"{year}-{r.source_id}",
                        "created_at": r.created_at,
                        "modified_at": r.modified_at,
                        "deleted": r.deleted,
                        "close_date": r.close_date,
                        "status": r.status,
                        "stage": r.stage,
                        "is_closed": r.is_closed,
                        "is_won": r.is_won,
                        "amount_e4": None
                        if r.amount is None
                        else int(Decimal(r.amount) * AMOUNT_SCALE),
                        "currency": r.currency,
                        "lead_source": r.lead_source,
                        "owner": r.owner,
                        "deal_type": r.deal_type,
                        "score": r.score,
                        "email": r.email,
                        "raw": dict(r.raw),
                        "synced_at": NOW,
                    }
        year -= 1


def prepare(engine: Engine, rows: list[dict[str, Any]], total: int) -> None:
    """Migrate, load Tartempion (its key results bound to the demo connector), store its
    rows, then fill up to `total` records with other tenants' copies of them."""
    db.upgrade(engine)
    with db.session_scope(engine) as session:
        if session.exec(select(Workspace).where(Workspace.slug == SLUG)).first() is not None:
            return  # already loaded by an earlier run
        ws = load_tartempion(session, NOW)
        assert ws is not None
    with Session(engine) as session:
        connector_id = demo_connector_id(session)
        ws_id = session.exec(select(Workspace.id).where(Workspace.slug == SLUG)).one()
    assert connector_id is not None
    tenants = [(ws_id, connector_id)]
    with db.session_scope(engine) as session:
        for n in range(1, -(-total // len(rows))):
            other = Workspace(
                slug=f"client-{n}", name=f"Client {n}", timezone="Europe/Paris", created_at=NOW
            )
            session.add(other)
            session.flush()
            assert other.id is not None
            row = Connector(
                workspace_id=other.id,
                name="CRM",
                type="demo",
                config={"seed": n},
                created_at=NOW,
            )
            session.add(row)
            session.flush()
            assert row.id is not None
            tenants.append((other.id, row.id))
    table = SyncedRecord.__table__  # type: ignore[attr-defined]
    started, stored = time.perf_counter(), 0
    for ws_id, connector_id in tenants:
        chunk = [r | {"workspace_id": ws_id, "connector_id": connector_id} for r in rows]
        chunk = chunk[: total - stored]
        stored += len(chunk)
        if engine.dialect.name == "postgresql":
            _copy(engine, chunk)
        else:
            with engine.begin() as conn:
                for i in range(0, len(chunk), 20_000):
                    conn.execute(table.insert(), chunk[i : i + 20_000])
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE" if engine.dialect.name == "postgresql" else "ANALYZE"))
    print(
        f"  stored {stored:,} records ({len(tenants)} workspaces) in "
        f"{time.perf_counter() - started:.0f} s",
        flush=True,
    )


def _copy(engine: Engine, rows: list[dict[str, Any]]) -> None:
    columns = [c for c in rows[0] if c != "raw"] + ["raw"]
    raw_conn = engine.raw_connection()
    try:
        cursor = raw_conn.cursor()
        with cursor.copy(f"COPY record ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row([json.dumps(row["raw"]) if c == "raw" else row[c] for c in columns])
        raw_conn.commit()
    finally:
        raw_conn.close()


# ---------------------------------------------------------------------------- hand-written SQL


def handwritten(dialect: str) -> dict[str, str]:
    """The SQL one would write by hand for each key result (one statement each)."""
    customer_type = (
        "raw -> 'person_properties' ->> 'Customer Type'"
        if dialect == "postgresql"
        else """json_extract(raw, '$."person_properties"."Customer Type"')"""
    )
    yes, no = ("true", "false") if dialect == "postgresql" else ("1", "0")
    live = f"connector_id = :c AND deleted = {no}"
    return {
        "Generate 1000 qualified leads by year end": f"""
            SELECT count(*) FROM record WHERE {live} AND kind = 'lead'
            AND created_at >= :lo AND created_at < :hi AND status = 'Qualified'""",
        "Convert 50% of validated business opportunities": f"""
            SELECT 100.0 * sum(CASE WHEN is_won = {yes} THEN 1 ELSE 0 END) / nullif(count(*), 0)
            FROM record WHERE {live} AND kind = 'opportunity'
            AND close_date >= :d0 AND close_date < :d1 AND is_closed = {yes}""",
        "€1,000,000 ARR": f"""
            SELECT sum(amount_e4) FROM record WHERE {live} AND kind = 'opportunity'
            AND close_date >= :d0 AND close_date < :d1 AND is_won = {yes} AND currency = 'EUR'""",
        "NPS above 80 for new customers": f"""
            SELECT count(*), sum(CASE WHEN score >= 9 THEN 1 ELSE 0 END),
                   sum(CASE WHEN score <= 6 THEN 1 ELSE 0 END)
            FROM record WHERE {live} AND kind = 'survey_response'
            AND created_at >= :lo AND created_at < :hi AND score IS NOT NULL
            AND {customer_type} = 'New Customer'""",
        "20% of new customers through referral (word of mouth)": f"""
            SELECT 100.0 * sum(CASE WHEN lead_source = 'Referral' THEN 1 ELSE 0 END)
                   / nullif(count(*), 0)
            FROM record WHERE {live} AND kind = 'opportunity'
            AND close_date >= :d0 AND close_date < :d1 AND is_won = {yes}
            AND deal_type = 'New Customer'""",
    }


# ---------------------------------------------------------------------------- timing


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


def measure(engine: Engine, repeat: int) -> list[dict[str, Any]]:
    """Per key result: p50/p95 of the mapping evaluation and of the hand-written SQL."""
    results = []
    with Session(engine) as session:
        ws = session.exec(select(Workspace).where(Workspace.slug == SLUG)).one()
        query = select(KeyResult).where(KeyResult.workspace_id == ws.id)
        krs = {kr.title: kr for kr in session.exec(query)}
        mappings = {m.key_result_id: m for m in session.exec(select(Mapping))}
        for title, statement in handwritten(engine.dialect.name).items():
            kr = krs[title]
            assert kr.id is not None
            results.append(_one(session, ws, kr, mappings[kr.id], statement, repeat))
            results[-1]["key_result"] = SHORT[title]
    return results


def _one(
    session: Session, ws: Workspace, kr: KeyResult, mapping: Mapping, sql: str, repeat: int
) -> dict[str, Any]:
    year = NOW.year
    d0, d1 = date(year, 1, 1), date(year + 1, 1, 1)
    lo, hi = (datetime.combine(d, dtime.min, tzinfo=PARIS) for d in (d0, d1))
    side = mapping.spec.get("denominator", mapping.spec)
    closed = side.get("date_field") == "closed"
    params: dict[str, Any] = {"c": side["connector_id"]}
    params |= {"d0": d0, "d1": d1} if closed else {"lo": lo, "hi": hi}
    query = text(sql)
    if not closed:
        query = query.bindparams(
            bindparam("lo", type_=UTCDateTime), bindparam("hi", type_=UTCDateTime)
        )

    # A sync looks up its key results' windows and connectors once for all of them.
    batch = load_batch(session, [mapping], [kr])

    def by_mapping() -> Any:
        return evaluate_mapping(session, ws, mapping, kr, NOW, batch).value

    def by_hand() -> Any:
        return session.execute(query, params).all()

    # The first evaluation in a process also checks the spec and builds its SQL.
    session.expire_all()
    _PLANS.clear()
    start = time.perf_counter()
    by_mapping()
    first = (time.perf_counter() - start) * 1000
    mine, theirs = _time(by_mapping, by_hand, repeat)
    lookups, _ = _time(lambda: load_batch(session, [mapping], [kr]), lambda: None, repeat)
    value = by_mapping()
    column = "close_date" if closed else "created_at"
    in_window = text(
        f"SELECT count(*) FROM record WHERE connector_id = :c AND kind = :k AND deleted = "
        f"{'false' if session.get_bind().dialect.name == 'postgresql' else '0'} "
        f"AND {column} >= :{'d0' if closed else 'lo'} AND {column} < :{'d1' if closed else 'hi'}"
    )
    if not closed:
        in_window = in_window.bindparams(
            bindparam("lo", type_=UTCDateTime), bindparam("hi", type_=UTCDateTime)
        )
    kind = side.get("kind", "survey_response")
    return {
        "value": None if value is None else float(round(value, 4)),
        "records_in_window": int(session.execute(in_window, params | {"k": kind}).scalar_one()),
        "first_ms": first,
        "batch_lookup_p50_ms": statistics.median(lookups),
        "mapping_p50_ms": statistics.median(mine),
        "mapping_p95_ms": _percentile(mine, 0.95),
        "sql_p50_ms": statistics.median(theirs),
        "sql_p95_ms": _percentile(theirs, 0.95),
    }


def _time(
    a: Callable[[], Any], b: Callable[[], Any], repeat: int
) -> tuple[list[float], list[float]]:
    for _ in range(5):  # warm the page cache and the statement caches
        a()
        b()
    ta, tb = [], []
    for _ in range(repeat):
        # Interleaved, so both see the same machine noise.
        start = time.perf_counter()
        a()
        ta.append((time.perf_counter() - start) * 1000)
        start = time.perf_counter()
        b()
        tb.append((time.perf_counter() - start) * 1000)
    return ta, tb


def report(name: str, results: list[dict[str, Any]]) -> bool:
    print(f"\n{name}")
    print(
        f"  {'key result':44} {'in window':>9} {'value':>12} {'first':>6} {'p50 ms':>7} "
        f"{'p95 ms':>7} {'SQL p50':>7} {'SQL p95':>7} {'ratio':>6}"
    )
    ok = True
    for r in results:
        ratio = r["mapping_p95_ms"] / r["sql_p95_ms"]
        ok &= r["mapping_p95_ms"] <= 10 and ratio <= 2
        print(
            f"  {r['key_result']:44} {r['records_in_window']:9,} "
            f"{r['value'] if r['value'] is not None else '-':>12} {r['first_ms']:6.1f} "
            f"{r['mapping_p50_ms']:7.2f} {r['mapping_p95_ms']:7.2f} "
            f"{r['sql_p50_ms']:7.2f} {r['sql_p95_ms']:7.2f} {ratio:6.2f}"
        )
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sqlite", default="/tmp/okr-bench-metric.db", help="SQLite file ('' to skip)"
    )
    parser.add_argument(
        "--postgresql", default="", help="PostgreSQL URL (an empty scratch database)"
    )
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--size", type=int, default=10_000, help="Tartempion's leads a year")
    parser.add_argument("--years", type=int, default=4, help="years of Tartempion history")
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--json", default="", help="also write the results here")
    parser.add_argument(
        "--reuse", action="store_true", help="measure the databases a previous run loaded"
    )
    args = parser.parse_args(argv)

    rows: list[dict[str, Any]] = []
    if not args.reuse:
        print(f"generating {args.years} years of {args.size:,} leads a year...", flush=True)
        started = time.perf_counter()
        rows = list(records(args.records, args.size, args.years))
        print(f"  {len(rows):,} records in {time.perf_counter() - started:.0f} s", flush=True)
    out: dict[str, Any] = {
        "records": args.records,
        "tartempion_records": len(rows) or None,
        "now": NOW.isoformat(),
        "repeat": args.repeat,
    }
    ok = True
    targets = []
    if args.sqlite:
        if not args.reuse:
            Path(args.sqlite).unlink(missing_ok=True)
        targets.append(("SQLite", f"sqlite:///{args.sqlite}"))
    if args.postgresql:
        targets.append(("PostgreSQL", args.postgresql))
    for name, url in targets:
        engine = db.make_engine(url)
        if not args.reuse:
            print(f"{name}: preparing", flush=True)
            prepare(engine, rows, args.records)
        results = measure(engine, args.repeat)
        ok &= report(name, results)
        out[name] = results
        engine.dispose()
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    print("\ntargets met" if ok else "\ntargets NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
