"""FastAPI's native OpenTelemetry hooks: off by default, on with OKR_OPENTELEMETRY."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.main import create_app
from tests.conftest import make_settings


@pytest.mark.parametrize("enabled", [False, True])
def test_given_the_opentelemetry_setting_when_the_app_is_built_then_fastapi_telemetry_follows(
    tmp_path: Path, enabled: bool
) -> None:
    settings = make_settings(f"sqlite:///{tmp_path}/t.db", opentelemetry=enabled)
    app = create_app(settings)
    config = app._telemetry  # FastAPI keeps the resolved telemetry configuration here
    assert (config["tracing"], config["metrics"], config["logs"]) == (enabled,) * 3
