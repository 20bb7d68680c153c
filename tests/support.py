"""Shared by unit and integration tests: one event loop, and PostgreSQL databases of their own.

Tests that need PostgreSQL skip with a reason when no server answers, and fail instead when
``SOUL_TEST_STRICT=1`` (set by ``.ci/run``), so CI can never pass by skipping them.
"""

from __future__ import annotations

import asyncio
import atexit
import hashlib
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar
from urllib.parse import urlsplit

import psycopg
import pytest

from serve_app.storage.postgres import scratch_database

T = TypeVar("T")
STRICT = os.environ.get("SOUL_TEST_STRICT") == "1"
POSTGRES_ADMIN_URL = os.environ.get(
    "SOUL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)

_runner = asyncio.Runner()
atexit.register(_runner.close)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run on one long-lived loop: a psycopg pool belongs to the loop that opened it."""
    return _runner.run(coro)


def skip_or_fail(reason: str) -> None:
    if STRICT:
        pytest.fail(f"{reason} (SOUL_TEST_STRICT=1 turns this skip into a failure)")
    pytest.skip(reason)


def require_postgres() -> None:
    try:
        psycopg.connect(POSTGRES_ADMIN_URL, connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        where = urlsplit(POSTGRES_ADMIN_URL).netloc.rpartition("@")[2]
        skip_or_fail(f"no PostgreSQL at {where}: {str(exc).strip()}")


@contextmanager
def temporary_database() -> Iterator[str]:
    """A new, empty database on the test server; dropped (connections and all) afterwards."""
    require_postgres()
    with scratch_database(POSTGRES_ADMIN_URL, "soul_test") as url:
        yield url


@contextmanager
def postgres_outage() -> Iterator[None]:
    """Stop the local PostgreSQL cluster for the duration, then start it again, whatever happens.

    Only for the machine's own cluster (the one `.ci/run` starts) with pg_ctlcluster at hand.
    """
    clusters = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    host = urlsplit(POSTGRES_ADMIN_URL).hostname
    if not shutil.which("pg_ctlcluster") or not clusters or host not in ("127.0.0.1", "localhost"):
        skip_or_fail("stopping PostgreSQL needs the local cluster and pg_ctlcluster")
    control = ["pg_ctlcluster", "--skip-systemctl-redirect", clusters[-1], "main"]
    subprocess.run([*control, "stop", "-m", "fast"], check=True, capture_output=True)
    try:
        yield
    finally:
        subprocess.run([*control, "start"], check=True, capture_output=True)


class QuietHandler(BaseHTTPRequestHandler):
    """A test server's handler: whole bodies with their length, no request log on stderr."""

    def _send(self, code: int, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


class FakeCivitai:
    """CivitAI's REST API on 127.0.0.1, as far as the model manager uses it: model-version
    metadata and downloads (through a redirect to a "CDN" path, like the real one), both behind
    a bearer token. ``publish`` adds a version; ``requests`` counts what was asked; while
    ``offline``, every request fails (503), as an unreachable CivitAI does."""

    TOKEN = "fake-civitai-token"

    def __init__(self) -> None:
        self.versions: dict[str, dict[str, Any]] = {}
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []
        self.offline = False
        fake = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                fake.requests.append(self.path)
                if fake.offline:
                    return self._send(503, b'{"error": "Service Unavailable"}')
                if self.path.startswith("/cdn/"):  # signed CDN URL: no token needed
                    return self._send(200, fake.files[self.path.removeprefix("/cdn/")])
                if self.headers.get("Authorization") != f"Bearer {fake.TOKEN}":
                    return self._send(401, b'{"error": "Unauthorized"}')
                version = self.path.rsplit("/", 1)[-1]
                if self.path.startswith("/api/v1/model-versions/") and version in fake.versions:
                    return self._send(200, json.dumps(fake.versions[version]).encode())
                if self.path.startswith("/api/download/models/") and version in fake.files:
                    self.send_response(302)
                    self.send_header("Location", f"/cdn/{version}")
                    self.end_headers()
                    return None
                return self._send(404, b'{"error": "Model not found"}')

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def publish(
        self,
        version: str,
        data: bytes,
        *,
        name: str = "lora.safetensors",
        file_format: str = "SafeTensor",
        sha256: str | None = None,
        size_kb: float | None = None,
    ) -> str:
        self.files[version] = data
        self.versions[version] = {
            "id": int(version),
            "baseModel": "SDXL 1.0",
            "files": [
                {
                    "name": name,
                    "type": "Model",
                    "primary": True,
                    "sizeKB": len(data) / 1024 if size_kb is None else size_kb,
                    "metadata": {"format": file_format, "fp": "fp16"},
                    "hashes": {"SHA256": (sha256 or hashlib.sha256(data).hexdigest()).upper()},
                    "downloadUrl": f"{self.url}/api/download/models/{version}",
                }
            ],
        }
        return f"civitai:{version}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def static_http(files: dict[str, bytes]) -> Iterator[str]:
    """Serve ``files`` (URL path -> body) on 127.0.0.1, 404 for anything else; the base URL."""

    class Handler(QuietHandler):
        def do_GET(self) -> None:
            self._send(*((200, files[self.path]) if self.path in files else (404, b"not found")))

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
