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


def node_env(settings: Settings) -> dict[str, str]:
    """Environment of a one-machine Ray node: its processes inherit it from ``ray.init``.

    Ray's local-only mode (its default on Windows and macOS) gives the node the address
    127.0.0.1, so its gRPC servers, agents and metrics endpoints listen on loopback only. Ray
    reads that flag when it is imported: ``soul`` and the tests' conftest set it first.
    Serve's HTTP proxy runs our middlewares (``api/proxy.py``)."""
    return {
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": "serve_app.api.proxy.middlewares",
        "AUTOSCALER_METRIC_PORT": str(settings.autoscaler_metrics_port),
        "DASHBOARD_METRIC_PORT": str(settings.dashboard_metrics_port),
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
    logging_config: dict[str, Any] | None = None,
) -> Iterator[str]:
    """Run the app on ``127.0.0.1:port`` with its state in ``data_dir``; yield the base URL.

    ``quiet`` keeps replica logs out of this console (they stay in Ray's session log folder).
    ``metrics_port``: where the node serves its Prometheus metrics, ours included, refreshed
    every second (Ray's default is every ten). ``logging_config``: Serve's, for every
    deployment (e.g. ``{"encoding": "JSON", "logs_dir": ...}``).
    """
    import ray
    from ray import serve

    from serve_app.app import build_app

    env_vars = {"SOUL_DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1", **(env or {})}
    saved_env = dict(os.environ)
    os.environ.update(env_vars)  # this process reads the same Settings as the replicas
    os.environ.update(node_env(Settings()))
    build_tiny_models(data_dir / "models")
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
        serve.run(
            build_app(args or {}), name="soul", route_prefix="/", logging_config=logging_config
        )
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()
        os.environ.clear()
        os.environ.update(saved_env)
