"""The catalog's variants: read one, derive a new one from it (regenerate, animate), delete
one (admin keys only)."""

import asyncio

from fastapi import APIRouter, Response

from serve_app.api.delivered import delivered_once
from serve_app.api.deps import AdminOnly, Authorized, ClientScope
from serve_app.api.errors import responses
from serve_app.api.params import VariantId
from serve_app.api.protocol import AnimateRequest, ImageResponse, RegenerateRequest, VariantView
from serve_app.api.services import Once, Services
from serve_app.delivery import Delivery, tenant_user
from serve_app.media.answers import variant_answer
from serve_app.media.prints import prints_of
from serve_app.schemas import Regeneration

router = APIRouter(tags=["catalog"])


@router.get(
    "/variants/{variant_id}",
    response_model=VariantView,
    dependencies=[Authorized],
    responses=responses(401, 404, 410, 422, 503),
)
async def get_variant(variant_id: VariantId, services: Services) -> VariantView:
    """A variant with signed cover, thumbnail and GIF URLs, and its print versions; 410 once
    it was deleted."""
    found = await services.catalog.find_variant.remote(variant_id)
    [variant] = await services.thumbnailed([found])
    view = await asyncio.to_thread(variant_answer, services.objects, services.ttl_s, variant)
    view.prints = await asyncio.to_thread(prints_of, services.objects, services.ttl_s, variant)
    return view


@router.post(
    "/variants/{variant_id}/regenerate",
    response_model=ImageResponse,
    dependencies=[Authorized],
    responses=responses(401, 404, 409, 410, 422, 503),
)
async def regenerate(
    variant_id: VariantId,
    body: RegenerateRequest,
    client_id: ClientScope,
    services: Services,
    once: Once,
) -> ImageResponse:
    """A new variant of the same key derived from this one (its style and prompt; a new
    seed, extra words, or img2img from its cover at ``strength``), delivered to the user
    as a GIF; 409 past ``ingress.regenerate_limit`` of them per original."""

    async def derive() -> Delivery:
        user = tenant_user(client_id, body.user_id)
        change = Regeneration.model_validate(body.model_dump(exclude={"user_id"}))
        return await services.deliverer.regenerate(variant_id, user, change)

    params = {"variant_id": variant_id, **body.model_dump(mode="json")}
    route = "/variants/{variant_id}/regenerate"
    return await delivered_once(services, once, route, params, derive)


@router.post(
    "/variants/{variant_id}/animate",
    response_model=ImageResponse,
    dependencies=[Authorized],
    responses=responses(401, 404, 409, 410, 422, 503),
)
async def animate(
    variant_id: VariantId,
    body: AnimateRequest,
    client_id: ClientScope,
    services: Services,
    once: Once,
) -> ImageResponse:
    """A new variant of the same key: this one's cover set in motion in ``mode``,
    delivered to the user as a GIF; it counts towards ``ingress.regenerate_limit``."""

    async def move() -> Delivery:
        user = tenant_user(client_id, body.user_id)
        return await services.deliverer.animate(variant_id, user, body.mode, body.frames)

    params = {"variant_id": variant_id, **body.model_dump(mode="json")}
    route = "/variants/{variant_id}/animate"
    return await delivered_once(services, once, route, params, move)


@router.delete(
    "/variants/{variant_id}",
    status_code=204,
    dependencies=[AdminOnly],
    responses=responses(401, 403, 404, 410, 422, 503),
)
async def delete_variant(variant_id: VariantId, services: Services) -> Response:
    """Delete a variant (admin keys only): it is never delivered again, to anyone, and its
    objects are removed; the users who had it keep it in their history (not in
    ``/users/{id}/seen``, which lists what still exists). 410 when it is already gone."""
    await services.catalog.delete_variant.remote(variant_id)
    return Response(status_code=204)
