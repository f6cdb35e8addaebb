"""A deterministic, Salesforce- and Delighted-shaped dataset for company Tartempion.

`generate(seed, size, year)` builds every record's whole *timeline* for the year (and the
few months after it where late deals close): a list of versions, each a full snapshot of
the vendor fields at the moment it was written. A record exists from its first version on;
its state "as of now" is its last version at or before `now`; a deletion is a final
version flagged `deleted`. Nothing here reads the wall clock: the connector picks `now`.

Calibration (see BEHAVIOR.md): with `size` leads, about a third end the year qualified,
opportunities come from qualified leads (plus expansion deals on existing customers), and
their amounts are sized so that the won deals of the year add up to about EUR 1M for the
default size of 3000. Outcomes that drive the key results (lead source, qualification,
win/loss, NPS score) are dealt from shuffled decks with exact proportions rather than
independent coin flips, so the year-end figures land near their targets for any seed and
year while the order in which things happen stays random.
"""

from __future__ import annotations

import functools
import random
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from connectors.base import RecordKind

#: Tartempion is a French company: activity happens in Paris office hours.
PARIS = ZoneInfo("Europe/Paris")
DAY = 86_400

LEAD_STATUSES = ("Open", "Working", "Qualified", "Unqualified")
#: Lead sources per deck of 50: Referral is 8% of leads but converts and wins more.
LEAD_SOURCE_DECK = {
    "Web": 17,
    "Outbound": 9,
    "Event": 7,
    "Partner": 6,
    "Referral": 4,
    "Advertisement": 4,
    "Other": 3,
}
#: Share of *worked* leads that end up qualified, per source (numerator of a deck of 20).
QUALIFY_PER_20 = {
    "Referral": 16,
    "Partner": 10,
    "Event": 8,
    "Web": 8,
    "Outbound": 7,
    "Advertisement": 6,
    "Other": 6,
}
#: Salesforce's default opportunity path: stage, default probability, forecast category.
OPEN_STAGES = (
    ("Prospecting", 10, "Pipeline"),
    ("Qualification", 20, "Pipeline"),
    ("Needs Analysis", 40, "Pipeline"),
    ("Proposal/Price Quote", 75, "Best Case"),
    ("Negotiation/Review", 90, "Commit"),
)
#: (month, day) from which a decided deal is booked on 1 January of the next year.
YEAR_END_BOOKED_NEXT_YEAR_FROM = (12, 15)
NEW_CUSTOMER = "New Customer"
EXISTING_CUSTOMER = "Existing Customer"
#: Lead source of expansion deals, which do not come from a marketing lead.
EXPANSION_SOURCE = "Customer Success"
#: NPS scores per deck of 100. New customers: 84 promoters, 7 detractors (NPS 77).
NEW_CUSTOMER_SCORES = {10: 47, 9: 37, 8: 6, 7: 3, 6: 3, 5: 2, 3: 1, 0: 1}
#: Existing customers: 53 promoters, 17 detractors (NPS 36).
EXISTING_CUSTOMER_SCORES = {10: 25, 9: 28, 8: 18, 7: 12, 6: 7, 5: 5, 4: 2, 3: 1, 2: 1, 0: 1}

