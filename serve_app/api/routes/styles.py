"""A soul's style profile: upsert, list, read, delete."""

from typing import Any

from fastapi import APIRouter, Response

from serve_app.api.deps import Authorized
from serve_app.api.errors import responses
from serve_app.api.protocol import StyleIn
from serve_app.api.services import Once, Services
from serve_app.schemas import SoulId, StyleProfile

router = APIRouter(tags=["styles"], dependencies=[Authorized])


@router.post(
    "/style",
    response_model=StyleProfile,
    responses=responses(401, 404, 409, 413, 422, 502, 503),
)
async def put_style(style: StyleIn, services: Services, once: Once) -> StyleProfile:
    """Upsert a soul's style profile (last write wins)."""
    params = style.model_dump(mode="json")

    async def upsert() -> dict[str, Any]:
        stored = await services.looks.put_style(StyleProfile.model_validate(params))
        return stored.model_dump(mode="json")

    return StyleProfile.model_validate(await once(params, upsert))


@router.get("/style", response_model=list[StyleProfile], responses=responses(401, 503))
async def list_styles(services: Services) -> list[StyleProfile]:
    return await services.looks.list_styles()


@router.get(
    "/style/{soul_id}", response_model=StyleProfile, responses=responses(401, 404, 422, 503)
)
async def get_style(soul_id: SoulId, services: Services) -> StyleProfile:
    return await services.looks.get_style(soul_id)


@router.delete("/style/{soul_id}", status_code=204, responses=responses(401, 404, 409, 422, 503))
async def delete_style(soul_id: SoulId, services: Services, once: Once) -> Response:
    async def delete() -> dict[str, Any]:
        await services.looks.delete_style(soul_id)
        return {}

    await once({"soul_id": soul_id}, delete)
    return Response(status_code=204, headers=once.response.headers)
