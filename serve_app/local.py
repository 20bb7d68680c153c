"""Start the graph on a local Ray: used by the integration tests and by `soul bench`."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from serve_app.diffusion.tiny import build_tiny_models
from serve_app.settings import Settings

# Ray Serve 2.60's throughput-optimized mode (RAY_SERVE_THROUGHPUT_OPTIMIZED=1), part by part:
# what each part sets on the node. Its sixth part, the GC frozen after a replica starts, is
# already Ray's default. docs/serving-speed.md says what each does to the service's promises.
SPEED_PARTS: dict[str, dict[str, str]] = {
    # handle calls, and the proxy's calls to the Ingress, over gRPC instead of Ray actor calls
    "grpc": {"RAY_SERVE_USE_GRPC_BY_DEFAULT": "1"},
    # user code on the replica's own event loop, not on a thread of its own
    "user-loop": {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0"},
    # the handles' router on the caller's event loop: in a driver (tests, notebooks) it binds to
    # the loop of the first call, and serve.shutdown fails once that loop is closed
    "router-loop": {"RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0"},
    # request logs held in memory until 1000 records (or an ERROR), then written
    "log-buffer": {"RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1000"},
    # replica logs to their files only, print() and stderr into them too
    "no-stderr": {"RAY_SERVE_LOG_TO_STDERR": "0"},
    # each ingress replica serves HTTP itself, on a port of its own; one proxy, on the head
    "direct-ingress": {"RAY_SERVE_ENABLE_DIRECT_INGRESS": "1"},
}
# Ray's own value of each switch above: a mode names the parts it turns on, the rest stay here.
RAY_DEFAULTS = {
    "RAY_SERVE_USE_GRPC_BY_DEFAULT": "0",
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "1",
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "1",
    "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1",
    "RAY_SERVE_LOG_TO_STDERR": "1",
    "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0",
}
# On in `soul serve`, the tests, the bench and the RayService: the parts that keep every promise.
ADOPTED_PARTS: tuple[str, ...] = ("grpc", "user-loop")


def speed_env(parts: tuple[str, ...]) -> dict[str, str]:
    """The switches with ``parts`` on and every other at Ray's default."""
    env = dict(RAY_DEFAULTS)
    for part in parts:
        env.update(SPEED_PARTS[part])
    return env


# `soul bench hot --modes`: a node environment by name, every part alone among them.
SPEED_MODES: dict[str, dict[str, str]] = {
    "ray-defaults": speed_env(()),
    "soul": speed_env(ADOPTED_PARTS),
    "throughput-optimized": {
        **speed_env(tuple(SPEED_PARTS)),
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    },
    **{part: speed_env((part,)) for part in SPEED_PARTS},
}


def node_env(settings: Settings) -> dict[str, str]:
    """Environment of a one-machine Ray node: its processes inherit it from ``ray.init``.

    Ray's local-only mode (its default on Windows and macOS) gives the node the address
    127.0.0.1, so its gRPC servers, agents and metrics endpoints listen on loopback only. Ray
    reads that flag when it is imported: ``soul`` and the tests' conftest set it first. One
    listener no setting reaches: each Serve replica's inter-deployment gRPC server, which Ray
    2.60 binds to ``[::]:0`` in code (``Replica._on_initialized``); under Ray's token auth it
    answers only calls that carry the cluster's token.
    Serve's HTTP proxy runs our middlewares (``api/proxy.py``); the adopted speed parts are on."""
    adopted = {k: v for part in ADOPTED_PARTS for k, v in SPEED_PARTS[part].items()}
    return {
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": "serve_app.api.proxy.middlewares",
        "AUTOSCALER_METRIC_PORT": str(settings.node.autoscaler_metrics_port),
        "DASHBOARD_METRIC_PORT": str(settings.node.dashboard_metrics_port),
        **adopted,
    }


@contextmanager
def local_graph(
    data_dir: Path,
    *,
    port: int,
    args: dict[str, Any] | None = None,
    num_cpus: int = 4,
    env: dict[str, str] | None = None,
    quiet: bool = False,
    metrics_port: int | None = None,
) -> Iterator[str]:
    """Run the app on ``127.0.0.1:port`` with its state in ``data_dir``; yield the base URL.

    The tiny models are built in the models folder (``SOUL_MODELS_DIR``, else
    ``data_dir/models``) unless they are there already: runs that share a models folder build
    them once.

    ``env`` is added to the node's environment, over ``node_env``'s (a speed mode, say).
    ``quiet`` keeps replica logs out of this console (they stay in Ray's session log folder).
    ``metrics_port``: where the node serves its Prometheus metrics, ours included, refreshed
    every second (Ray's default is every ten). How the deployments log is ``args``'s
    ``logging`` section (e.g. ``{"encoding": "JSON", "logs_dir": ...}``).
    """
    import ray
    from ray import serve

    from serve_app.app import build_app

    env_vars = {"SOUL_DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1", **(env or {})}
    saved_env = dict(os.environ)
    os.environ.update(env_vars)  # this process reads the same Settings as the replicas
    settings = Settings()
    env_vars["SOUL_MODELS_DIR"] = str(settings.resolved_models_dir)
    os.environ.update({**node_env(settings), **env_vars})
    build_tiny_models(settings.resolved_models_dir)  # keeps the models already there
    ray.init(
        num_cpus=num_cpus,
        include_dashboard=False,
        runtime_env={"env_vars": env_vars},
        logging_level=logging.WARNING,
        log_to_driver=not quiet,
        _metrics_export_port=metrics_port,
        _system_config={"metrics_report_interval_ms": 1000} if metrics_port else None,
    )
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(args or {}), name="soul", route_prefix="/")
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()
        os.environ.clear()
        os.environ.update(saved_env)
