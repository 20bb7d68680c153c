"""The test session's one integration graph: one local Ray, one Serve app, one data folder.

Its environment is the union of what the modules need (API and admin keys, the webhook secret,
private test hosts allowed, the fake CivitAI, a metrics port, JSON logs); modules keep apart by
their own souls (``souls_of``) and apply their own deployment settings live (``configured``):
the app is deployed from a Serve config, as `serve run` does, so a changed ``user_config``,
``max_ongoing_requests`` or ``max_queued_requests`` reconfigures replicas in place."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from soul_client import API_KEY, TEST_ARGS, free_port

from serve_app.app import AppArgs, worker_config
from serve_app.local import node_env
from serve_app.settings import Settings
from tests.support import FakeCivitai

OTHER_KEY = "another-client-key"
FUZZ_KEY = "fuzz-admin-key"  # the fuzzer's own: an admin key, so /admin routes are fuzzed too
ADMIN_KEY = "an-admin-key"
WEBHOOK_SECRET = "webhook-test-secret"
JOB_QUEUED_QUOTA = 4
# Modules with souls of their own; the shipped nova and valentina stay for the studio's other
# tests (its Characters test locks an identity of its own soul).
SOUL_MODULES = (
    "graph",
    "disconnect",
    "jobs",
    "results",
    "metrics",
    "overload",
    "client",
    "prints",
    "characters",
    "studio",
    "refills",
)
# Every module's jobs run on one JobWorker slot: slots are added live but never taken away.
SESSION_ARGS: dict[str, Any] = {
    **TEST_ARGS,
    "worker": {"slots": 1, "lease_s": 3, "watch_s": 0.1},
    "ingress": {"regenerate_limit": 2},
}
# Deployments whose settings a module may change; each override names the whole section.
SECTIONS = {"Renderer": "renderer", "Dedupe": "dedupe", "Catalog": "catalog", "JobWorker": "worker"}
READY_TIMEOUT_S = 600
SETTLE_S = 1.5  # running and healthy for this long after a deploy: the config is applied
SHIPPED_SOULS = Path(__file__).resolve().parents[2] / "config" / "souls.yaml"


def souls_of(module: str) -> tuple[str, str]:
    """A module's own copies of the shipped souls nova (subtle) and valentina (AnimateDiff)."""
    return f"{module}-nova", f"{module}-valentina"


def session_env(civitai: FakeCivitai) -> dict[str, str]:
    return {
        "SOUL_API_KEYS": json.dumps([API_KEY, OTHER_KEY, FUZZ_KEY]),
        "SOUL_ADMIN_KEYS": json.dumps([ADMIN_KEY, FUZZ_KEY]),
        "SOUL_TORCH_THREADS": "1",
        "SOUL_CIVITAI_URL": civitai.url,
        "SOUL_CIVITAI_TOKEN": FakeCivitai.TOKEN,
        # The tests serve references and receive webhooks on 127.0.0.1; the fuzzer names any host.
        "SOUL_REFERENCE_ALLOW_PRIVATE_HOSTS": "true",
        "SOUL_WEBHOOK_ALLOW_PRIVATE_HOSTS": "true",
        "SOUL_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "SOUL_JOB_QUEUED_QUOTA": str(JOB_QUEUED_QUOTA),
    }


def write_souls_file(path: Path) -> Path:
    """The shipped souls, and a copy of each for every module in ``SOUL_MODULES``."""
    shipped = yaml.safe_load(SHIPPED_SOULS.read_text())["souls"]
    by_id = {soul["soul_id"]: soul for soul in shipped}
    souls = list(shipped)
    for module in SOUL_MODULES:
        for copy_id, original in zip(souls_of(module), ("nova", "valentina"), strict=True):
            soul = json.loads(json.dumps(by_id[original]))
            soul["soul_id"] = soul["style"]["soul_id"] = copy_id
            souls.append(soul)
    path.write_text(yaml.safe_dump({"souls": souls}, sort_keys=False))
    return path


