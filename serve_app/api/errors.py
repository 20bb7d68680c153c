"""One table from errors to HTTP answers: every error a client sees is an ``ErrorBody`` with the
request's id, whether a route raised it, FastAPI refused the input, or something broke."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from serve_app.api.protocol import ErrorBody
from serve_app.errors import ReplicaLost, ServiceError, first_line, replica_died, root_cause

log = logging.getLogger("ray.serve")

# What each status means on any route, for the OpenAPI document.
MEANINGS = {
    401: "Missing or invalid bearer API key (an admin key on /admin routes).",
    403: "Not allowed: an invalid or expired signature, a source this service may not read, "
    "or an /admin route while no admin key is set.",
    404: "Something the request names does not exist.",
    410: "What the request names was deleted.",
    409: "The request conflicts with the current state; the detail says what to do first.",
    413: "What the request names is too large.",
    422: "Invalid input; the detail names the field and what to fix. Nothing was changed.",
    429: "Over a limit of this API client (the detail names it); retry after Retry-After.",
    431: "Too many or too large request headers (the detail gives the limit).",
    502: "An outside source (CivitAI, a reference URL) failed.",
    503: "Busy, a replica serving the request died, or the catalog is unreachable; retry after "
    "Retry-After seconds.",
}


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the error statuses a route answers, all with ``ErrorBody``;
    on every route: 422 (``deps.unambiguous`` refuses a repeated parameter anywhere), 431 (the
    HTTP proxy's header limits, ``api/proxy.py``) and 503 (the Ingress replica, or one it
    called, died under the request; or the proxy shed it)."""
    every = {*codes, 422, 431, 503}
    return {code: {"model": ErrorBody, "description": MEANINGS[code]} for code in sorted(every)}


def request_id_of(request: Request) -> str:
    """Serve's proxy gives every request an id (the client's X-Request-ID if it sent one) and
    returns it as the X-Request-ID response header; errors quote the same id."""
    return request.headers.get("x-request-id", "")


def error_response(
    request: Request,
    status: int,
    detail: str,
    headers: dict[str, str] | None = None,
    errors: list[dict[str, Any]] | None = None,
) -> JSONResponse:
    body = ErrorBody(detail=detail, request_id=request_id_of(request), errors=errors)
    return JSONResponse(
        status_code=status, content=body.model_dump(exclude_none=True), headers=headers
    )


async def service_error(request: Request, exc: Exception) -> JSONResponse:
    """A domain error (also when Ray wrapped it on its way from another deployment)."""
    error = root_cause(exc)
    status = getattr(error, "status_code", 500)
    if status >= 500:
        log.warning("request %s: %s: %s", request_id_of(request), type(error).__name__, error)
    retry_after = getattr(error, "retry_after_s", None)
    headers = {"Retry-After": str(round(retry_after))} if retry_after is not None else None
    detail = getattr(error, "public_detail", None) or first_line(error)
    errors = getattr(error, "errors", None)  # a list on a ServiceError that lists problems
    listed = jsonable_encoder(errors) if isinstance(errors, list) else None
    return error_response(request, status, detail, headers, errors=listed)


async def invalid_request(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [
        f"{'.'.join(str(p) for p in err['loc'][1:]) or err['loc'][0]}: {err['msg']}"
        for err in exc.errors()
    ]
    # Where and why, never the rejected input itself (it may be huge, or not even JSON: NaN).
    errors = [{k: err[k] for k in ("type", "loc", "msg")} for err in exc.errors()]
    return error_response(request, 422, "; ".join(problems), errors=jsonable_encoder(errors))


METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def allowed_methods(request: Request) -> set[str]:
    """Every method some route answers at this path (Starlette's 405 names only the first
    route that matched the path, whatever the others take): each method tried against the
    router, as a request with it would be."""
    return {
        method
        for method in METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] == Match.FULL
            for route in request.app.router.routes
        )
    }


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if isinstance(exc.__cause__, UnicodeDecodeError):  # FastAPI says 400 for a body it can't read
        return error_response(request, 422, "body: not valid UTF-8 JSON")
    headers = dict(exc.headers) if exc.headers else None
    if exc.status_code == 405:
        allowed = allowed_methods(request)
        if not allowed:  # only the OPTIONS catch-all matched: there is nothing here
            return error_response(request, 404, "Not Found")
        headers = {**(headers or {}), "Allow": ", ".join(sorted(allowed))}
    return error_response(request, exc.status_code, str(exc.detail), headers)


async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    if replica_died(exc):
        return await service_error(request, ReplicaLost())
    request_id = request_id_of(request)
    log.exception("request %s failed: %s", request_id, type(exc).__name__)
    detail = f"internal error ({type(root_cause(exc)).__name__}); nothing was delivered"
    return error_response(request, 500, detail)


HANDLERS: dict[type[Exception], Callable[[Request, Exception], Awaitable[JSONResponse]]] = {
    ServiceError: service_error,
    RequestValidationError: invalid_request,
    StarletteHTTPException: http_error,
    Exception: unexpected_error,
}


async def options(request: Request) -> Response:
    """OPTIONS on any path: the methods its routes answer, all of them."""
    methods = allowed_methods(request)
    if not methods:
        return error_response(request, 404, "Not Found")
    return Response(status_code=204, headers={"Allow": ", ".join(sorted(methods | {"OPTIONS"}))})


def install(app: FastAPI) -> None:
    for error, handler in HANDLERS.items():
        app.add_exception_handler(error, handler)
    app.add_api_route("/{path:path}", options, methods=["OPTIONS"], include_in_schema=False)