OWNERS = (
    ("005000000000001", "Camille Martin"),
    ("005000000000002", "Hugo Bernard"),
    ("005000000000003", "Léa Dubois"),
    ("005000000000004", "Lucas Thomas"),
    ("005000000000005", "Chloé Robert"),
    ("005000000000006", "Nathan Petit"),
)
FIRST_NAMES = (
    "Alice", "Antoine", "Camille", "Chloé", "Claire", "Élodie", "Émile", "Inès", "Jade",
    "Jules", "Julien", "Léa", "Louis", "Manon", "Marc", "Mathilde", "Nicolas", "Noémie",
    "Paul", "Pauline", "Raphaël", "Sarah", "Sophie", "Théo", "Thomas", "Yasmine",
)  # fmt: skip
LAST_NAMES = (
    "Bernard", "Bonnet", "Blanc", "Chevalier", "David", "Dubois", "Dupont", "Durand",
    "Faure", "Fournier", "Garnier", "Girard", "Lambert", "Laurent", "Lefebvre", "Leroy",
    "Martin", "Mercier", "Michel", "Moreau", "Morel", "Petit", "Richard", "Robert",
    "Roux", "Simon", "Thomas", "Vincent",
)  # fmt: skip
COMPANY_HEADS = (
    "Atelier", "Groupe", "Maison", "Compagnie", "Laboratoires", "Transports", "Éditions",
    "Studio", "Cabinet", "Fromagerie", "Brasserie", "Imprimerie", "Menuiserie", "Clinique",
)  # fmt: skip
COMPANY_TAILS = (
    "Arcadie", "Bellevue", "Beaumont", "Cassiopée", "Clairval", "Horizon", "Lumière",
    "Mistral", "Montaigne", "Océane", "Rivoli", "Saint-Clair", "Val d'Or", "Vauban",
    "Verdier", "Vercors",
)  # fmt: skip
INDUSTRIES = ("Retail", "Manufacturing", "Healthcare", "Hospitality", "Logistics", "Services")
COUNTRIES = ("FR", "FR", "FR", "FR", "BE", "CH", "LU", "CA")
PROMOTER_COMMENTS = ("Super équipe, très réactive.", "Great onboarding.", "Je recommande !")
PASSIVE_COMMENTS = ("Bien, mais l'outil manque d'intégrations.", "Good value overall.")
DETRACTOR_COMMENTS = ("Support trop lent.", "Invoicing errors twice this quarter.")


@dataclass(frozen=True, slots=True)
class Version:
    """One write of a record: the full vendor field snapshot at unix second `at`."""

    at: int
    raw: Mapping[str, Any]
    deleted: bool = False


@dataclass(frozen=True, slots=True)
class Timeline:
    """Every version of one record, oldest first (the first is its creation)."""

    kind: RecordKind
    source_id: str
    versions: tuple[Version, ...]

    @property
    def created_at(self) -> int:
        """Unix second of creation."""
        return self.versions[0].at

    def as_of(self, now: int) -> Version | None:
        """The version current at unix second `now`, None before creation."""
        current = None
        for version in self.versions:
            if version.at > now:
                break
            current = version
        return current


@dataclass(frozen=True, slots=True)
class Dataset:
    """Timelines of every kind for one (seed, size, year)."""

    seed: int
    size: int
    year: int
    timelines: Mapping[RecordKind, tuple[Timeline, ...]]


class Deck:
    """Deals categories in exact proportions per deck, in random order (a shuffled bag).

    Independent draws would let a small sample (90 won deals, 150 NPS answers) wander far
    from the intended rate; a bag keeps every prefix within one deck of it.
    """

    def __init__(self, rng: random.Random, counts: Mapping[Any, int]) -> None:
        self._rng = rng
        self._cards = [value for value, count in counts.items() for _ in range(count)]
        self._hand: list[Any] = []

    def draw(self) -> Any:
        """The next card, reshuffling a fresh deck when the hand is empty."""
        if not self._hand:
            self._hand = list(self._cards)
            self._rng.shuffle(self._hand)
        return self._hand.pop()


def yes_no(rng: random.Random, yes: int, out_of: int) -> Deck:
    """A deck answering True `yes` times out of `out_of`."""
    return Deck(rng, {True: yes, False: out_of - yes})


@functools.lru_cache(maxsize=16)
def generate(seed: int, size: int, year: int) -> Dataset:
    """The whole dataset (pure function of its arguments; cached)."""
    return _Generator(seed, size, year).run()


