"""Admin routes (admin keys only): maintenance run as jobs."""

from typing import Annotated

from fastapi import APIRouter, Body

from serve_app.api.deps import AdminOnly, ClientScope
from serve_app.api.errors import responses
from serve_app.api.protocol import JobAccepted
from serve_app.api.routes.jobs import queued
from serve_app.api.services import Once, Services
from serve_app.jobs.kinds.rebuild_keys import RebuildKeysJob

router = APIRouter(tags=["admin"], dependencies=[AdminOnly])


@router.post(
    "/admin/rebuild_prompt_key",
    status_code=202,
    response_model=JobAccepted,
    responses=responses(401, 403, 404, 409, 422, 429, 503),
)
async def rebuild_prompt_key(
    spec: Annotated[RebuildKeysJob, Body()], client_id: ClientScope, services: Services, once: Once
) -> JobAccepted:
    """Normalize and embed the soul's prompt keys anew (after a change of the embedder or
    of the embedded text), as a job of this admin key: 202 with its id; its progress counts
    keys. Keys and their variants keep their ids, and every Catalog replica swaps its
    rebuilt index in without a pause in serving."""
    return await queued(services, once, client_id, spec)
