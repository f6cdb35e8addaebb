"""What every connector's test harness provides, so one contract suite (and the sync
engine's tests) can run against each vendor's local fake the same way."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from connectors.base import Connector, RecordKind, Runtime


class SourceHarness(Protocol):
    """A connector wired to a fake of its vendor's API, plus control of that fake's data."""

    #: Connector type name, for test ids.
    name: str
    #: Kinds the harness can seed and mutate.
    kinds: tuple[RecordKind, ...]

    def connector(self, runtime: Runtime | None = None) -> Connector:
        """A connector with good credentials, talking to the fake."""

    def bad_credentials_connector(self) -> Connector:
        """A connector whose credentials the fake rejects."""

    def seed(self, kind: RecordKind, n: int) -> None:
        """Create `n` records of `kind` at the source."""

    def mutate(self, kind: RecordKind) -> None:
        """Add, modify and delete (archive) a few records of `kind` at the source."""

    def edit(self, kind: RecordKind) -> str:
        """Change one live `kind` record's business fields at the source, stamped after
        everything else (status, stage, amount, won/closed flags, score and raw-only fields,
        as far as the kind has them); return its id."""

    def live_ids(self, kind: RecordKind) -> set[str]:
        """Ground truth: ids of `kind` records that exist (not deleted) at the source."""

    def set_page_size(self, n: int) -> None:
        """Make the fake serve at most `n` records per page (to force pagination)."""

    def stamp_all_equal(self, kind: RecordKind) -> None:
        """Give every `kind` record the same modification timestamp (boundary tests)."""

    def now(self) -> datetime:
        """The source's clock: every stamp so far is earlier than this."""
