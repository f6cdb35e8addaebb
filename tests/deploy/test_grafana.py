"""deploy/grafana: the provisioned dashboard queries only metrics and labels the service
exposes (read from a real `/metrics` over the synced demo), and its provisioning files
point at each other."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from fastapi.testclient import TestClient
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine

from service import observability
from service.auth.models import Role
from tests.conftest import FrozenClock, bearer, issue_token
from tests.factories import API
from tests.service.test_observability import DEMO, _demo

GRAFANA = Path(__file__).resolve().parents[2] / "deploy" / "grafana"
METRIC = re.compile(r"\b(okr_[a-z_]+)")
SELECTOR = re.compile(r"\{([^}]*)\}")
LABEL = re.compile(r"([a-z_]+)\s*(?:=~|!=|!~|=)")
#: Label names PromQL itself adds (histogram buckets).
PROMQL_LABELS = {"le"}


def _declared_labels(name: str) -> tuple[str, ...]:
    for value in vars(observability).values():
        if isinstance(value, MetricWrapperBase) and value._name == name:
            return tuple(value._labelnames)
    raise AssertionError(f"{name} is exposed but not declared in service.observability")


def _dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((GRAFANA / "dashboards" / "okr-sync.json").read_text())
    return loaded


def _expressions(dashboard: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [v["query"]["query"] for v in dashboard["templating"]["list"]]
    return exprs


def test_the_dashboard_queries_only_the_metrics_and_labels_the_service_exposes(
    client: TestClient, engine: Engine, database_url: str, clock: FrozenClock
) -> None:
    _demo(engine, database_url, clock)
    assert client.get(f"{API}/progress", headers=DEMO).status_code == 200
    token = bearer(issue_token(engine, Role.admin, None, "prometheus"))
    exposed: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(client.get("/metrics", headers=token).text):
        for sample in family.samples:
            exposed.setdefault(sample.name, set()).update(sample.labels)
        if not family.samples:
            # Declared, not yet set (vendor quotas: only vendors that report one): the
            # family's HELP and TYPE are exposed, its labels are the collector's own.
            exposed[family.name] = set(_declared_labels(family.name))

    exprs = _expressions(_dashboard())
    assert exprs
    used = set()
    for expr in exprs:
        for name in METRIC.findall(expr):
            used.add(name)
            assert name in exposed, f"{name} (in {expr!r}) is not a metric the service exposes"
        for selector in SELECTOR.findall(expr):
            labels = set(LABEL.findall(selector)) - PROMQL_LABELS
            names = [n for n in METRIC.findall(expr) if n in exposed]
            assert any(labels <= exposed[n] for n in names), (labels, expr)
        for grouping in re.findall(r"by \(([^)]*)\)", expr):
            labels = {g.strip() for g in grouping.split(",")} - PROMQL_LABELS
            assert any(labels <= exposed[n] for n in METRIC.findall(expr)), (labels, expr)
    # What the issue asks the dashboard to show: progress, value and status by key result;
    # sync runs and errors.
    assert {
        "okr_key_result_progress_ratio",
        "okr_key_result_value",
        "okr_key_result_status",
        "okr_sync_runs_total",
    } <= used


def test_the_provisioning_files_name_the_dashboard_datasource_and_folder() -> None:
    datasource = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "okr-sync.yaml").read_text()
    )
    provider = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "okr-sync.yaml").read_text()
    )
    (source,) = datasource["datasources"]
    assert source["type"] == "prometheus"
    dashboard = _dashboard()
    uids = {
        target["datasource"]["uid"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    } | {panel["datasource"]["uid"] for panel in dashboard["panels"] if "datasource" in panel}
    assert uids == {source["uid"]}
    (entry,) = provider["providers"]
    assert entry["type"] == "file"
    assert entry["options"]["path"].startswith("/")
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
