"""How a delivery goes out (``/image``, ``/selfie``, a variant's regenerate and animate): once
per Idempotency-Key, its URLs signed now, counted and logged."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Response

from serve_app.api.protocol import ImageResponse
from serve_app.api.services import IdempotentCall, IngressServices
from serve_app.delivery import Delivery
from serve_app.media.answers import image_answer
from serve_app.metrics import count
from serve_app.schemas import MediaFormat

log = logging.getLogger("ray.serve")


def delivered(route: str, response: Response, delivery: Delivery) -> None:
    """Count the cache result (a replay is not a lookup) and log what went out; Serve adds the
    request id (the X-Request-ID response header) and the route to the record."""
    replayed = response.headers.get("Idempotent-Replayed") == "true"
    variant = delivery.variant
    if not replayed:
        count("soul_cache_requests", route=route, soul_id=variant.soul_id, result=delivery.cache)
    fields = {
        "soul_id": variant.soul_id,
        "pk_id": variant.pk_id,
        "variant_id": variant.variant_id,
        "cache": delivery.cache,
        "replayed": replayed,
    }
    # Serve's log formatters write these as fields of their own (JSON keys, or key=value).
    log_extra = {"ray_serve_extra_fields": fields}
    log.info("delivered %s (%s)", variant.variant_id, delivery.cache, extra=log_extra)


async def delivered_once(
    services: IngressServices,
    once: IdempotentCall,
    route: str,
    params: dict[str, Any],
    deliver: Callable[[], Awaitable[Delivery]],
    media_format: MediaFormat = "gif",
) -> ImageResponse:
    """``deliver`` once per Idempotency-Key (a retry replays what it delivered), then the
    answer with its URLs signed now, counted and logged under ``route``."""

    async def recorded() -> dict[str, Any]:
        return (await deliver()).model_dump(mode="json")

    delivery = Delivery.model_validate(await once(params, recorded))
    answer = await asyncio.to_thread(
        image_answer, services.objects, services.ttl_s, delivery, media_format
    )
    delivered(route, once.response, delivery)
    return answer