@functools.lru_cache(maxsize=65_536)
def live_answer(seed: int, at: int, index: int) -> Timeline:
    """Answer `index` of the live in-app NPS stream, given by a new customer at `at`.

    Scores come from decks of 100 cards with the new-customer proportions (one shuffled
    deck per 100 answers), so the stream keeps the dataset's NPS of about 77. The id is
    the answer's unix second, which no two answers of a stream share.
    """
    deck_rng = random.Random(f"tartempion-live:{seed}:{index // 100}")
    cards = [score for score, count in NEW_CUSTOMER_SCORES.items() for _ in range(count)]
    deck_rng.shuffle(cards)
    rng = random.Random(f"tartempion-live:{seed}:answer:{index}")
    company = f"{rng.choice(COMPANY_HEADS)} {rng.choice(COMPANY_TAILS)}"
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    answer_id = f"live-{at}"
    raw = {
        "id": answer_id,
        "person": {
            "id": f"live-person-{at}",
            "email": f"{_slug(first)}.{_slug(last)}.{at}@{_slug(company)}.example",
            "name": f"{first} {last}",
            "created_at": at,
        },
        "survey_type": "nps",
        "score": cards[index % 100],
        "comment": None,
        "permalink": f"https://demo.okr-sync.example/r/{answer_id}",
        "created_at": at,
        "updated_at": at,
        "person_properties": {
            "Customer Type": NEW_CUSTOMER,
            "Company": company,
            "Country": rng.choice(COUNTRIES),
        },
        "notes": [],
        "tags": [],
        "additional_answers": [],
    }
    return Timeline(RecordKind.survey_response, answer_id, (Version(at, raw),))


def salesforce_time(at: int) -> str:
    """A unix second in Salesforce's REST datetime format."""
    # isoformat + slicing: strftime was the generator's single biggest cost.
    return datetime.fromtimestamp(at, UTC).isoformat()[:19] + ".000+0000"


