"""The backlog autoscaling policy: queued jobs count as work ahead, and leased jobs hold the
replicas they run on (the policy as Serve calls it, with Serve's own context and config)."""

from __future__ import annotations

from typing import Any

from ray.serve._private.common import DeploymentID
from ray.serve.config import AutoscalingConfig, AutoscalingContext

from serve_app.autoscale import backlog_policy


def context(replicas: int, ongoing: float, **metrics: dict[str, float]) -> AutoscalingContext:
    args: dict[str, Any] = {
        "deployment_id": DeploymentID(name="Renderer", app_name="soul"),
        "deployment_name": "Renderer",
        "app_name": "soul",
        "current_num_replicas": replicas,
        "target_num_replicas": replicas,
        "running_replicas": [],
        "total_num_requests": ongoing,
        "total_queued_requests": 0.0,
        "aggregated_metrics": metrics,
        "raw_metrics": {},
        "capacity_adjusted_min_replicas": 1,
        "capacity_adjusted_max_replicas": 8,
        "policy_state": {},
        "last_scale_up_time": None,
        "last_scale_down_time": None,
        "current_time": None,
        "config": AutoscalingConfig(min_replicas=1, max_replicas=8, target_ongoing_requests=1),
    }
    return AutoscalingContext(**args)


def test_queued_jobs_scale_up_before_they_reach_any_handle() -> None:
    idle = context(1, 0.0, queued_jobs={"r1": 0.0}, running_jobs={"r1": 0.0})
    backlog = context(1, 1.0, queued_jobs={"r1": 5.0}, running_jobs={"r1": 1.0})
    assert backlog_policy(idle)[0] == 0.0
    assert backlog_policy(backlog)[0] == 6.0  # one ongoing request and five jobs waiting


def test_every_replica_reports_the_same_queue_once() -> None:
    ctx = context(2, 0.0, queued_jobs={"r1": 3.0, "r2": 3.0}, running_jobs={"r1": 0.0})
    assert backlog_policy(ctx)[0] == 3.0


def test_no_scale_down_while_leased_jobs_run() -> None:
    ctx = context(4, 1.0, queued_jobs={"r1": 0.0}, running_jobs={"r1": 2.0})
    assert backlog_policy(ctx)[0] == 4
    without_reports = context(4, 1.0)  # no custom metrics yet: requests alone decide
    assert backlog_policy(without_reports)[0] == 1.0
