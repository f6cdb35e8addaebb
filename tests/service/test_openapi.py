"""The committed OpenAPI document is the one the app serves (clients are generated from it)."""

from __future__ import annotations

import json
from pathlib import Path

from service.main import create_app
from tests.conftest import make_settings

COMMITTED = Path(__file__).resolve().parents[2] / "openapi" / "openapi.json"
REGENERATE = "regenerate it with: okr-sync openapi --out openapi/openapi.json"


def test_given_the_app_when_its_openapi_is_serialised_then_it_equals_the_committed_file(
    database_url: str,
) -> None:
    doc = create_app(make_settings(database_url), run_startup=False).openapi()
    served = json.dumps(doc, indent=2, sort_keys=True) + "\n"
    assert COMMITTED.is_file(), f"{COMMITTED} is missing; {REGENERATE}"
    committed = COMMITTED.read_text(encoding="utf-8")
    if committed != served:
        old, new = json.loads(committed), json.loads(served)
        changed = sorted(
            set(old.get("paths", {})) ^ set(new.get("paths", {}))
            | {p for p in old.get("paths", {}) if old["paths"][p] != new.get("paths", {}).get(p)}
        )
        raise AssertionError(
            f"openapi/openapi.json is out of date with the API ({REGENERATE}); "
            f"paths that differ: {changed or 'none (schemas or metadata differ)'}"
        )
