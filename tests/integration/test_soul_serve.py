"""`soul serve` (what `make serve` runs): the service, the Ray dashboard on localhost only, the
metrics endpoint, all printed where they are; nothing else listens beyond loopback but what
Serve binds to every interface with no setting; Ctrl-C stops it cleanly."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psutil
import pytest
from soul_client import free_port

from serve_app.local import node_env
from serve_app.settings import Settings

# `soul serve` starts its own Ray, after the shared graph has stopped.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.usefixtures("own_ray")]

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def soul_serve(
    tmp_path: Path, tiny_models: Path
) -> Iterator[tuple[subprocess.Popen[str], queue.Queue[str]]]:
    (tmp_path / "models").symlink_to(tiny_models)
    inherited = {k: v for k, v in os.environ.items() if k not in node_env(Settings())}
    env = {
        **inherited,  # without what the tests' conftest set: `soul` must set it itself
        "SOUL_DATA_DIR": str(tmp_path),
        "PORT": str(free_port()),
        "SOUL_DASHBOARD_PORT": str(free_port()),
        "SOUL_METRICS_PORT": str(free_port()),
    }
    soul = shutil.which("soul", path=str(Path(sys.executable).parent))
    assert soul, "the soul command is not installed next to this Python"
    process = subprocess.Popen(
        [soul, "serve", "--config", "config/serve.local.yaml"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: nothing outlives the test
    )
    lines: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None
    threading.Thread(target=lambda: [lines.put(x) for x in process.stdout], daemon=True).start()
    try:
        yield process, lines
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def printed(lines: queue.Queue[str], pattern: str, timeout_s: float = 120) -> re.Match[str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            continue
        if match := re.search(pattern, line):
            return match
    raise AssertionError(f"`soul serve` never printed {pattern!r}")


def until_ok(url: str, timeout_s: float = 180) -> httpx.Response:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            response = httpx.get(url, timeout=5)
            if response.status_code == 200 or time.monotonic() > deadline:
                return response
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
        time.sleep(1)


def every_deployment_healthy(dashboard: str, timeout_s: float = 180) -> None:
    """The app is running with every deployment healthy, as the dashboard's Serve API says (with
    the token `soul serve` points to)."""
    ray = Path(sys.executable).parent / "ray"
    token = subprocess.run([ray, "get-auth-token"], capture_output=True, text=True, check=True)
    headers = {"Authorization": f"Bearer {token.stdout.split()[-1]}"}
    deadline = time.monotonic() + timeout_s
    while True:
        app = httpx.get(f"{dashboard}/api/serve/applications/", headers=headers, timeout=10)
        soul = app.json()["applications"]["soul"]
        states = {name: d["status"] for name, d in soul["deployments"].items()}
        if soul["status"] == "RUNNING" or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert soul["status"] == "RUNNING" and set(states.values()) == {"HEALTHY"}, states


def listeners(pid: int) -> list[tuple[str, str, int]]:
    """(process name, address, port) of every listening TCP socket of ``pid`` and its children."""
    found = []
    for process in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            for conn in process.net_connections(kind="tcp"):
                if conn.status == psutil.CONN_LISTEN:
                    found.append((process.name(), conn.laddr.ip, conn.laddr.port))
    return found


def loopback(address: str) -> bool:
    return ipaddress.ip_address(address.removeprefix("::ffff:")).is_loopback


def test_soul_serve_prints_the_service_dashboard_and_metrics_and_stops_on_ctrl_c(
    soul_serve: tuple[subprocess.Popen[str], queue.Queue[str]],
) -> None:
    process, lines = soul_serve
    service = printed(lines, r"Soul Serve on (http://\S+)")[1]
    dashboard = printed(lines, r"Ray dashboard on (http://\S+)")[1]
    metrics = printed(lines, r"Metrics on (http://\S+)")[1]

    assert urlsplit(dashboard).hostname == "127.0.0.1"  # never on a public interface
    assert until_ok(dashboard).status_code == 200
    assert until_ok(f"{service}/healthz").json() == {"status": "ok"}
    every_deployment_healthy(dashboard)  # each fits this machine's CPUs (the Upscaler did not)
    deadline = time.monotonic() + 60  # the node exports every few seconds
    while "ray_serve_num_http_requests" not in until_ok(metrics).text:
        assert time.monotonic() < deadline, "Serve's request metrics never showed up"
        time.sleep(2)

    # Beyond loopback: only each Serve replica's inter-deployment gRPC server, which Serve
    # binds to every interface whatever the node's address (Ray's token auth guards it).
    beyond = [(name, port) for name, ip, port in listeners(process.pid) if not loopback(ip)]
    assert beyond and all(name.startswith("ray::ServeReplica") for name, _ in beyond), beyond

    # The proxy's header limit, before the Ingress: JSON, with the request's id.
    refused = httpx.get(f"{service}/healthz", headers={"x-big": "a" * 40_000}, timeout=10)
    assert refused.status_code == 431 and refused.json()["request_id"]
    assert refused.headers["x-request-id"] == refused.json()["request_id"]

    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=120) == 0
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{service}/healthz", timeout=5)
