"""Selfies: the places a selfie can have, and ``POST /selfie`` (the soul at a landmark)."""

import asyncio
from typing import Any

from fastapi import APIRouter

from serve_app.api.delivered import delivered
from serve_app.api.deps import Authorized, ClientScope
from serve_app.api.errors import responses
from serve_app.api.protocol import SelfieRequest, SelfieResponse
from serve_app.api.services import Once, Services
from serve_app.delivery import Place, Shot, tenant_user
from serve_app.media.answers import shot_answer

router = APIRouter(tags=["selfies"], dependencies=[Authorized])


@router.get("/cities", responses=responses(401))
async def cities(services: Services) -> dict[str, Any]:
    """Cities with their landmarks, and the moods and camera angles a selfie can have."""
    places = services.deliverer.places
    return {
        "cities": [
            {"city_key": key, "display_name": c.display_name, "landmarks": list(c.landmarks)}
            for key, c in places.cities.items()
        ],
        "moods": list(places.moods),
        "angles": list(places.angles),
    }


@router.post(
    "/selfie",
    response_model=SelfieResponse,
    responses=responses(401, 404, 409, 413, 422, 502, 503),
)
async def selfie(
    body: SelfieRequest, client_id: ClientScope, services: Services, once: Once
) -> SelfieResponse:
    """The soul at a landmark of the city this user has not had (else the least recently
    used one, from a new angle), in their style and mood."""
    services.deliverer.check_place(body.city_key, body.mood)
    await services.deliverer.check_identity(body.soul_id, body.identity_version)

    async def shoot() -> dict[str, Any]:
        user = tenant_user(client_id, body.user_id)
        place = Place(body.city_key, body.mood)
        shot = await services.deliverer.selfie(
            body.soul_id, place, user, identity_version=body.identity_version
        )
        return shot.model_dump(mode="json")

    shot = Shot.model_validate(await once(body.model_dump(mode="json"), shoot))
    answer = await asyncio.to_thread(shot_answer, services.objects, services.ttl_s, shot)
    delivered("/selfie", once.response, shot)
    return answer
