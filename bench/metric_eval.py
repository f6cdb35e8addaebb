"""Benchmark: evaluate the five Tartempion key results over 1,000,000 stored records.

The store holds the demo connector's records for several years (the deterministic demo
dataset, `size` leads a year plus their opportunities and NPS answers, up to 1,000,000
records in all). Each key result is evaluated the way a sync does it (parse the stored spec,
resolve the window, plan, aggregate in SQL) and compared with the equivalent hand-written SQL
aggregate, timed in the same run on the same connection.

    .venv/bin/python -m bench.metric_eval                       # SQLite (a file in /tmp)
    .venv/bin/python -m bench.metric_eval --postgresql postgresql://root@127.0.0.1:5432/bench
    .venv/bin/python -m bench.metric_eval --sqlite /tmp/m.db --postgresql ... --records 1000000

Targets (issue 4): p95 <= 10 ms per key result, and p95 within 2x of the hand-written SQL.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, time as dtime
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
from service.mappings import evaluate as ev
from service.mappings.models import Mapping
from service.mappings.spec import parse_spec
from service.okr.models import KeyResult
from service.sync.models import AMOUNT_SCALE, SyncedRecord
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


def records(total: int, size: int) -> Iterator[dict[str, Any]]:
    """Up to `total` demo records: the current year as of NOW, then whole earlier years."""
    year, produced = NOW.year, 0
    while produced < total:
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


def prepare(engine: Engine, rows: list[dict[str, Any]]) -> None:
    """Migrate, load Tartempion (its key results bound to the demo connector), store rows."""
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
    for row in rows:
        row["workspace_id"], row["connector_id"] = ws_id, connector_id
    table = SyncedRecord.__table__  # type: ignore[attr-defined]
    started = time.perf_counter()
    if engine.dialect.name == "postgresql":
        _copy(engine, rows)
    else:
        with engine.begin() as conn:
            for i in range(0, len(rows), 20_000):
                conn.execute(table.insert(), rows[i : i + 20_000])
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE" if engine.dialect.name == "postgresql" else "ANALYZE"))
    print(f"  loaded {len(rows):,} records in {time.perf_counter() - started:.0f} s", flush=True)


def _copy(engine: Engine, rows: list[dict[str, Any]]) -> None:
    columns = [c for c in rows[0] if c != "raw"] + ["raw"]
    raw_conn = engine.raw_connection()
    try:
        cursor = raw_conn.cursor()
        with cursor.copy(f"COPY record ({', '.join(columns)}) FROM STDIN") as copy:  # type: ignore[attr-defined]
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
        krs = {kr.title: kr for kr in session.exec(select(KeyResult).where(KeyResult.workspace_id == ws.id))}
        mappings = {m.key_result_id: m for m in session.exec(select(Mapping))}
        sql = handwritten(engine.dialect.name)
        year = NOW.year
        d0, d1 = date(year, 1, 1), date(year + 1, 1, 1)
        lo, hi = (datetime.combine(d, dtime.min, tzinfo=PARIS) for d in (d0, d1))
        for title, statement in sql.items():
            kr = krs[title]
            mapping = mappings[kr.id]  # type: ignore[index]
            query = text(statement).bindparams(
                bindparam("lo", type_=UTCDateTime), bindparam("hi", type_=UTCDateTime)
            ) if ":lo" in statement else text(statement)
            params: dict[str, Any] = {"c": mapping.spec.get("connector_id") or mapping.spec["numerator"]["connector_id"]}
            params |= {"lo": lo, "hi": hi} if ":lo" in statement else {"d0": d0, "d1": d1}

            def by_mapping() -> Any:
                spec = parse_spec(mapping.spec)
                ctx = ev.context_for(session, ws, NOW, kr)
                return ev.evaluate(session, ctx, ev.plan(session, ctx, spec)).value

            def by_hand() -> Any:
                return session.execute(query, params).all()

            mine, theirs = _time(by_mapping, by_hand, repeat)
            value = by_mapping()
            results.append(
                {
                    "key_result": SHORT[title],
                    "value": None if value is None else float(round(value, 4)),
                    "mapping_p50_ms": statistics.median(mine),
                    "mapping_p95_ms": _percentile(mine, 0.95),
                    "sql_p50_ms": statistics.median(theirs),
                    "sql_p95_ms": _percentile(theirs, 0.95),
                }
            )
    return results


def _time(a: Callable[[], Any], b: Callable[[], Any], repeat: int) -> tuple[list[float], list[float]]:
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
    print(f"  {'key result':44} {'value':>12} {'p50 ms':>8} {'p95 ms':>8} {'SQL p50':>8} {'SQL p95':>8} {'ratio':>6}")
    ok = True
    for r in results:
        ratio = r["mapping_p95_ms"] / r["sql_p95_ms"]
        ok &= r["mapping_p95_ms"] <= 10 and ratio <= 2
        print(
            f"  {r['key_result']:44} {r['value'] if r['value'] is not None else '-':>12} "
            f"{r['mapping_p50_ms']:8.2f} {r['mapping_p95_ms']:8.2f} "
            f"{r['sql_p50_ms']:8.2f} {r['sql_p95_ms']:8.2f} {ratio:6.2f}"
        )
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sqlite", default="/tmp/okr-bench-metric.db", help="SQLite file ('' to skip)")
    parser.add_argument("--postgresql", default="", help="PostgreSQL URL (an empty scratch database)")
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--size", type=int, default=100_000, help="demo leads per year")
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--json", default="", help="also write the results here")
    args = parser.parse_args(argv)

    print(f"generating {args.records:,} demo records ({args.size:,} leads a year)...", flush=True)
    started = time.perf_counter()
    rows = list(records(args.records, args.size))
    print(f"  {len(rows):,} records in {time.perf_counter() - started:.0f} s", flush=True)
    out: dict[str, Any] = {"records": len(rows), "now": NOW.isoformat(), "repeat": args.repeat}
    ok = True
    targets = []
    if args.sqlite:
        Path(args.sqlite).unlink(missing_ok=True)
        targets.append(("SQLite", f"sqlite:///{args.sqlite}"))
    if args.postgresql:
        targets.append(("PostgreSQL", args.postgresql))
    for name, url in targets:
        engine = db.make_engine(url)
        print(f"{name}: preparing", flush=True)
        prepare(engine, [dict(r) for r in rows])
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
