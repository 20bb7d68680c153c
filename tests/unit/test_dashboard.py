"""The Grafana dashboard (k8s/base/grafana-dashboard.json) charts every metric in
serve_app.metrics under the name Ray exports it with, groups and filters them only by labels they
carry, and its Serve panels use metrics the installed Ray defines."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import ray.serve

from serve_app.metrics import METRICS

DASHBOARD = Path("k8s/base/grafana-dashboard.json")
SERVE_TAGS = {"deployment", "replica", "application"}  # Serve adds them to ours
RAY_TAGS = {"SessionName", "NodeAddress", "WorkerId"}  # Ray adds them to every metric
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


@dataclass(frozen=True)
class ServeMetric:
    kind: str
    tags: frozenset[str]
    source: str  # the file under ray/serve/_private that defines it
    spelled: str  # its name as that file spells it (the proxy's are f-strings of the protocol)


# Verified in ray/serve/_private of the Ray the project pins; the last test re-checks the source.
SERVE_METRICS = {
    m.spelled.replace("{protocol_name}", "http"): m
    for m in [
        ServeMetric(
            "counter",
            frozenset({"route", "method", "application", "status_code"}),
            "request_ingress_metrics.py",
            "serve_num_{protocol_name}_requests",
        ),
        ServeMetric(
            "counter",
            frozenset({"route", "error_code", "method", "application"}),
            "request_ingress_metrics.py",
            "serve_num_{protocol_name}_error_requests",
        ),
        ServeMetric(
            "histogram",
            frozenset({"method", "route", "application", "status_code"}),
            "request_ingress_metrics.py",
            "serve_{protocol_name}_request_latency_ms",
        ),
        ServeMetric(
            "gauge",
            frozenset({"node_id", "node_ip_address"}),
            "request_ingress_metrics.py",
            "serve_num_ongoing_{protocol_name}_requests",
        ),
        ServeMetric(
            "gauge",
            frozenset({"deployment", "application", "handle", "actor_id"}),
            "router.py",
            "serve_deployment_queued_queries",
        ),
        ServeMetric(
            "gauge",
            frozenset({"deployment", "application", "handle", "actor_id"}),
            "router.py",
            "serve_num_ongoing_requests_at_replicas",
        ),
        ServeMetric(
            "gauge",
            frozenset({"deployment", "replica", "application"}),
            "deployment_state.py",
            "serve_deployment_replica_healthy",
        ),
        ServeMetric(
            "gauge",
            frozenset({"deployment", "application"}),
            "deployment_state.py",
            "serve_autoscaling_target_replicas",
        ),
    ]
}

METRIC_NAME = re.compile(r"\bray_\w+")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
MATCHER = re.compile(r"\b([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)")
LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")
QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows included, and those inside collapsed rows."""
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])


def targets(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in panels(board):
        yield from panel.get("targets", [])


def exported(name: str, kind: str) -> set[str]:
    """The Prometheus names Ray exports a metric under."""
    return {f"ray_{name}{suffix}" for suffix in SUFFIXES[kind]}


OUR_NAMES = {n: name for name, m in METRICS.items() for n in exported(name, m.kind)}
SERVE_NAMES = {n: name for name, m in SERVE_METRICS.items() for n in exported(name, m.kind)}


def labels(target: dict[str, Any]) -> set[str]:
    """Labels an expression groups or matches by, and those its legend shows."""
    expr = QUOTED.sub('""', target["expr"])  # a matcher's value may hold "=" or "("
    grouped = {label.strip() for group in GROUPING.findall(expr) for label in group.split(",")}
    matched = {
        m for selector in re.findall(r"\{([^}]*)\}", expr) for m in MATCHER.findall(selector)
    }
    return (grouped | matched | set(LEGEND_LABEL.findall(target.get("legendFormat", "")))) - {""}


def test_dashboard_is_soul_serve_on_a_chosen_prometheus() -> None:
    board = dashboard()
    assert (board["uid"], board["title"]) == ("soul-serve", "Soul Serve")
    assert board["schemaVersion"] >= 39
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert (variables["datasource"]["type"], variables["datasource"]["query"]) == (
        "datasource",
        "prometheus",
    )
    assert "label_values(" in variables["application"]["definition"]
    assert variables["application"]["definition"].endswith(", application)")
    for panel in panels(board):
        if panel["type"] == "row":
            continue
        assert panel["description"].strip(), f"panel {panel['title']!r} has no description"
        assert panel["targets"], panel["title"]
        for source in [panel, *panel["targets"]]:
            assert source["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


def test_panel_ids_are_unique() -> None:
    ids = [panel["id"] for panel in panels(dashboard())]
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})


@pytest.mark.parametrize("name", sorted(METRICS))
def test_every_metric_is_charted_under_its_exported_name(name: str) -> None:
    kind = METRICS[name].kind
    wanted = f"ray_{name}{SUFFIXES[kind][0]}"
    used = {n for t in targets(dashboard()) for n in METRIC_NAME.findall(t["expr"])}
    assert wanted in used, f"no panel charts {name} ({kind}) as {wanted}"


def test_every_metric_name_is_one_we_or_serve_define() -> None:
    """No stale names: ours come from METRICS, Serve's from SERVE_METRICS (checked below)."""
    for target in targets(dashboard()):
        for name in METRIC_NAME.findall(target["expr"]):
            assert name in OUR_NAMES or name in SERVE_NAMES, f"unknown metric {name}"


def test_expressions_use_only_labels_their_metrics_carry() -> None:
    for target in targets(dashboard()):
        used = labels(target)
        for name in METRIC_NAME.findall(target["expr"]):
            if name in OUR_NAMES:
                metric = METRICS[OUR_NAMES[name]]
                carried = set(metric.tags) | SERVE_TAGS
                histogram = metric.kind == "histogram"
            else:
                serve = SERVE_METRICS[SERVE_NAMES[name]]
                carried, histogram = set(serve.tags), serve.kind == "histogram"
            allowed = carried | RAY_TAGS | ({"le"} if histogram else set())
            assert used <= allowed, f"{target['expr']}: {sorted(used - allowed)} not on {name}"


@pytest.mark.parametrize("name", sorted(SERVE_METRICS))
def test_serve_metrics_are_defined_by_the_installed_ray_and_charted(name: str) -> None:
    metric = SERVE_METRICS[name]
    source = Path(ray.serve.__file__).parent / "_private" / metric.source
    assert f'"{metric.spelled}"' in source.read_text(), f"{name} is not in {source}: renamed?"
    used = {n for t in targets(dashboard()) for n in METRIC_NAME.findall(t["expr"])}
    assert used & exported(name, metric.kind), f"{name} is listed but no panel charts it"
