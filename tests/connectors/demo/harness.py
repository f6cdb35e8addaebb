"""Demo harness: "the source changes" means the demo's clock moves forward.

`seed` and `mutate` advance the configured `now` to the moment the generated timelines
contain the wanted creations / modifications / deletions; `live_ids` recomputes the truth
from the timelines with its own as-of rule (not the connector's code).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from connectors.base import Connector, RecordKind, Runtime
from connectors.demo.connector import DemoConfig, DemoConnector, DemoSecrets
from connectors.demo.dataset import Timeline, generate

YEAR = 2026
SEED = 7
SIZE = 3000
#: A resolution coarser than the whole dataset: every timestamp floors to 1 January.
ONE_STAMP = 10 * 366 * 86_400


def make_config(now: datetime, **overrides: object) -> DemoConfig:
    """The harness's dataset as of `now`."""
    values: dict[str, object] = {"seed": SEED, "size": SIZE, "year": YEAR, "now": now}
    values.update(overrides)
    return DemoConfig.model_validate(values)


def timelines(kind: RecordKind) -> tuple[Timeline, ...]:
    """The harness dataset's timelines of `kind`."""
    return generate(SEED, SIZE, YEAR).timelines[kind]


def live_at(kind: RecordKind, now: int) -> set[str]:
    """Ids of `kind` that exist and are not deleted at unix second `now`."""
    live = set()
    for timeline in timelines(kind):
        current = [v for v in timeline.versions if v.at <= now]
        if current and not current[-1].deleted:
            live.add(timeline.source_id)
    return live


@dataclass
class DemoHarness:
    """`SourceHarness` for the demo connector."""

    name: str = "demo"
    kinds: tuple[RecordKind, ...] = (
        RecordKind.lead,
        RecordKind.opportunity,
        RecordKind.survey_response,
    )
    at: datetime = field(default_factory=lambda: datetime(YEAR, 1, 1, tzinfo=UTC))
    page_size: int | None = None
    resolution: int = 1

    def connector(self, runtime: Runtime | None = None) -> Connector:
        runtime = runtime or Runtime()
        if runtime.page_size is None and self.page_size is not None:
            runtime = dataclasses.replace(runtime, page_size=self.page_size)
        config = make_config(self.at, timestamp_resolution_seconds=self.resolution)
        return DemoConnector(config, DemoSecrets(), runtime)

    def bad_credentials_connector(self) -> Connector:
        return DemoConnector(make_config(self.at, reject_credentials=True), DemoSecrets())

    def seed(self, kind: RecordKind, n: int) -> None:
        created = sorted(t.created_at for t in timelines(kind))
        existing = sum(1 for at in created if at <= self._now())
        assert existing + n <= len(created), "the demo dataset is too small for this seed"
        self._advance_to(created[existing + n - 1])

    def mutate(self, kind: RecordKind) -> None:
        now = self._now()
        creations, edits, deletions = [], [], []
        for timeline in timelines(kind):
            for index, version in enumerate(timeline.versions):
                if version.at <= now:
                    continue
                if index == 0:
                    creations.append(version.at)
                elif version.deleted:
                    deletions.append(version.at)
                elif timeline.created_at <= now:
                    edits.append(version.at)
        wanted = [min(events) for events in (creations, edits, deletions) if events]
        assert wanted, "nothing left to change in the demo dataset"
        self._advance_to(max(wanted))

    def edit(self, kind: RecordKind) -> str:
        """The demo's data is generated: move the clock to the next edit of a live record."""
        now = self._now()
        live = live_at(kind, now)
        edits = [
            (version.at, timeline.source_id)
            for timeline in timelines(kind)
            if timeline.source_id in live
            for version in timeline.versions
            if version.at > now and not version.deleted
        ]
        assert edits, "nothing left to edit in the demo dataset"
        at, source_id = min(edits)
        self._advance_to(at)
        return source_id

    def live_ids(self, kind: RecordKind) -> set[str]:
        return live_at(kind, self._now())

    def set_page_size(self, n: int) -> None:
        self.page_size = n

    def now(self) -> datetime:
        return self.at + timedelta(seconds=1)

    def stamp_all_equal(self, kind: RecordKind) -> None:
        self.resolution = ONE_STAMP

    def _now(self) -> int:
        return int(self.at.timestamp())

    def _advance_to(self, at: int) -> None:
        self.at = max(self.at, datetime.fromtimestamp(at, UTC))


@contextmanager
def make_harness(tmp_path: Path) -> Iterator[DemoHarness]:
    """A demo harness starting on 1 January of its year (nothing exists yet)."""
    yield DemoHarness()
