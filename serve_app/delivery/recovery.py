"""A retried job item finds what an earlier attempt delivered, instead of delivering twice.

A job item's claim is marked with its ``via`` (``client/job/index``); the variant claimed
under it is the item's delivery, a selfie's with the shot its key names.
"""

from __future__ import annotations

from typing import Any

from serve_app.delivery.results import Delivery, Shot
from serve_app.delivery.selfies import shot_of
from serve_app.delivery.thumbnails import thumbnailed
from serve_app.schemas import PromptKey, Variant


async def recover(catalog: Any, transcoder: Any, user_id: str, via: str) -> Delivery | None:
    """What an earlier attempt of the job item ``via`` already delivered to the user (a
    selfie as its ``Shot``), or None: the item has yet to be delivered."""
    variant: Variant | None = await catalog.claimed_via.remote(user_id, via)
    if variant is None:
        return None
    key: PromptKey | None = await catalog.get_prompt_key.remote(variant.pk_id)
    shot = shot_of(key.key_norm) if key else None
    variant = await thumbnailed(transcoder, variant)
    if shot is None:
        return Delivery(variant=variant, cache="hit")
    landmark, angle = shot
    return Shot(variant=variant, cache="hit", landmark_key=landmark, angle=angle)
