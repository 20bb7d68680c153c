"""Answers that carry signed, short-lived URLs (signing may be a network call: run off the loop)."""

from __future__ import annotations

from serve_app.api.models import ImageResponse, Reference
from serve_app.delivery import Delivery
from serve_app.errors import Conflict
from serve_app.schemas import MediaFormat
from serve_app.storage.objects import ObjectStore


def image_answer(
    objects: ObjectStore, ttl_s: int, delivery: Delivery, media_format: MediaFormat
) -> ImageResponse:
    variant = delivery.variant
    # Variants encoded before formats were recorded have their GIF only.
    formats: dict[str, str] = variant.meta.get("formats", {"gif": variant.storage_key})
    if media_format not in formats:
        raise Conflict(
            f"format: {media_format!r} is not available; this service encodes "
            f"{', '.join(sorted(formats))}"
        )
    media = objects.signed_url(formats[media_format], ttl_s)
    cover = objects.signed_url(variant.meta.get("cover_key", variant.storage_key), ttl_s)
    return ImageResponse(
        url=media.url,
        format=media_format,
        cover_url=cover.url,
        variant_id=variant.variant_id,
        pk_id=variant.pk_id,
        cache=delivery.cache,
        expires_at=media.expires_at,
    )


def reference_answer(objects: ObjectStore, ttl_s: int, soul_id: str, storage_key: str) -> Reference:
    signed = objects.signed_url(storage_key, ttl_s)
    return Reference(
        soul_id=soul_id,
        reference_id=storage_key.rpartition("/")[2].removesuffix(".png"),
        storage_key=storage_key,
        url=signed.url,
        expires_at=signed.expires_at,
    )
