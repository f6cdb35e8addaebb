"""Delighted harness: the connector against an in-process fake of the Delighted API (respx).

The fake keeps survey responses in memory and answers `GET /survey_responses.json` with
Delighted's paging and filter semantics (`per_page` capped at 100, 1-based `page`,
inclusive `since`/`until` on `created_at` and `updated_since`/`updated_until` on
`updated_at`, `order` asc/desc by creation or `updated_at`, `expand[]=person`) and
`GET /metrics.json`. Tests script failures (429, 5xx, timeouts, garbage) ahead of the
normal answers with `FakeDelighted.script`.
"""

from __future__ import annotations

import base64
import json
import random
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import respx

from connectors.base import Connector, RecordKind, Runtime
from connectors.delighted.connector import (
    DEFAULT_BASE_URL,
    DelightedConfig,
    DelightedConnector,
    DelightedSecrets,
)
from connectors.retry import RetryPolicy

#: The vendor's own URL: respx answers in-process, so nothing leaves, and the connector's
#: host policy accepts it without any allowlist.
BASE_URL = DEFAULT_BASE_URL
API_KEY = "dlt-test-key-5ecret-0123456789"
#: 2026-01-01T12:00:00Z: the fake's clock starts here.
START_CLOCK = 1_767_268_800

Scripted = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]


@dataclass
class FakeDelighted:
    """In-memory Delighted account."""

    api_key: str = API_KEY
    clock: int = START_CLOCK
    max_per_page: int = 100
    #: Serve page 1 whatever `page` asks (a misbehaving API, for the loop guard test).
    ignore_page: bool = False
    #: Whether `updated_since` / `updated_until` list a never-edited response (`updated_at`
    #: null) as if updated at its creation (True), or leave it out (False). Delighted does
    #: not document which; the connector must be right either way.
    never_edited_in_updated_windows: bool = True
    responses: dict[str, dict[str, Any]] = field(default_factory=dict)
    people: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)
    scripted: deque[Scripted] = field(default_factory=deque)
    #: Called after each served list page (to change data in the middle of a read).
    after_list: Callable[[int], None] | None = None
    rng: random.Random = field(default_factory=lambda: random.Random(20))
    _next_id: int = 1

    # --- data control -----------------------------------------------------------------

    def tick(self, seconds: int = 1) -> int:
        """Advance the fake's clock; returns the new unix second."""
        self.clock += seconds
        return self.clock

    def add(
        self,
        *,
        score: int | None = None,
        at: int | None = None,
        updated_at: int | None | str = "same",
        customer_type: str = "New Customer",
        email: str | None = None,
    ) -> dict[str, Any]:
        """Create a response (and its person) at `at` (default: the clock)."""
        number = self._next_id
        self._next_id += 1
        created = self.clock if at is None else at
        person_id = str(1000 + number)
        self.people[person_id] = {
            "id": person_id,
            "email": email or f"customer{number}@tartempion-client.example",
            "name": f"Customer {number}",
            "created_at": created,
            "phone_number": None,
            "last_sent_at": created,
            "last_responded_at": created,
            "next_survey_scheduled_at": None,
        }
        response = {
            "id": str(number),
            "person": person_id,
            "survey_type": "nps",
            "score": self.rng.randint(0, 10) if score is None else score,
            "comment": None,
            "permalink": f"https://app.delighted.test/r/{number:08d}",
            "created_at": created,
            "updated_at": created if updated_at == "same" else updated_at,
            "person_properties": {"Customer Type": customer_type, "Country": "FR"},
            "notes": [],
            "tags": [],
            "additional_answers": [],
        }
        self.responses[response["id"]] = response
        return response

    def update(self, response_id: str, **changes: Any) -> None:
        """Edit a response now: Delighted bumps `updated_at`."""
        self.responses[response_id].update(changes, updated_at=self.clock)

    def delete(self, response_id: str) -> None:
        """Delete a response (Delighted then simply stops listing it)."""
        del self.responses[response_id]

    def script(self, *answers: Scripted) -> None:
        """Serve these answers, in order, before behaving normally again."""
        self.scripted.extend(answers)

    def list_requests(self) -> list[httpx.Request]:
        """Requests made to `/survey_responses.json`."""
        return [r for r in self.requests if r.url.path.endswith("/survey_responses.json")]

    # --- HTTP -------------------------------------------------------------------------

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.scripted:
            answer = self.scripted.popleft()
            if isinstance(answer, Exception):
                raise answer
            if isinstance(answer, httpx.Response):
                return answer
            return answer(request)
        if not self._authorised(request):
            return httpx.Response(401, json={"status": 401, "message": "Unauthorized"})
        if request.url.path.endswith("/metrics.json"):
            return self._metrics()
        response = self._list(request)
        if self.after_list is not None:
            self.after_list(len(self.list_requests()))
        return response

    def _authorised(self, request: httpx.Request) -> bool:
        expected = base64.b64encode(f"{self.api_key}:".encode()).decode()
        return request.headers.get("Authorization") == f"Basic {expected}"

    def _list(self, request: httpx.Request) -> httpx.Response:
        q = request.url.params
        per_page = min(int(q.get("per_page", 20)), 100, self.max_per_page)
        page = 1 if self.ignore_page else int(q.get("page", 1))
        rows = list(self.responses.values())

        def stamp(row: dict[str, Any]) -> int:
            # A never-edited response (updated_at null) is treated as updated at creation.
            value = row["updated_at"]
            return int(row["created_at"] if value is None else value)

        bounds: list[tuple[str, Callable[[dict[str, Any]], int], bool]] = [
            ("since", lambda r: int(r["created_at"]), True),
            ("until", lambda r: int(r["created_at"]), False),
            ("updated_since", stamp, True),
            ("updated_until", stamp, False),
        ]
        if not self.never_edited_in_updated_windows and (
            "updated_since" in q or "updated_until" in q
        ):
            rows = [r for r in rows if r["updated_at"] is not None]
        for name, key, lower in bounds:
            if name in q:
                limit = int(q[name])
                rows = [r for r in rows if (key(r) >= limit if lower else key(r) <= limit)]
        order = q.get("order", "asc")
        by_updated = order.endswith(":updated_at")
        rows.sort(
            key=lambda r: (stamp(r) if by_updated else int(r["created_at"]), int(r["id"])),
            reverse=order.startswith("desc"),
        )
        chunk = rows[(page - 1) * per_page : page * per_page]
        expand = "person" in q.get_list("expand[]")
        body = [
            {**r, "person": dict(self.people[r["person"]]) if expand else r["person"]}
            for r in chunk
        ]
        return httpx.Response(
            200, content=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )

    def _metrics(self) -> httpx.Response:
        scores = [int(r["score"]) for r in self.responses.values()]
        promoters = sum(s >= 9 for s in scores)
        detractors = sum(s <= 6 for s in scores)
        total = len(scores)
        nps = round(100 * (promoters - detractors) / total) if total else 0
        return httpx.Response(
            200,
            json={
                "nps": nps,
                "promoter_count": promoters,
                "passive_count": total - promoters - detractors,
                "detractor_count": detractors,
                "response_count": total,
            },
        )