@functools.lru_cache(maxsize=4096)
def _slug(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(c if c.isalnum() else "-" for c in ascii_text.lower()).strip("-")


def _salesforce_stamp(at: int) -> dict[str, Any]:
    # Every write in the demo is a user edit, so both stamps move together.
    stamp = salesforce_time(at)
    return {"LastModifiedDate": stamp, "SystemModstamp": stamp}


def _delighted_stamp(at: int) -> dict[str, Any]:
    return {"updated_at": at}


def _close_date(at: int) -> date:
    """The CloseDate a deal decided at unix second `at` is booked with.

    Deals decided in the last fortnight of December are booked on 1 January, when their
    contract starts (a common Salesforce practice for year-end signatures). It also gives
    every year closed deals from its first minute, so the demo's conversion and referral
    ratios have a denominator on 1 January.
    """
    day = datetime.fromtimestamp(at, PARIS).date()
    if (day.month, day.day) >= YEAR_END_BOOKED_NEXT_YEAR_FROM:
        return date(day.year + 1, 1, 1)
    return day


@dataclass
class _Builder:
    """Accumulates the versions of one record; every write stamps the vendor's own
    modification field (`LastModifiedDate` or `updated_at`)."""

    kind: RecordKind
    source_id: str
    stamp: Callable[[int], dict[str, Any]] = _salesforce_stamp
    versions: list[Version] = field(default_factory=list)

    def write(self, at: int, changes: Mapping[str, Any]) -> int:
        """Append a version at `at` (moved after the previous one if needed); returns it."""
        return self._append(at, changes, deleted=False)

    def delete(self, at: int, changes: Mapping[str, Any]) -> int:
        """Append the deletion version; returns its time."""
        return self._append(at, changes, deleted=True)

    def _append(self, at: int, changes: Mapping[str, Any], *, deleted: bool) -> int:
        if self.versions and at <= self.versions[-1].at:
            # Timelines are strictly increasing so "as of now" is unambiguous.
            at = self.versions[-1].at + 60
        raw = dict(self.versions[-1].raw) if self.versions else {}
        raw.update(changes)
        raw.update(self.stamp(at))
        self.versions.append(Version(at, raw, deleted=deleted))
        return at

    def build(self) -> Timeline:
        return Timeline(self.kind, self.source_id, tuple(self.versions))


@dataclass
class _Customer:
    """A won new-customer deal, surveyed after onboarding."""

    account: str
    country: str
    won_at: int


class _Generator:
    def __init__(self, seed: int, size: int, year: int) -> None:
        # A string seed is hashed with SHA-512 by `random`: stable across runs and hosts.
        self.rng = random.Random(f"tartempion:{seed}:{size}:{year}")
        self.size = size
        self.year = year
        self.seed = seed
        rng = self.rng
        self.source_deck = Deck(rng, LEAD_SOURCE_DECK)
        self.qualify_decks = {s: yes_no(rng, n, 20) for s, n in QUALIFY_PER_20.items()}
        self.worked_deck = yes_no(rng, 17, 20)
        self.unqualify_deck = yes_no(rng, 7, 10)
        self.lead_deleted_deck = yes_no(rng, 1, 50)
        # One deck per group, so the referral share does not hinge on how one shared
        # deck happens to interleave a few hundred cards.
        self.opportunity_decks = {"Referral": yes_no(rng, 23, 100), "other": yes_no(rng, 23, 100)}
        self.win_decks = {
            "Referral": yes_no(rng, 13, 20),
            "other": yes_no(rng, 10, 21),
            EXPANSION_SOURCE: yes_no(rng, 11, 20),
        }
        self.opp_deleted_deck = yes_no(rng, 1, 100)
        self.new_scores = Deck(rng, NEW_CUSTOMER_SCORES)
        self.existing_scores = Deck(rng, EXISTING_CUSTOMER_SCORES)
        self.responds_deck = yes_no(rng, 3, 4)
        self.edited_deck = yes_no(rng, 3, 20)
        self.survey_deleted_deck = yes_no(rng, 1, 100)
        self._midnights: dict[date, int] = {}
        self.lead_count = 0
        self.opp_count = 0
        self.account_count = 0
        self.survey_count = 0
        self.person_count = 0
        self.leads: list[Timeline] = []
        self.opportunities: list[Timeline] = []
        self.surveys: list[Timeline] = []
        self.customers: list[_Customer] = []

    # --- time ---------------------------------------------------------------------------

    def _days(self) -> tuple[list[date], list[float]]:
        """Days of the year with their relative activity (weekends, summer, Christmas)."""
        season = {1: 0.9, 2: 1.0, 3: 1.05, 4: 1.0, 5: 0.9, 6: 1.0, 7: 0.8, 8: 0.45, 9: 1.1,
                  10: 1.1, 11: 1.05, 12: 0.7}  # fmt: skip
        days: list[date] = []
        weights: list[float] = []
        day = date(self.year, 1, 2)
        while day.year == self.year:
            weekday = day.weekday()
            weight = season[day.month] * (0.08 if weekday == 5 else 0.03 if weekday == 6 else 1)
            days.append(day)
            weights.append(weight)
            day += timedelta(days=1)
        return days, weights

    def _office_moment(self, day: date) -> int:
        """A random second of Paris office hours (08:00-19:00) on `day`, as unix seconds."""
        return self._paris_midnight(day) + self.rng.randint(8 * 3600, 19 * 3600 - 1)

    def _paris_midnight(self, day: date) -> int:
        # Cached per day: building zone-aware datetimes for every event dominated the run.
        # The offset is taken at noon, so the 02:00/03:00 DST switch cannot shift office
        # hours.
        base = self._midnights.get(day)
        if base is None:
            noon = datetime(day.year, day.month, day.day, 12, tzinfo=PARIS)
            base = int(noon.timestamp()) - 12 * 3600
            self._midnights[day] = base
        return base

    def _later(self, at: int, low_days: float, high_days: float) -> int:
        """A working moment `low..high` days after `at` (weekends pushed to Monday)."""
        target = at + int(self.rng.uniform(low_days, high_days) * DAY)
        day = datetime.fromtimestamp(target, PARIS).date()
        while day.weekday() >= 5:
            day += timedelta(days=1)
        moment = self._office_moment(day)
        return moment if moment > at else at + self.rng.randint(300, 3600)

    # --- people and companies -----------------------------------------------------------

    def _company(self) -> str:
        return f"{self.rng.choice(COMPANY_HEADS)} {self.rng.choice(COMPANY_TAILS)}"

    def _person(self, company: str) -> tuple[str, str, str]:
        first, last = self.rng.choice(FIRST_NAMES), self.rng.choice(LAST_NAMES)
        self.person_count += 1
        email = f"{_slug(first)}.{_slug(last)}{self.person_count}@{_slug(company)}.example"
        return first, last, email

    # --- generation ---------------------------------------------------------------------

    def run(self) -> Dataset:
        days, weights = self._days()
        lead_days = self.rng.choices(days, weights, k=self.size)
        created = sorted(self._office_moment(day) for day in lead_days)
        for at in created:
            self._lead(at)
        # Expansion deals on existing customers: about 3% of the lead volume, all year.
        for day in sorted(self.rng.choices(days, weights, k=max(1, round(self.size * 0.03)))):
            self._opportunity(self._office_moment(day), lead=None)
        for day in sorted(self.rng.choices(days, weights, k=max(1, round(self.size * 0.11)))):
            moment = self._office_moment(day)
            self._survey(moment, EXISTING_CUSTOMER, self._company(), self.rng.choice(COUNTRIES))
        for customer in self.customers:
            # Two to four contacts per new account are surveyed after onboarding.
            for _ in range(self.rng.choice((2, 2, 3, 3, 4))):
                if self.responds_deck.draw():
                    at = self._later(customer.won_at, 20, 60)
                    self._survey(at, NEW_CUSTOMER, customer.account, customer.country)
        self._book_one_won_deal_next_year()
        return Dataset(
            seed=self.seed,
            size=self.size,
            year=self.year,
            timelines={
                RecordKind.lead: tuple(sorted(self.leads, key=lambda t: t.source_id)),
                RecordKind.opportunity: tuple(
                    sorted(self.opportunities, key=lambda t: t.source_id)
                ),
                RecordKind.survey_response: tuple(sorted(self.surveys, key=lambda t: t.source_id)),
            },
        )

    def _book_one_won_deal_next_year(self) -> None:
        """Make sure the next year opens with a won new-customer deal booked on 1 January.

        Year-end deals are booked on 1 January already (`_close_date`); when none of them is
        a won new-customer deal, the year's last one is booked there too (its contract
        starts then). So the next year's conversion and referral ratios have a denominator
        from their first minute, for every seed and year.
        """
        next_year = date(self.year + 1, 1, 1).isoformat()
        best: tuple[int, int, int] | None = None  # (decided at, opportunity index, version)
        for index, timeline in enumerate(self.opportunities):
            final = timeline.versions[-1]
            if final.deleted or not final.raw["IsWon"] or final.raw["Type"] != NEW_CUSTOMER:
                continue
            if final.raw["CloseDate"] == next_year:
                return
            decided = next(i for i, v in enumerate(timeline.versions) if v.raw["IsClosed"])
            at = timeline.versions[decided].at
            if datetime.fromtimestamp(at, PARIS).year == self.year and (
                best is None or at > best[0]
            ):
                best = (at, index, decided)
        if best is None:
            return
        _, index, decided = best
        timeline = self.opportunities[index]
        versions = [
            v if i < decided else Version(v.at, {**v.raw, "CloseDate": next_year}, v.deleted)
            for i, v in enumerate(timeline.versions)
        ]
        self.opportunities[index] = Timeline(timeline.kind, timeline.source_id, tuple(versions))

    def _lead(self, at: int) -> None:
        rng = self.rng
        self.lead_count += 1
        lead_id = f"00Q{self.year % 100:02d}{self.lead_count:010d}"
        company = self._company()
        first, last, email = self._person(company)
        owner_id, owner_name = rng.choice(OWNERS)
        source = self.source_deck.draw()
        lead = _Builder(RecordKind.lead, lead_id)
        lead.write(
            at,
            {
                "Id": lead_id,
                "FirstName": first,
                "LastName": last,
                "Name": f"{first} {last}",
                "Company": company,
                "Title": rng.choice(("CEO", "COO", "Head of Sales", "Office Manager", "CFO")),
                "Email": email,
                "Country": rng.choice(COUNTRIES),
                "Industry": rng.choice(INDUSTRIES),
                "LeadSource": source,
                "Status": "Open",
                "OwnerId": owner_id,
                "OwnerName": owner_name,
                "IsConverted": False,
                "ConvertedDate": None,
                "ConvertedOpportunityId": None,
                "IsDeleted": False,
                "CreatedDate": salesforce_time(at),
            },
        )
        # Duplicates are merged away within days of their creation.
        if self.lead_deleted_deck.draw():
            lead.delete(self._later(at, 0.5, 15), {"IsDeleted": True})
            self.leads.append(lead.build())
            return
        if self.worked_deck.draw():
            worked = lead.write(self._later(at, 0.1, 4), {"Status": "Working"})
            if self.qualify_decks[source].draw():
                qualified = lead.write(self._later(worked, 2, 25), {"Status": "Qualified"})
                group = "Referral" if source == "Referral" else "other"
                if self.opportunity_decks[group].draw():
                    converted = self._later(qualified, 0, 5)
                    opp_id = self._opportunity(converted, lead=lead)
                    lead.write(
                        converted,
                        {
                            "IsConverted": True,
                            "ConvertedDate": datetime.fromtimestamp(converted, PARIS)
                            .date()
                            .isoformat(),
                            "ConvertedOpportunityId": opp_id,
                        },
                    )
            elif self.unqualify_deck.draw():
                lead.write(self._later(worked, 3, 40), {"Status": "Unqualified"})
        self.leads.append(lead.build())

    def _opportunity(self, at: int, lead: _Builder | None) -> str:
        rng = self.rng
        self.opp_count += 1
        self.account_count += 1
        opp_id = f"006{self.year % 100:02d}{self.opp_count:010d}"
        if lead is not None:
            lead_raw = lead.versions[-1].raw
            account, source, owner = (
                lead_raw["Company"],
                lead_raw["LeadSource"],
                (
                    lead_raw["OwnerId"],
                    lead_raw["OwnerName"],
                ),
            )
            country, deal_type = lead_raw["Country"], NEW_CUSTOMER
            # Annual recurring amount of a new subscription: median EUR 7.9k.
            amount = rng.lognormvariate(8.98, 0.5)
            win_deck = self.win_decks["Referral" if source == "Referral" else "other"]
            cycle_won, cycle_lost = (30, 110), (10, 80)
        else:
            account, source, owner = self._company(), EXPANSION_SOURCE, rng.choice(OWNERS)
            country, deal_type = rng.choice(COUNTRIES), EXISTING_CUSTOMER
            # Expansion (more seats, more sites): median EUR 4k a year.
            amount = rng.lognormvariate(8.29, 0.5)
            win_deck = self.win_decks[EXPANSION_SOURCE]
            cycle_won, cycle_lost = (15, 60), (10, 50)
        amount = round(amount, -2)
        won = win_deck.draw()
        cycle = rng.uniform(*(cycle_won if won else cycle_lost))
        expected_close = datetime.fromtimestamp(at + int(rng.uniform(30, 90) * DAY), PARIS).date()
        opp = _Builder(RecordKind.opportunity, opp_id)
        name_suffix = "New Business" if deal_type == NEW_CUSTOMER else "Expansion"
        first_stage, first_probability, first_category = OPEN_STAGES[0]
        opp.write(
            at,
            {
                "Id": opp_id,
                "Name": f"{account} - {name_suffix}",
                "AccountId": f"001{self.year % 100:02d}{self.account_count:010d}",
                "AccountName": account,
                "StageName": first_stage,
                "Probability": first_probability,
                "ForecastCategoryName": first_category,
                "IsClosed": False,
                "IsWon": False,
                "CloseDate": expected_close.isoformat(),
                "Amount": amount,
                "CurrencyIsoCode": "EUR",
                "Type": deal_type,
                "LeadSource": source,
                "OwnerId": owner[0],
                "OwnerName": owner[1],
                "IsDeleted": False,
                "CreatedDate": salesforce_time(at),
            },
        )
        # A lost deal drops out somewhere along the path; a won one walks all of it.
        steps = len(OPEN_STAGES) - 1 if won else rng.randint(0, len(OPEN_STAGES) - 2)
        moment = at
        for index in range(1, steps + 1):
            moment = self._later(moment, cycle / (steps + 1) * 0.6, cycle / (steps + 1) * 1.4)
            stage, probability, category = OPEN_STAGES[index]
            changes: dict[str, Any] = {
                "StageName": stage,
                "Probability": probability,
                "ForecastCategoryName": category,
            }
            if stage == "Proposal/Price Quote":
                # The quote revises the early estimate.
                changes["Amount"] = round(amount * rng.uniform(0.85, 1.15), -2)
            opp.write(moment, changes)
        closed = self._later(moment, cycle / (steps + 1) * 0.6, cycle / (steps + 1) * 1.4)
        closed = opp.write(
            closed,
            {
                "StageName": "Closed Won" if won else "Closed Lost",
                "Probability": 100 if won else 0,
                "ForecastCategoryName": "Closed" if won else "Omitted",
                "IsClosed": True,
                "IsWon": won,
                "CloseDate": _close_date(closed).isoformat(),
            },
        )
        if self.opp_deleted_deck.draw():
            # Test opportunities and duplicates get cleaned up a few weeks later.
            opp.delete(self._later(closed, 5, 40), {"IsDeleted": True})
        elif won and deal_type == NEW_CUSTOMER:
            self.customers.append(_Customer(account, country, closed))
        self.opportunities.append(opp.build())
        return opp_id

    def _survey(self, at: int, customer_type: str, company: str, country: str) -> None:
        rng = self.rng
        self.survey_count += 1
        survey_id = str(40_000_000 + self.survey_count)
        first, last, email = self._person(company)
        deck = self.new_scores if customer_type == NEW_CUSTOMER else self.existing_scores
        score = int(deck.draw())
        survey = _Builder(RecordKind.survey_response, survey_id, stamp=_delighted_stamp)
        person_id = str(70_000_000 + self.person_count)
        survey.write(
            at,
            {
                "id": survey_id,
                "person": {
                    "id": person_id,
                    "email": email,
                    "name": f"{first} {last}",
                    "created_at": at,
                },
                "survey_type": "nps",
                "score": score,
                "comment": None,
                "permalink": f"https://demo.okr-sync.example/r/{survey_id}",
                "created_at": at,
                "person_properties": {
                    "Customer Type": customer_type,
                    "Company": company,
                    "Country": country,
                },
                "notes": [],
                "tags": [],
                "additional_answers": [],
            },
        )
        if self.edited_deck.draw():
            # Respondents often come back to add a comment to their score.
            comments = (
                PROMOTER_COMMENTS if score >= 9 else PASSIVE_COMMENTS if score >= 7
                else DETRACTOR_COMMENTS
            )  # fmt: skip
            survey.write(self._later(at, 0, 10), {"comment": rng.choice(comments)})
        if self.survey_deleted_deck.draw():
            # A person asked to be forgotten: Delighted deletes their responses.
            survey.delete(self._later(survey.versions[-1].at, 10, 90), {})
        self.surveys.append(survey.build())
