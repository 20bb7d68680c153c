"""The middlewares Serve's HTTP proxy runs (``api/proxy.py``), wrapped the way the proxy wraps
them (Serve's own request-id middleware innermost), around stand-ins for the proxy's answers."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

import httpx
from ray.serve._private.http_util import _apply_middlewares
from starlette.types import Receive, Scope, Send

from serve_app.api.proxy import middlewares


async def shed(scope: Scope, receive: Receive, send: Send) -> None:
    """What the proxy sends when a deployment's queue is full."""
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"retry-after", b"2")],
        }
    )
    await send({"type": "http.response.body", "body": b"Request dropped due to backpressure"})


async def cut_off(scope: Scope, receive: Receive, send: Send) -> None:
    """The proxy when the replica died mid-request: it returns without answering."""


async def ingress(scope: Scope, receive: Receive, send: Send) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 404,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send(
        {"type": "http.response.body", "body": b'{"detail":"unknown soul","request_id":"r1"}'}
    )


def call(app: Any, method: str = "GET", headers: dict[str, str] | None = None) -> httpx.Response:
    async def go() -> httpx.Response:
        proxied = _apply_middlewares(app, middlewares())
        transport = httpx.ASGITransport(app=proxied)
        async with httpx.AsyncClient(transport=transport, base_url="http://soul") as client:
            return await client.request(method, "/image", headers=headers)

    return asyncio.run(go())


def test_too_many_or_too_large_headers_are_a_431_before_the_request_goes_on() -> None:
    many = call(ingress, headers={f"x-h{i}": "v" for i in range(120)})
    large = call(ingress, headers={"x-big": "a" * 40_000})
    fine = call(ingress, headers={"x-small": "a" * 1000})
    for refused, why in [
        (many, "request headers; send at most 100"),
        (large, "bytes; send at most 32768"),
    ]:
        assert refused.status_code == 431 and why in refused.json()["detail"]
        assert refused.json()["request_id"] == refused.headers["x-request-id"]
    assert fine.status_code == 404  # passed on to the app


def test_the_proxys_own_errors_become_the_error_body_with_the_request_id() -> None:
    busy = call(shed, headers={"x-request-id": "abc"})
    assert busy.status_code == 503 and busy.headers["retry-after"] == "2"
    assert busy.json() == {"detail": "Request dropped due to backpressure", "request_id": "abc"}
    assert busy.headers["content-type"] == "application/json"
    died = call(cut_off)
    assert died.status_code == 503 and died.headers["retry-after"] == "1"
    assert died.json()["detail"].startswith("a replica serving this request died")
    assert died.json()["request_id"] == died.headers["x-request-id"]


def test_json_answers_and_heads_pass_unchanged() -> None:
    answer, head = call(ingress), call(ingress, "HEAD")
    assert answer.json() == {"detail": "unknown soul", "request_id": "r1"}
    assert head.status_code == 404 and head.content == b""


PROXY_TAGS = """
import json, sys
from ray.serve._private.proxy_router import ProxyRouter
from ray.serve._private.thirdparty.get_asgi_route_name import RoutePattern
import serve_app.api.proxy  # what Ray's proxy imports of ours (its middlewares)

router = ProxyRouter.__new__(ProxyRouter)
router._route_pattern_apps = {}
router.route_patterns = {"/": [RoutePattern(**p) for p in json.loads(sys.argv[1])]}
for path in sys.argv[2:]:
    scope = {"type": "http", "method": "GET", "path": path, "root_path": "", "headers": []}
    print(router.match_route_pattern("/", scope))
"""


def test_the_proxy_tags_each_request_with_its_route_not_the_prefix() -> None:
    """Serve's proxy compiles every route's path in its own process to tag requests (metrics,
    logs); a path convertor it does not know would make it tag every request ``/``."""
    from ray.serve._private.thirdparty.get_asgi_route_name import extract_route_patterns

    from deployments.ingress import api

    patterns = [{"methods": p.methods, "path": p.path} for p in extract_route_patterns(api)]
    asset = "/v1/projects/prj_1/assets/ast_" + "0" * 26
    paths = ["/image", asset]
    tagged = subprocess.run(
        [sys.executable, "-c", PROXY_TAGS, json.dumps(patterns), *paths],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert tagged == ["/image", "/v1/projects/{project_id}/assets/{asset_id:asset_id}"]
