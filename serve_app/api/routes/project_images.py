"""Search a project's assets by image (``/v1/projects/{project_id}/assets:searchByImage``): one
uploaded image file (``multipart/form-data``, field ``files``) or ``{url}``, checked as every
upload is (type, bytes, pixels: 422 or 413 naming it, nothing written), embedded by Dedupe's
image model and compared with the embeddings of the project's rendered asset images
(``projects/image_search.py``). Another client's project is a 404, before the image is read."""

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import TypeAdapter, ValidationError

from serve_app.api.deps import Authorized, ClientScope
from serve_app.api.errors import responses
from serve_app.api.identity_uploads import image_body, images_in
from serve_app.api.project_protocol import SearchHit, SearchPage
from serve_app.api.routes.projects import PREFIX, version_view
from serve_app.api.services import Services
from serve_app.errors import InvalidRequest
from serve_app.projects.image_search import upload_embedding
from serve_app.projects.models import AssetType, ProjectId, Tag
from serve_app.projects.taxonomy import QUERY_PATTERN, taxonomy_of

router = APIRouter(tags=["projects"], dependencies=[Authorized])
TAGS = TypeAdapter(list[Tag])
_TAG = r"[^,\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffd]{0,40}"
Tags = Annotated[
    str,
    Query(
        pattern=rf"^{_TAG}(,{_TAG}){{0,15}}$",
        description="Comma-separated tags (at most 16 of at most 40 characters); an asset "
        "must carry each.",
    ),
]

Taxonomy = Annotated[
    str,
    Query(
        pattern=QUERY_PATTERN,
        description="Comma-separated key:value pairs (at most 16; a key of 1 to 32 characters, "
        "a-z first, then a-z, 0-9, _; a value of 1 to 64 characters, no comma); an asset's "
        "latest version must have each.",
    ),
]


def tags_of(text: str) -> list[str]:
    """The comma-separated ``tags`` query, each checked as a tag (422 naming it)."""
    given = [t.strip() for t in text.split(",") if t.strip()]
    try:
        return TAGS.validate_python(given)
    except ValidationError as exc:
        raise InvalidRequest(f"tags: {exc.errors()[0]['msg']}") from exc


@router.post(
    PREFIX + "/{project_id}/assets:searchByImage",
    response_model=SearchPage,
    responses=responses(401, 403, 404, 409, 413, 502),
    openapi_extra=image_body(most=1),
)
async def search_assets_by_image(
    project_id: ProjectId,
    request: Request,
    client_id: ClientScope,
    services: Services,
    asset_type: AssetType | None = None,
    tags: Tags = "",
    taxonomy: Taxonomy = "",
    offset: Annotated[int, Query(ge=0, le=100_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> SearchPage:
    """The project's assets (of ``asset_type``, with every tag and ``taxonomy`` entry) ranked
    by how alike their latest images are to the image sent (``score``: the best cosine of
    image embeddings; null for an asset without embedded images, ranked last). Nothing is
    stored."""
    wanted, classed = tags_of(tags), taxonomy_of(taxonomy)
    await services.catalog.get_project.remote(client_id, project_id)  # 404 first
    image = (await images_in(request, services, most=1))[0]
    model, query = await upload_embedding(services.deliverer.handles.dedupe, image.png)
    hits = await services.catalog.search_assets_by_image.remote(
        client_id, project_id, query, model, asset_type, wanted, offset, limit, classed
    )
    found = await asyncio.to_thread(
        lambda: [
            SearchHit(**a.model_dump(), version=version_view(services, v), score=s)
            for a, v, s in hits
        ]
    )
    return SearchPage(hits=found, next_offset=offset + limit if len(found) == limit else None)
