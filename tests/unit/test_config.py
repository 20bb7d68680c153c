"""The shipped Serve configs: valid for Ray Serve and for our typed app args, and the GPU one
shaped as an operator expects (fractional GPUs, autoscaling, shedding, timeouts)."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from serve_app.app import AppArgs, DeploymentName, build_app

CONFIGS = ["config/serve.local.yaml", "config/serve.gpu.yaml"]


def load(path: str) -> dict[str, Any]:
    return yaml.safe_load(Path(path).read_text())


@pytest.mark.parametrize("path", CONFIGS)
def test_config_is_a_valid_serve_config_with_typed_args(path: str) -> None:
    config = load(path)
    ServeDeploySchema.model_validate(config)
    [app] = config["applications"]
    assert app["import_path"] == "serve_app.app:build_app"
    args = AppArgs.model_validate(app["args"])
    build_app(args)  # builds the graph's deployments (no cluster needed)
    names = {d["name"] for d in app.get("deployments", [])}
    assert names <= set(typing.get_args(DeploymentName))


def test_gpu_config_shares_gpus_autoscales_sheds_and_waits_for_renders() -> None:
    config = load("config/serve.gpu.yaml")
    [app] = config["applications"]
    deployments = {d["name"]: d for d in app["deployments"]}
    args = AppArgs.model_validate(app["args"])
    assert (args.renderer.device, args.animator.device) == ("cuda", "cuda")
    assert args.renderer.dtype == args.animator.dtype == "float16"
    for name in ["Renderer", "Animator"]:
        gpu = deployments[name]
        assert 0 < gpu["ray_actor_options"]["num_gpus"] < 1
        assert gpu["max_ongoing_requests"] <= 2
        autoscaling = gpu["autoscaling_config"]
        assert autoscaling["min_replicas"] < autoscaling["max_replicas"]
        assert gpu["graceful_shutdown_timeout_s"] >= 120
    # a Renderer replica takes at least as many renders at once as it batches
    assert deployments["Renderer"]["max_ongoing_requests"] >= args.renderer.max_batch_size
    assert all("max_queued_requests" in d for d in deployments.values())
    assert config["http_options"]["request_timeout_s"] >= 120
    assert "database_url" not in str(app) and "gs://" not in str(app)  # from the environment


def test_local_config_stays_on_the_cpu() -> None:
    [app] = load("config/serve.local.yaml")["applications"]
    args = AppArgs.model_validate(app["args"])
    assert (args.renderer.device, args.animator.device) == ("cpu", "cpu")
    assert "num_gpus" not in str(app)


def test_only_the_ingress_writes_access_logs_and_every_deployment_keeps_the_encoding() -> None:
    # What `serve.run` deploys, built without a cluster: each deployment's own logging config.
    from ray.serve._private.build_app import build_app as build_serve_app

    args = {"logging": {"encoding": "JSON", "log_level": "WARNING", "logs_dir": "/tmp/x"}}
    built = build_serve_app(build_app(args), name="soul", make_deployment_handle=lambda d, _: d)
    logging = {d.name: d._deployment_config.logging_config for d in built.deployments}
    assert {name for name, config in logging.items() if config["enable_access_log"]} == {"Ingress"}
    assert len(logging) == 9
    for config in logging.values():
        assert (config["encoding"], config["log_level"], config["logs_dir"]) == (
            "JSON",
            "WARNING",
            "/tmp/x",
        )
