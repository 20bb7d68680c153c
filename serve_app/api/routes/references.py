"""A soul's reference images: ingest one from a URL, list them with signed URLs."""

import asyncio
from typing import Any

from fastapi import APIRouter

from serve_app.api.deps import Authorized
from serve_app.api.errors import responses
from serve_app.api.protocol import IngestedReference, Reference, ReferenceRequest
from serve_app.api.services import IngressServices, Once, Services
from serve_app.looks import StoredReference
from serve_app.media.answers import reference_answer
from serve_app.schemas import SoulId

router = APIRouter(tags=["references"], dependencies=[Authorized])


def signed(services: IngressServices, soul_id: str, storage_key: str) -> Reference:
    return reference_answer(services.objects, services.ttl_s, soul_id, storage_key)


@router.post(
    "/ingest/reference",
    response_model=IngestedReference,
    responses=responses(401, 403, 404, 409, 413, 422, 502, 503),
)
async def ingest_reference(
    body: ReferenceRequest, services: Services, once: Once
) -> IngestedReference:
    """Fetch an image for a soul, verify it and store it as a plain RGB PNG."""

    async def ingest() -> dict[str, Any]:
        stored = await services.looks.ingest_reference(body.soul_id, body.url)
        return stored.model_dump(mode="json")

    stored = StoredReference.model_validate(await once(body.model_dump(mode="json"), ingest))
    reference = await asyncio.to_thread(signed, services, body.soul_id, stored.storage_key)
    return IngestedReference.model_validate({**stored.model_dump(), **reference.model_dump()})


@router.get(
    "/ingest/reference/{soul_id}",
    response_model=list[Reference],
    responses=responses(401, 404, 422, 503),
)
async def list_references(soul_id: SoulId, services: Services) -> list[Reference]:
    """A soul's reference images, oldest first, with signed URLs."""
    keys = await services.looks.reference_keys(soul_id)
    return await asyncio.to_thread(lambda: [signed(services, soul_id, k) for k in keys])