def overrides(args: dict[str, Any], limits: dict[str, dict[str, int]]) -> list[dict[str, Any]]:
    """The config's deployments section: a module's ``SECTIONS`` as whole ``user_config``s (over
    the session's args), and its request limits by deployment."""
    live = {section: name for name, section in SECTIONS.items()}
    if unknown := set(args) - set(live):
        raise ValueError(f"only {sorted(live)} change live, not {sorted(unknown)}")
    sections = AppArgs.model_validate({**SESSION_ARGS, **args})
    deployments = {name: dict(limits[name]) for name in limits}
    for section in args:
        config = worker_config(sections) if section == "worker" else getattr(sections, section)
        user_config = config.model_dump(mode="json")
        deployments.setdefault(live[section], {})["user_config"] = user_config
    return [{"name": name, **options} for name, options in sorted(deployments.items())]


class SharedGraph:
    """The running app: ``deploy`` applies a module's settings, ``replicas`` names the live
    replicas (the same names before and after a reconfigure: none restarted)."""

    def __init__(self, data_dir: Path, souls_file: Path, logs_dir: Path) -> None:
        self.data_dir, self.souls_file, self.logs_dir = data_dir, souls_file, logs_dir

    def deploy(
        self, args: dict[str, Any] | None = None, limits: dict[str, dict[str, int]] | None = None
    ) -> None:
        from ray import serve
        from ray.serve.context import _get_global_client
        from ray.serve.schema import ServeDeploySchema

        app = {
            "name": "soul",
            "route_prefix": "/",
            "import_path": "serve_app.app:build_app",
            "args": {
                **SESSION_ARGS,
                "souls_file": str(self.souls_file),
                "logging": {"encoding": "JSON", "logs_dir": str(self.logs_dir)},
            },
            "deployments": overrides(args or {}, limits or {}),
        }
        config = ServeDeploySchema.parse_obj({"applications": [app]})
        _get_global_client().deploy_apps(config)
        # The controller's loop (every 0.1 s) first marks what the config changed as updating.
        deadline, settled_since = time.monotonic() + READY_TIMEOUT_S, None
        while settled_since is None or time.monotonic() - settled_since < SETTLE_S:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the shared graph did not settle: {serve.status()}")
            time.sleep(0.25)
            settled = self._settled(serve.status())
            settled_since = (settled_since or time.monotonic()) if settled else None

    @staticmethod
    def _settled(status: Any) -> bool:
        app = status.applications.get("soul")
        return bool(
            app
            and app.status == "RUNNING"
            and all(d.status == "HEALTHY" for d in app.deployments.values())
        )

    @staticmethod
    def replicas() -> set[str]:
        import ray

        return {
            actor["name"]
            for actor in ray.util.list_named_actors(all_namespaces=True)
            if actor["name"].startswith("SERVE_REPLICA::soul#")
        }

    @contextmanager
    def configured(
        self, args: dict[str, Any] | None = None, limits: dict[str, dict[str, int]] | None = None
    ) -> Iterator[None]:
        """The module's settings for the duration, then the session's again, all live."""
        if not args and not limits:
            yield
            return
        before = self.replicas()
        self.deploy(args, limits)
        assert self.replicas() == before, "a live reconfigure restarted replicas"
        try:
            yield
        finally:
            self.deploy()


@contextmanager
def shared_graph(
    data_dir: Path, models_dir: Path, civitai: FakeCivitai
) -> Iterator[tuple[SharedGraph, str, str]]:
    """Start Ray and the app; yield it with its base URL and metrics URL; stop all after."""
    import ray
    from ray import serve

    (data_dir / "models").symlink_to(models_dir)
    port, metrics_port = free_port(), free_port()
    env_vars = {"SOUL_DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1", **session_env(civitai)}
    saved_env = dict(os.environ)
    os.environ.update(env_vars)  # this process reads the same Settings as the replicas
    os.environ.update({**node_env(Settings()), **env_vars})
    graph = SharedGraph(data_dir, write_souls_file(data_dir / "souls.yaml"), data_dir / "logs")
    ray.init(
        num_cpus=4,
        include_dashboard=False,
        runtime_env={"env_vars": env_vars},
        logging_level=logging.WARNING,
        log_to_driver=False,  # replica logs stay in their files (JSON, under data_dir/logs)
        _metrics_export_port=metrics_port,
        _system_config={"metrics_report_interval_ms": 1000},
    )
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        graph.deploy()
        yield graph, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}/metrics"
    finally:
        serve.shutdown()
        ray.shutdown()
        os.environ.clear()
        os.environ.update(saved_env)
