"""What Serve's HTTP proxy runs in front of the Ingress: Ray imports ``middlewares`` from
``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH`` (set by ``soul serve``, ``local_graph`` and the
RayService) and wraps its ASGI app in them, outside its own request-id middleware.

- ``HeaderLimits`` refuses too many or too large request headers (431) before the proxy
  routes the request, so an oversized request never travels to an Ingress replica. The proxy's
  HTTP parser has no limit of its own: it still reads what a client sends, up to the socket.
- ``JsonErrors`` gives the proxy's own answers (a full queue's 503, a timeout's 408) the
  service's error body: JSON with the request id. Where the proxy gives up without answering
  (the Ingress replica died mid-request), it answers a 503 with Retry-After.
"""

from __future__ import annotations

import uuid

from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve_app.api import paths  # noqa: F401  # the proxy compiles our routes' paths too
from serve_app.api.protocol import ErrorBody
from serve_app.errors import ReplicaLost
from serve_app.settings import LimitSettings

REQUEST_ID = b"x-request-id"


def middlewares() -> list[Middleware]:
    """Ray's proxy callback: the middlewares, outermost last."""
    limits = LimitSettings()
    return [
        Middleware(JsonErrors),
        Middleware(HeaderLimits, max_bytes=limits.max_header_bytes, max_count=limits.max_headers),
    ]


def error_messages(
    status: int, detail: str, request_id: str, headers: list[tuple[bytes, bytes]] | None = None
) -> list[Message]:
    body = ErrorBody(detail=detail, request_id=request_id).model_dump_json(exclude_none=True)
    data = body.encode()
    head = [
        *(headers or []),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(data)).encode()),
        (REQUEST_ID, request_id.encode()),
    ]
    return [
        {"type": "http.response.start", "status": status, "headers": head},
        {"type": "http.response.body", "body": data},
    ]


class HeaderLimits:
    def __init__(self, app: ASGIApp, max_bytes: int, max_count: int) -> None:
        self.app, self.max_bytes, self.max_count = app, max_bytes, max_count

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            problem = self.problem(scope["headers"])
            if problem:
                for message in error_messages(431, problem, str(uuid.uuid4())):
                    await send(message)
                return
        await self.app(scope, receive, send)

    def problem(self, headers: list[tuple[bytes, bytes]]) -> str:
        if len(headers) > self.max_count:
            return f"{len(headers)} request headers; send at most {self.max_count}"
        size = sum(len(name) + len(value) for name, value in headers)
        if size > self.max_bytes:
            return f"request headers of {size} bytes; send at most {self.max_bytes}"
        return ""


class JsonErrors:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "HEAD":
            await self.app(scope, receive, send)
            return
        answer = _Answer(send)
        await self.app(scope, receive, answer.send)
        if not answer.started:  # the proxy gave up without answering: a replica died
            # (Serve's request-id middleware, inside this one, wrote the id into the scope)
            request_id = dict(scope["headers"]).get(REQUEST_ID, b"").decode("latin-1")
            lost = ReplicaLost()
            retry = [(b"retry-after", str(lost.retry_after_s).encode())]
            for message in error_messages(lost.status_code, str(lost), request_id, retry):
                await send(message)


class _Answer:
    """Passes the response on, except a non-JSON error, which it collects and sends as JSON."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False
        self._error: Message | None = None
        self._text = bytearray()

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
            headers = dict(message.get("headers", []))
            content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
            if message["status"] >= 400 and content_type != b"application/json":
                self._error = message
                return
        elif message["type"] == "http.response.body" and self._error is not None:
            self._text += message.get("body", b"")
            if not message.get("more_body", False):
                await self._send_as_json(self._error)
            return
        await self._send(message)

    async def _send_as_json(self, start: Message) -> None:
        kept = [
            (name, value)
            for name, value in start.get("headers", [])
            if name.lower() not in (b"content-type", b"content-length", REQUEST_ID)
        ]
        request_id = dict(start.get("headers", [])).get(REQUEST_ID, b"").decode("latin-1")
        detail = self._text.decode("utf-8", "replace").strip() or "error"
        for message in error_messages(start["status"], detail, request_id, kept):
            await self._send(message)
