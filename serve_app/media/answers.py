"""Answers that carry signed, short-lived URLs (signing may be a network call: run off the loop)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from ulid import ULID

from serve_app.api.protocol import (
    ImageResponse,
    Reference,
    SeenView,
    SelfieResponse,
    VariantView,
)
from serve_app.delivery import Delivery, Shot
from serve_app.errors import Conflict, Forbidden, NotFound
from serve_app.schemas import MediaFormat, Variant
from serve_app.storage.local import LocalObjectStore
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
    thumbnail = variant.meta.get("thumbnail_key")
    return ImageResponse(
        url=media.url,
        format=media_format,
        cover_url=cover.url,
        thumbnail_url=objects.signed_url(thumbnail, ttl_s).url if thumbnail else None,
        variant_id=variant.variant_id,
        pk_id=variant.pk_id,
        cache=delivery.cache,
        expires_at=media.expires_at,
        identity=variant.meta.get("identity"),
    )


def shot_answer(objects: ObjectStore, ttl_s: int, shot: Shot) -> SelfieResponse:
    answer = image_answer(objects, ttl_s, shot, "gif")
    return SelfieResponse(**answer.model_dump(), landmark_key=shot.landmark_key, angle=shot.angle)


def reference_answer(objects: ObjectStore, ttl_s: int, soul_id: str, storage_key: str) -> Reference:
    signed = objects.signed_url(storage_key, ttl_s)
    return Reference(
        soul_id=soul_id,
        reference_id=storage_key.rpartition("/")[2].removesuffix(".png"),
        storage_key=storage_key,
        url=signed.url,
        expires_at=signed.expires_at,
    )


def variant_answer(objects: ObjectStore, ttl_s: int, variant: Variant) -> VariantView:
    """A variant with its thumbnail (``Deliverer.thumbnailed``)."""
    gif = objects.signed_url(variant.storage_key, ttl_s)
    cover = objects.signed_url(variant.meta.get("cover_key", variant.storage_key), ttl_s)
    ts_ms = ULID.from_str(variant.variant_id).milliseconds
    return VariantView(
        variant_id=variant.variant_id,
        pk_id=variant.pk_id,
        cover_url=cover.url,
        thumbnail_url=objects.signed_url(variant.meta["thumbnail_key"], ttl_s).url,
        url=gif.url,
        seed=variant.seed,
        sampler=variant.meta.get("sampler"),
        style_id=variant.meta.get("style_id"),
        created_at=datetime.fromtimestamp(ts_ms / 1000, UTC),
        identity=variant.meta.get("identity"),
    )


def seen_answer(objects: ObjectStore, ttl_s: int, variant: Variant, seen_at_ts: int) -> SeenView:
    view = variant_answer(objects, ttl_s, variant)
    return SeenView(**view.model_dump(), seen_at=datetime.fromtimestamp(seen_at_ts / 1000, UTC))


def media_file(objects: ObjectStore, storage_key: str, exp: int, sig: str) -> Path:
    """The file a signed ``/media`` URL names: 403 unless its signature holds, 404 unless it is
    a file inside the local store (a key that would leave it, through ``..``, an absolute path
    or a planted symlink, included)."""
    if not isinstance(objects, LocalObjectStore):
        raise NotFound("media is served by the object store's own signed URLs")
    if not objects.verify(storage_key, exp, sig):
        raise Forbidden("invalid or expired media signature")
    try:
        path = objects.path(storage_key)
    except ValueError:
        raise NotFound("no such object") from None
    if not path.is_file():
        raise NotFound("no such object")
    return path
