"""Health and self-description: liveness, readiness, ``/info``, and the OpenAPI document with
the formats this deployment encodes."""

import asyncio

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from ray import serve

from serve_app.api.deps import Authorized
from serve_app.api.errors import request_id_of, responses
from serve_app.api.info import service_info
from serve_app.api.openapi import with_formats
from serve_app.api.protocol import InfoView
from serve_app.api.services import IngressServices, Services

router = APIRouter(tags=["health"])


@router.get("/openapi.json", include_in_schema=False)
async def openapi(request: Request, services: Services) -> JSONResponse:
    formats = await services.deliverer.formats()
    return JSONResponse(with_formats(request.app.openapi(), formats))


@router.get("/docs", include_in_schema=False)
async def docs(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(openapi_url="/openapi.json", title=request.app.title)


@router.get("/healthz", responses=responses())
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/info", response_model=InfoView, dependencies=[Authorized], responses=responses(401, 503)
)
async def info(services: Services) -> InfoView:
    """Version, the graph's deployments and their running replicas, the models the souls'
    styles render with, the formats new variants get, what a pack can vary, and which
    backends are in use (by name: never a URL or a secret)."""
    status = await asyncio.to_thread(serve.status)
    styles = await services.looks.list_styles()
    formats = await services.deliverer.formats()
    variations = list(services.jobs.tools.variations)
    objects = services.objects.backend
    return service_info(status, styles, formats, variations, services.settings, objects)


@router.get("/ready", responses=responses(503))
async def ready(request: Request, services: Services) -> JSONResponse:
    """200 when the catalog store and the object store answer; else 503, saying which not
    (an error body with the request id, plus the checks)."""
    checks = await readiness(services)
    failing = [name for name, state in checks.items() if state != "ok"]
    if not failing:
        return JSONResponse({"ready": True, "checks": checks})
    detail = f"not ready: {', '.join(failing)} unavailable; retry shortly"
    body = {"detail": detail, "request_id": request_id_of(request), "ready": False}
    return JSONResponse({**body, "checks": checks}, status_code=503)


async def readiness(services: IngressServices) -> dict[str, str]:
    """Each store's state: "ok", or why it is unavailable."""
    checks: dict[str, str] = {}
    try:
        await services.catalog.ping.remote()
        checks["catalog"] = "ok"
    except Exception as exc:
        checks["catalog"] = f"unavailable: {type(exc).__name__}"
    try:
        await asyncio.to_thread(services.objects.ping)
        checks["objects"] = "ok"
    except Exception as exc:
        checks["objects"] = f"unavailable: {exc}"
    return checks
