"""A character's portrait (``…/assets/{asset_id}:portrait``), made as a ``portrait`` job
(``jobs/kinds/portrait.py``): the display version and a 2048x2048 print at 300 DPI."""

from fastapi import APIRouter

from serve_app.api import paths  # noqa: F401  # the asset_id convertor
from serve_app.api.deps import Authorized, ClientScope
from serve_app.api.errors import responses
from serve_app.api.protocol import JobAccepted
from serve_app.api.routes.jobs import queued
from serve_app.api.routes.projects import ASSET, Version
from serve_app.api.services import Once, Services
from serve_app.jobs.kinds.portrait import portrait_job
from serve_app.projects.models import AssetId, ProjectId

router = APIRouter(tags=["projects"], dependencies=[Authorized])


@router.post(
    ASSET + ":portrait",
    status_code=202,
    response_model=JobAccepted,
    responses=responses(401, 404, 409, 429),
)
async def portrait(
    project_id: ProjectId,
    asset_id: AssetId,
    client_id: ClientScope,
    services: Services,
    once: Once,
    version: Version = None,
) -> JobAccepted:
    """Queue a character version's portrait (the latest version when ``version`` is not
    given; a job of kind ``portrait``): its ``front`` image, square, as the display version
    (labelled 1024x1024) with a thumbnail, and a 2048x2048 PNG at 300 DPI through the print
    path, stored beside the version's images; 202. 409: not a character, or no front image."""
    spec = await portrait_job(services.catalog, client_id, project_id, asset_id, version)
    return await queued(services, once, client_id, spec)
