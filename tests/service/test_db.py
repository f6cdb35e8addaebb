"""Engine helpers: database URLs fit to print, and SQLite file locations."""

from __future__ import annotations

from pathlib import Path

import pytest

from service import db


def test_given_a_url_with_a_password_when_made_printable_then_the_password_is_masked() -> None:
    shown = db.safe_url("postgresql+psycopg://okr:s3cr3t-pw@db.example:5432/okr")
    assert "s3cr3t-pw" not in shown
    assert shown == "postgresql+psycopg://okr:***@db.example:5432/okr"
    assert db.safe_url("sqlite:///okr-sync.db") == "sqlite:///okr-sync.db"


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///okr-sync.db", Path("okr-sync.db")),
        ("sqlite:////var/lib/okr/okr.db", Path("/var/lib/okr/okr.db")),
        ("sqlite://", None),
        ("sqlite:///:memory:", None),
        ("postgresql+psycopg://okr@db/okr", None),
    ],
)
def test_given_a_database_url_then_its_sqlite_file_is_known(url: str, path: Path | None) -> None:
    assert db.sqlite_path(url) == path
