"""HubSpot connector wired to the local fake HubSpot API (tests/fakes/hubspot.py)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from connectors.base import RecordKind, Runtime
from connectors.hubspot.connector import HubSpotConfig, HubSpotConnector, HubSpotSecrets
from tests.fakes.hubspot import FakeHubSpot, iso_ms
from tests.fakes.server import ALLOWED_HOSTS, Served, serve

GOOD_TOKEN = "pat-na1-0b1e2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
BAD_TOKEN = "pat-na1-ffffffff-ffff-4fff-8fff-ffffffffffff"

OBJECT_TYPES = {
    RecordKind.contact: "contacts",
    RecordKind.deal: "deals",
    RecordKind.survey_response: "feedback_submissions",
}

LIFECYCLE_STAGES = ("lead", "marketingqualifiedlead", "salesqualifiedlead", "customer")
SOURCES = ("REFERRALS", "ORGANIC_SEARCH", "PAID_SEARCH", "DIRECT_TRAFFIC")
DEAL_STAGES = ("appointmentscheduled", "qualifiedtobuy", "contractsent", "closedwon", "closedlost")


def contact_properties(n: int) -> dict[str, str | None]:
    """A plausible contact's stored properties."""
    return {
        "email": f"person{n}@example.com",
        "firstname": f"Person{n}",
        "lifecyclestage": LIFECYCLE_STAGES[n % len(LIFECYCLE_STAGES)],
        "hs_lead_status": "NEW" if n % 2 else "IN_PROGRESS",
        "hs_analytics_source": SOURCES[n % len(SOURCES)],
        "hubspot_owner_id": str(500 + n % 3),
    }


def deal_properties(
    n: int, *, stage: str | None = None, pipeline: str = "default"
) -> dict[str, str | None]:
    """A plausible deal's stored properties (the closed flags match the default pipeline)."""
    stage = stage or DEAL_STAGES[n % len(DEAL_STAGES)]
    return {
        "dealname": f"Deal {n}",
        "pipeline": pipeline,
        "dealstage": stage,
        "amount": f"{1000 + n}.50",
        "closedate": "2024-03-31T22:30:00.000Z",
        "dealtype": "newbusiness" if n % 2 else "existingbusiness",
        "hs_is_closed": "true" if stage in ("closedwon", "closedlost") else "false",
        "hs_is_closed_won": "true" if stage == "closedwon" else "false",
        "hs_analytics_source": SOURCES[n % len(SOURCES)],
        "hubspot_owner_id": str(500 + n % 3),
    }


def feedback_properties(n: int, submitted_ms: int) -> dict[str, str | None]:
    """A plausible NPS feedback submission's stored properties."""
    score = n % 11
    group = "PROMOTER" if score >= 9 else "PASSIVE" if score >= 7 else "DETRACTOR"
    return {
        "hs_value": str(score),
        "hs_survey_type": "NPS",
        "hs_survey_channel": "EMAIL",
        "hs_response_group": group,
        "hs_submission_timestamp": iso_ms(submitted_ms),
        "hs_content": f"comment {n}",
    }


