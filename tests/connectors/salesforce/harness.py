"""The Salesforce connector wired to the fake org, served over TLS on loopback."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from connectors.base import RecordKind, Runtime
from connectors.salesforce.connector import (
    SalesforceConfig,
    SalesforceConnector,
    SalesforceSecrets,
)
from tests.fakes.salesforce import STAGES, FakeSalesforce
from tests.fakes.server import ALLOWED_HOSTS, Served, serve

SOBJECTS = {RecordKind.lead: "Lead", RecordKind.opportunity: "Opportunity"}


class SalesforceHarness:
    """`SourceHarness` for Salesforce, plus helpers the vendor-specific tests use."""

    name = "salesforce"
    kinds: tuple[RecordKind, ...] = (RecordKind.lead, RecordKind.opportunity)

    def __init__(self, fake: FakeSalesforce, served: Served) -> None:
        self.fake = fake
        self.served = served
        self._opened: list[SalesforceConnector] = []

    def close_connectors(self) -> None:
        """Close every connector handed out. An open keep-alive TLS connection (say, one held
        by a traceback kept in `pytest.raises`) would otherwise stall the server's shutdown."""
        for connector in self._opened:
            connector.close()
        self._opened.clear()

    # ------------------------------------------------------------------- building blocks

    def config(self, **overrides: Any) -> SalesforceConfig:
        """Config pointing at the fake (its URL stands in for the org's My Domain)."""
        values: dict[str, Any] = {"login_url": self.served.base_url}
        values.update(overrides)
        return SalesforceConfig(**values)

    def secrets(self, **overrides: Any) -> SalesforceSecrets:
        """The fake org's good credentials (password flow), with overrides."""
        values: dict[str, Any] = {
            "client_id": self.fake.client_id,
            "client_secret": self.fake.client_secret,
            "username": self.fake.username,
            "password": self.fake.password,
            "security_token": self.fake.security_token,
        }
        values.update(overrides)
        return SalesforceSecrets(**values)

    def runtime(self, runtime: Runtime | None = None) -> Runtime:
        """`runtime` (or a default one) trusting the fake's CA and allowed to reach it."""
        runtime = runtime or Runtime()
        if runtime.ca_bundle is None:
            runtime = dataclasses.replace(runtime, ca_bundle=self.served.ca_bundle)
        if not runtime.allowed_hosts:
            runtime = dataclasses.replace(runtime, allowed_hosts=ALLOWED_HOSTS)
        return runtime

    # ------------------------------------------------------------------- SourceHarness

    def connector(
        self,
        runtime: Runtime | None = None,
        *,
        config: SalesforceConfig | None = None,
        secrets: SalesforceSecrets | None = None,
    ) -> SalesforceConnector:
        """A connector with good credentials, talking to the fake over TLS."""
        connector = SalesforceConnector(
            config or self.config(), secrets or self.secrets(), self.runtime(runtime)
        )
        self._opened.append(connector)
        return connector

    def bad_credentials_connector(self) -> SalesforceConnector:
        """A connector whose password the fake rejects (`invalid_grant`)."""
        return self.connector(secrets=self.secrets(password="wrong-password"))

    def seed(self, kind: RecordKind, n: int) -> None:
        """Create `n` records; two records share each SystemModstamp second."""
        self.fake.seed(SOBJECTS[kind], n)

    def mutate(self, kind: RecordKind) -> None:
        """Add two, modify two and soft-delete one record, all stamped strictly later than
        anything stored (a whole second later: SystemModstamp has second precision)."""
        sobject = SOBJECTS[kind]
        self._tick_past_newest(sobject)
        live = sorted(self.fake.live_ids(sobject))
        change = (
            {"Status": "Working - Contacted"}
            if kind is RecordKind.lead
            else {"StageName": "Negotiation/Review"}
        )
        for record_id in live[:2]:
            self.fake.update(sobject, record_id, **change)
        if len(live) > 2:
            self.fake.delete(sobject, live[2])
        self.fake.seed(sobject, 2)

    def edit(self, kind: RecordKind) -> str:
        """Leads: new Status, LeadSource, Email and Industry (raw only). Opportunities: an
        open one is won (or a won one reopened), with a new Amount, Probability and Name."""
        sobject = SOBJECTS[kind]
        self._tick_past_newest(sobject)
        live = sorted(self.fake.live_ids(sobject))
        if kind is RecordKind.lead:
            record_id = live[0]
            row = self.fake.record(sobject, record_id)
            self.fake.update(
                sobject,
                record_id,
                Status="Closed - Converted"
                if row["Status"] != "Closed - Converted"
                else "Working - Contacted",
                LeadSource="Trade Show" if row["LeadSource"] != "Trade Show" else "Web",
                Email=f"edited.{record_id.lower()}@example.com",
                Industry="Edited industry",
            )
            return record_id
        record_id = next(
            i
            for i in live
            if not self.fake.record(sobject, i)["IsClosed"] or self.fake.record(sobject, i)["IsWon"]
        )
        row = self.fake.record(sobject, record_id)
        stage = "Prospecting" if row["IsWon"] else "Closed Won"
        probability, closed, won, forecast = STAGES[stage]
        self.fake.update(
            sobject,
            record_id,
            StageName=stage,
            IsClosed=closed,
            IsWon=won,
            Probability=float(probability),
            ForecastCategoryName=forecast,
            Amount=123456.78 if row["Amount"] != 123456.78 else 234567.89,
            Name=f"Edited {row['Name']}",
        )
        return record_id

    def _tick_past_newest(self, sobject: str) -> None:
        newest = self.fake.newest_stamp(sobject)
        now = self.fake.now()
        if newest is not None and now <= newest:
            self.fake.tick(int((newest - now) / timedelta(seconds=1)) + 1)
        else:
            self.fake.tick()

    def live_ids(self, kind: RecordKind) -> set[str]:
        """Ids not in the Recycle Bin."""
        return self.fake.live_ids(SOBJECTS[kind])

    def set_page_size(self, n: int) -> None:
        """Cap every REST batch at `n` records (below Salesforce's 200 minimum on purpose)."""
        self.fake.page_size = n

    def now(self) -> datetime:
        return self.fake.now() + timedelta(seconds=1)

    def stamp_all_equal(self, kind: RecordKind) -> None:
        """Give every record of `kind` one SystemModstamp (a bulk update's effect)."""
        self.fake.restamp_all(SOBJECTS[kind], self.fake.tick())


@contextmanager
def make_harness(tmp_path: Path, **fake_options: Any) -> Iterator[SalesforceHarness]:
    """Serve a fresh fake org over TLS for the duration of the block."""
    fake = FakeSalesforce(**fake_options)
    with serve(fake.app, tls=True, tmp_dir=str(tmp_path)) as served:
        harness = SalesforceHarness(fake, served)
        try:
            yield harness
        finally:
            harness.close_connectors()
