"""deploy/compose.yaml, parsed as YAML: the services, replicas, healthchecks and order of
start that the deployment docs promise."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.fernet import Fernet

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_api_worker_and_postgresql_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"api", "worker", "db", "migrate"} <= set(services)
    assert services["db"]["image"].startswith("postgres:")
    assert services["api"]["command"][0] == "serve"
    assert services["api"]["environment"]["OKR_ROLE"] == "api"
    assert services["worker"]["command"] == ["worker"]
    assert services["migrate"]["command"] == ["db", "upgrade"]


def test_api_runs_two_replicas_on_distinct_host_ports(compose: dict[str, Any]) -> None:
    api = compose["services"]["api"]
    assert api["deploy"]["replicas"] == 2
    [ports] = api["ports"]
    assert ports == "127.0.0.1:8000-8001:8000"


@pytest.mark.parametrize("service", ["api", "worker", "db"])
def test_every_long_running_service_has_a_healthcheck(
    compose: dict[str, Any], service: str
) -> None:
    check = compose["services"][service]["healthcheck"]
    assert check["test"][0] in ("CMD", "CMD-SHELL")
    assert check["interval"]


def test_api_healthcheck_probes_readyz(compose: dict[str, Any]) -> None:
    assert "/readyz" in compose["services"]["api"]["healthcheck"]["test"][-1]


@pytest.mark.parametrize("service", ["api", "worker"])
def test_okr_sync_starts_after_a_healthy_database_and_a_finished_migration(
    compose: dict[str, Any], service: str
) -> None:
    depends = compose["services"][service]["depends_on"]
    assert depends["db"]["condition"] == "service_healthy"
    assert depends["migrate"]["condition"] == "service_completed_successfully"


@pytest.mark.parametrize("service", ["api", "worker", "migrate"])
def test_okr_sync_services_build_the_repository_image_and_read_env_example(
    compose: dict[str, Any], service: str
) -> None:
    spec = compose["services"][service]
    assert spec["build"]["context"] == ".."
    paths = [entry["path"] for entry in spec["env_file"]]
    assert paths[0] == "env.example"
    assert (DEPLOY / paths[0]).is_file()


def test_env_example_points_okr_sync_at_the_compose_database() -> None:
    env = dict(
        line.split("=", 1)
        for line in (DEPLOY / "env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    user, password, name = env["POSTGRES_USER"], env["POSTGRES_PASSWORD"], env["POSTGRES_DB"]
    assert env["OKR_DATABASE_URL"] == f"postgresql://{user}:{password}@db:5432/{name}"
    Fernet(env["OKR_SECRET_KEYS"])  # a usable key, so the stack starts as checked out
    assert env["OKR_MIGRATE_ON_START"] == "false"
