"""Print versions of a variant, made as ``print`` jobs (``jobs/kinds/prints.py``)."""

from typing import Annotated

from fastapi import APIRouter, Body

from serve_app.api.deps import Authorized, ClientScope
from serve_app.api.errors import responses
from serve_app.api.params import VariantId
from serve_app.api.protocol import JobAccepted
from serve_app.api.routes.jobs import queued
from serve_app.api.services import Once, Services
from serve_app.jobs.kinds.prints import PrintJob
from serve_app.prints.spec import PrintOptions

router = APIRouter(tags=["prints"], dependencies=[Authorized])


@router.post(
    "/variants/{variant_id}/print",
    status_code=202,
    response_model=JobAccepted,
    responses=responses(401, 404, 409, 410, 413, 422, 429, 503),
)
async def print_variant(
    variant_id: VariantId,
    options: Annotated[PrintOptions, Body()],
    client_id: ClientScope,
    services: Services,
    once: Once,
) -> JobAccepted:
    """Queue a print-ready file of the variant's still (a job of kind ``print``): upscaled,
    framed to ``size``, through the soul's post-processing chain, at 300 DPI with an sRGB
    profile; 202 with the job id. The same options again reuse the stored print; the result
    and ``GET /variants/{id}`` list the variant's prints with signed URLs."""
    variant = await services.catalog.find_variant.remote(variant_id)
    spec = PrintJob(**options.model_dump(), soul_id=variant.soul_id, variant_id=variant_id)
    return await queued(services, once, client_id, spec)
