"""The catalog's prompt keys: a soul's keys a page at a time, a key's variants, and deleting
them (admin keys only)."""

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query

from serve_app.api.deps import AdminOnly, Authorized
from serve_app.api.errors import responses
from serve_app.api.params import PkId
from serve_app.api.protocol import KeyDeleted, KeyPage, KeyView, VariantView
from serve_app.api.services import Services
from serve_app.errors import NotFound
from serve_app.media.answers import variant_answer
from serve_app.schemas import SoulId

router = APIRouter(tags=["catalog"])


@router.get(
    "/keys",
    response_model=KeyPage,
    dependencies=[Authorized],
    responses=responses(401, 422, 503),
)
async def keys(
    services: Services,
    soul_id: Annotated[SoulId, Query()],
    after: Annotated[str, Query(max_length=120, description="next_after of a page.")] = "",
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> KeyPage:
    """A soul's prompt keys in key order, with their normalized text and variant count."""
    page = await services.catalog.keys_page.remote(soul_id, after, limit)
    keys = [KeyView(pk_id=k.pk_id, key_norm=k.key_norm, variants=n) for k, n in page]
    return KeyPage(keys=keys, next_after=keys[-1].pk_id if len(keys) == limit else None)


@router.get(
    "/keys/{pk_id}/variants",
    response_model=list[VariantView],
    dependencies=[Authorized],
    responses=responses(401, 404, 422, 503),
)
async def key_variants(pk_id: PkId, services: Services) -> list[VariantView]:
    """A prompt key's variants, oldest first, with signed cover, thumbnail and GIF URLs."""
    if await services.catalog.get_prompt_key.remote(pk_id) is None:
        raise NotFound(f"unknown prompt key {pk_id!r}")
    variants = await services.thumbnailed(await services.catalog.list_variants.remote(pk_id))
    return await asyncio.to_thread(
        lambda: [variant_answer(services.objects, services.ttl_s, v) for v in variants]
    )


@router.delete(
    "/keys/{pk_id}",
    response_model=KeyDeleted,
    dependencies=[AdminOnly],
    responses=responses(401, 403, 404, 422, 503),
)
async def delete_key(pk_id: PkId, services: Services) -> KeyDeleted:
    """Delete every variant of the key (admin keys only), as ``DELETE /variants/{id}``
    does one; the key stays, and its next request renders anew."""
    deleted = await services.catalog.delete_key_variants.remote(pk_id)
    return KeyDeleted(pk_id=pk_id, deleted=deleted)
