"""The Dockerfile, read with a Dockerfile parser: what a container runtime relies on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from dockerfile_parse import DockerfileParser

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def instructions() -> list[dict[str, Any]]:
    parser = DockerfileParser(str(REPO / "Dockerfile"))
    return [i for i in parser.structure if i["instruction"] != "COMMENT"]


def _last(instructions: list[dict[str, Any]], name: str) -> str:
    found = [i["value"] for i in instructions if i["instruction"] == name]
    assert found, f"no {name}"
    return str(found[-1])


def test_the_default_base_is_the_official_python_image(
    instructions: list[dict[str, Any]],
) -> None:
    parser = DockerfileParser(str(REPO / "Dockerfile"))
    assert parser.baseimage == "python:3.12-slim"
    assert _last(instructions, "FROM") == "${BASE_IMAGE}"


def test_entrypoint_and_cmd_are_exec_form_so_pid_1_gets_sigterm(
    instructions: list[dict[str, Any]],
) -> None:
    # Shell form runs `/bin/sh -c`, which does not pass SIGTERM on to okr-sync.
    entrypoint = json.loads(_last(instructions, "ENTRYPOINT"))
    cmd = json.loads(_last(instructions, "CMD"))
    assert entrypoint == ["okr-sync"]
    assert cmd[0] == "serve"
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0"


def test_healthcheck_probes_readyz_in_exec_form(instructions: list[dict[str, Any]]) -> None:
    healthcheck = _last(instructions, "HEALTHCHECK")
    options, _, command = healthcheck.partition("CMD")
    assert "--start-period=" in options
    probe = json.loads(command)
    assert probe[0] == "python3"
    assert "http://127.0.0.1:8000/readyz" in probe[-1]


def test_runs_as_a_non_root_user(instructions: list[dict[str, Any]]) -> None:
    user = _last(instructions, "USER")
    assert user.split(":")[0] not in ("root", "0")
    # The instruction after which nothing may run as root again.
    names = [i["instruction"] for i in instructions]
    assert "RUN" not in names[names.index("USER") :]


def test_dockerignore_keeps_the_context_to_what_the_image_copies() -> None:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    rules = [line for line in lines if line and not line.startswith("#")]
    assert rules[0] == "*"
    assert {"!pyproject.toml", "!README.md", "!service/", "!connectors/"} <= set(rules)