def make_runtime(sleeps: list[float] | None = None, *, max_attempts: int = 5) -> Runtime:
    """A runtime whose retry policy records its waits instead of sleeping."""
    record = sleeps if sleeps is not None else []
    return Runtime(retry=RetryPolicy(max_attempts=max_attempts, sleep=record.append))


@dataclass
class DelightedHarness:
    """`SourceHarness` for Delighted."""

    fake: FakeDelighted
    name: str = "delighted"
    kinds: tuple[RecordKind, ...] = (RecordKind.survey_response,)

    def connector(self, runtime: Runtime | None = None) -> Connector:
        return self.make_connector(runtime=runtime)

    def make_connector(
        self, *, api_key: str = API_KEY, runtime: Runtime | None = None, per_page: int = 100
    ) -> DelightedConnector:
        return DelightedConnector(
            DelightedConfig(base_url=BASE_URL, per_page=per_page),
            DelightedSecrets(api_key=api_key),
            runtime or make_runtime(),
        )

    def bad_credentials_connector(self) -> Connector:
        return self.make_connector(api_key="not-the-right-key")

    def seed(self, kind: RecordKind, n: int) -> None:
        assert kind in self.kinds
        for _ in range(n):
            # 0-second steps put several responses in one second, as real bursts do.
            self.fake.tick(self.fake.rng.choice([0, 1, 1, 2, 5]))
            self.fake.add()

    def mutate(self, kind: RecordKind) -> None:
        assert kind in self.kinds
        ids = sorted(self.fake.responses, key=int)
        self.fake.tick()
        for response_id in ids[:2]:
            self.fake.update(response_id, comment="Edited after the first sync")
        self.fake.tick()
        self.fake.delete(ids[2])
        self.fake.tick()
        self.fake.add()
        self.fake.add()

    def edit(self, kind: RecordKind) -> str:
        """A new score, comment and customer properties for the oldest response."""
        assert kind in self.kinds
        response_id = min(self.fake.responses, key=int)
        response = self.fake.responses[response_id]
        self.fake.tick()
        self.fake.update(
            response_id,
            score=(int(response["score"]) + 5) % 11,
            comment="Edited: the answer changed",
            person_properties={"Customer Type": "Edited Customer", "Country": "BE"},
        )
        return response_id

    def live_ids(self, kind: RecordKind) -> set[str]:
        assert kind in self.kinds
        return set(self.fake.responses)

    def set_page_size(self, n: int) -> None:
        self.fake.max_per_page = n

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.fake.clock + 1, UTC)

    def stamp_all_equal(self, kind: RecordKind) -> None:
        assert kind in self.kinds
        for response in self.fake.responses.values():
            response["updated_at"] = self.fake.clock


@contextmanager
def make_harness(tmp_path: Path) -> Iterator[DelightedHarness]:
    """A Delighted harness whose fake answers through respx for the block's duration."""
    fake = FakeDelighted()
    with respx.mock(base_url=BASE_URL, assert_all_called=False) as router:
        router.get("/survey_responses.json").mock(side_effect=fake.handle)
        router.get("/metrics.json").mock(side_effect=fake.handle)
        yield DelightedHarness(fake=fake)
