"""The KubeRay manifests: they build with kustomize, run exactly config/serve.gpu.yaml, keep
everything but the Serve port private, and ship the Grafana dashboard for its sidecar."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import ray
import yaml

from serve_app.local import node_env
from serve_app.settings import Settings
from tests.support import skip_or_fail

OVERLAYS = ["dev", "prod"]


def built(overlay: str) -> dict[str, dict[str, Any]]:
    """``kubectl kustomize`` of an overlay, by ``Kind/name``."""
    if shutil.which("kubectl") is None:
        skip_or_fail("kubectl (with its built-in kustomize) is not installed")
    out = subprocess.run(
        ["kubectl", "kustomize", f"k8s/overlays/{overlay}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return {f"{doc['kind']}/{doc['metadata']['name']}": doc for doc in yaml.safe_load_all(out)}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rayservice_runs_the_gpu_serve_config_verbatim(overlay: str) -> None:
    service = built(overlay)["RayService/soul-serve"]["spec"]
    gpu_config = yaml.safe_load(Path("config/serve.gpu.yaml").read_text())
    assert yaml.safe_load(service["serveConfigV2"]) == gpu_config
    cluster = service["rayClusterConfig"]
    assert cluster["rayVersion"] == ray.__version__
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    [worker] = cluster["workerGroupSpecs"]
    assert cluster["enableInTreeAutoscaling"] is True
    assert worker["minReplicas"] < worker["maxReplicas"]
    for spec in [head["template"]["spec"], worker["template"]["spec"]]:
        [container] = spec["containers"]
        assert f"ray{ray.__version__}" in container["image"]
        env = {e["name"]: e for e in container["env"]}
        assert env["SOUL_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"]
        assert env["RAY_AUTH_MODE"]["value"] == "token"
    worker_container = worker["template"]["spec"]["containers"][0]
    assert worker_container["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_the_dockerfile_builds_the_image_the_manifests_run() -> None:
    dockerfile = Path("Dockerfile").read_text()
    [base] = re.findall(r"^FROM (\S+)$", dockerfile, flags=re.MULTILINE)
    assert base == f"rayproject/ray:{ray.__version__}-py311-gpu"
    images = set(re.findall(r"image: (\S+)", Path("k8s/base/rayservice.yaml").read_text()))
    assert images == {f"soul-serve:ray{ray.__version__}-py311-gpu"}
    assert f"docker build -t {images.pop()} ." in dockerfile
    copied = set(re.findall(r"^COPY \S+ (\S+) ", dockerfile, flags=re.MULTILINE))
    assert {"serve_app", "deployments", "config"} <= copied  # the import path and its data


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_serve_port_is_public(overlay: str) -> None:
    docs = built(overlay)
    assert [p["port"] for p in docs["Service/soul-serve"]["spec"]["ports"]] == [8000]
    policy = docs["NetworkPolicy/soul-serve-default-deny"]["spec"]
    assert policy["policyTypes"] == ["Ingress"]
    open_to_all = [rule for rule in policy["ingress"] if "from" not in rule]
    assert [p["port"] for rule in open_to_all for p in rule["ports"]] == [8000]
    assert docs["PodMonitor/soul-serve"]["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pods_http_proxy_runs_the_service_middlewares(overlay: str) -> None:
    spec = built(overlay)["RayService/soul-serve"]["spec"]["rayClusterConfig"]
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    wanted = {k: v for k, v in node_env(Settings()).items() if k.startswith("RAY_SERVE_")}
    for group in groups:
        env = {e["name"]: e.get("value") for e in group["template"]["spec"]["containers"][0]["env"]}
        assert wanted.items() <= env.items()


def test_overlays_differ_in_bucket_and_scale_and_hold_no_secrets() -> None:
    dev, prod = built("dev"), built("prod")
    buckets = {d["ConfigMap/soul-serve-config"]["data"]["object-store-url"] for d in (dev, prod)}
    assert buckets == {"gs://artifacts-dev-soulmedia", "gs://artifacts-prod-soulmedia"}
    scale = [
        d["RayService/soul-serve"]["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["maxReplicas"]
        for d in (dev, prod)
    ]
    assert scale[0] < scale[1]
    text = "".join(p.read_text() for p in Path("k8s").rglob("*.yaml"))
    assert not re.search(r"postgres(ql)?://\w", text), "a DSN in the manifests"
    assert "kind: Secret" not in text


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_grafana_dashboard_ships_as_a_sidecar_configmap(overlay: str) -> None:
    """A fixed name and the ``grafana_dashboard: "1"`` label: Grafana's sidecar loads it as is."""
    config_map = built(overlay)["ConfigMap/soul-serve-grafana-dashboard"]
    assert config_map["metadata"]["labels"] == {"grafana_dashboard": "1"}
    [(key, text)] = config_map["data"].items()
    assert key == "soul-serve.json"
    assert json.loads(text) == json.loads(Path("k8s/base/grafana-dashboard.json").read_text())
