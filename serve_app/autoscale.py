"""GPU replicas scale on their backlog: the requests they have, plus the jobs still waiting.

A Serve custom autoscaling policy (``autoscaling_config.policy.policy_function`` in
config/serve.gpu.yaml) for the Renderer and the Animator. Each replica reports the job queue as
the catalog sees it (``record_autoscaling_stats``: ``queued_jobs``, ``running_jobs``), so a
backlog of submitted jobs scales GPU replicas up before any of them reaches a handle, and no
replica is taken away while leased jobs run. Serve applies the config's bounds and delays.
"""

from __future__ import annotations

from typing import Any

from ray.serve.config import AutoscalingContext


def backlog_policy(ctx: AutoscalingContext) -> tuple[float, dict[str, Any]]:
    metrics = ctx.aggregated_metrics or {}
    # Every replica reports the same shared queue: take one report, not their sum.
    queued = max((metrics.get("queued_jobs") or {}).values(), default=0.0)
    running = max((metrics.get("running_jobs") or {}).values(), default=0.0)
    target = ctx.config.get_target_ongoing_requests() if ctx.config else 1.0
    desired = (ctx.total_num_requests + queued) / target
    if running > 0:  # leased jobs are mid-render somewhere: never scale down under them
        desired = max(desired, ctx.current_num_replicas)
    return desired, {}