class HubSpotHarness:
    """A `SourceHarness` over a running fake HubSpot."""

    name = "hubspot"
    kinds = (RecordKind.contact, RecordKind.deal, RecordKind.survey_response)

    def __init__(self, fake: FakeHubSpot, served: Served) -> None:
        self.fake = fake
        self.served = served
        self._counter = 0

    def config(self, **overrides: Any) -> HubSpotConfig:
        """Connector configuration pointing at the fake."""
        return HubSpotConfig(base_url=self.served.base_url, **overrides)

    def connector(self, runtime: Runtime | None = None, **config: Any) -> HubSpotConnector:
        """A connector with the good token (and a CA bundle when the fake serves TLS)."""
        runtime = runtime or Runtime()
        if self.served.ca_bundle is not None and runtime.ca_bundle is None:
            runtime.ca_bundle = self.served.ca_bundle
        if not runtime.allowed_hosts:
            runtime.allowed_hosts = ALLOWED_HOSTS
        return HubSpotConnector(
            self.config(**config), HubSpotSecrets(access_token=GOOD_TOKEN), runtime
        )

    def bad_credentials_connector(self) -> HubSpotConnector:
        """A connector whose token the fake rejects with 401."""
        runtime = Runtime(ca_bundle=self.served.ca_bundle, allowed_hosts=ALLOWED_HOSTS)
        return HubSpotConnector(self.config(), HubSpotSecrets(access_token=BAD_TOKEN), runtime)

    def add(self, kind: RecordKind) -> str:
        """Create one plausible record of `kind` stamped after every existing one."""
        self._counter += 1
        n = self._counter
        stamp = self.fake.tick()
        if kind is RecordKind.contact:
            props = contact_properties(n)
        elif kind is RecordKind.deal:
            props = deal_properties(n)
        else:
            props = feedback_properties(n, stamp)
        return str(self.fake.add(OBJECT_TYPES[kind], props, modified_ms=stamp).id)

    def seed(self, kind: RecordKind, n: int) -> None:
        """Create `n` records of `kind`, one second apart."""
        for _ in range(n):
            self.add(kind)

    def mutate(self, kind: RecordKind) -> None:
        """Add two records, modify two and archive one, all stamped after everything else."""
        object_type = OBJECT_TYPES[kind]
        live = sorted(int(i) for i in self.fake.live_ids(object_type))
        for object_id in live[:2]:
            change = (
                {"hs_lead_status": "CONNECTED"}
                if kind is RecordKind.contact
                else (
                    {"amount": "4242.00"} if kind is RecordKind.deal else {"hs_content": "edited"}
                )
            )
            self.fake.modify(object_type, object_id, change)
        if len(live) > 2:
            self.fake.archive(object_type, live[2])
        self.add(kind)
        self.add(kind)

    def edit(self, kind: RecordKind) -> str:
        """Contacts: new lead status, lifecycle stage, email and first name (raw only).
        Deals: an open deal is won (a won one reopened), with a new amount and name.
        Feedback: a new score, response group and comment."""
        object_type = OBJECT_TYPES[kind]
        objects = self.fake.objects[object_type]
        live = sorted(int(i) for i in self.fake.live_ids(object_type))
        if kind is RecordKind.contact:
            object_id = live[0]
            props = objects[object_id].properties
            change = {
                "hs_lead_status": "UNQUALIFIED"
                if props.get("hs_lead_status") != "UNQUALIFIED"
                else "CONNECTED",
                "lifecyclestage": "customer"
                if props.get("lifecyclestage") != "customer"
                else "lead",
                "email": f"edited{object_id}@example.com",
                "firstname": "Edited",
            }
        elif kind is RecordKind.deal:
            object_id = next(
                i for i in live if objects[i].properties.get("dealstage") != "closedlost"
            )
            props = objects[object_id].properties
            won = props.get("dealstage") == "closedwon"
            change = {
                "dealstage": "qualifiedtobuy" if won else "closedwon",
                "hs_is_closed": "false" if won else "true",
                "hs_is_closed_won": "false" if won else "true",
                "amount": "98765.43" if props.get("amount") != "98765.43" else "12345.67",
                "dealname": f"Edited deal {object_id}",
            }
        else:
            object_id = live[0]
            score = (int(objects[object_id].properties.get("hs_value") or 0) + 5) % 11
            change = {
                "hs_value": str(score),
                "hs_response_group": "PROMOTER"
                if score >= 9
                else "PASSIVE"
                if score >= 7
                else "DETRACTOR",
                "hs_content": f"edited comment {object_id}",
            }
        self.fake.modify(object_type, object_id, change)
        return str(object_id)

    def live_ids(self, kind: RecordKind) -> set[str]:
        """Ids of `kind` records that are not archived."""
        return self.fake.live_ids(OBJECT_TYPES[kind])

    def set_page_size(self, n: int) -> None:
        """Serve at most `n` records per page from every endpoint."""
        self.fake.page_size = n

    def now(self) -> datetime:
        return datetime.fromtimestamp((self.fake.tick(0) + 1000) / 1000, UTC)

    def stamp_all_equal(self, kind: RecordKind) -> None:
        """Give every `kind` record the same last-modified millisecond."""
        self.fake.set_all_modified(OBJECT_TYPES[kind], self.fake.tick())


@contextmanager
def make_harness(tmp_path: Path, *, tls: bool = False) -> Iterator[HubSpotHarness]:
    """Serve a fresh fake HubSpot for the block and yield a harness for it."""
    fake = FakeHubSpot(token=GOOD_TOKEN)
    with serve(fake.app, tls=tls, tmp_dir=str(tmp_path)) as served:
        yield HubSpotHarness(fake, served)
