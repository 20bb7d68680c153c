"""A variant's thumbnail, made late for variants recorded before there were thumbnails."""

from __future__ import annotations

from typing import Any

from serve_app.schemas import Variant


async def thumbnailed(transcoder: Any, variant: Variant) -> Variant:
    """The variant with its thumbnail: one made before thumbnails gets it now (the Transcoder
    writes it once and finds it from then on)."""
    if "thumbnail_key" in variant.meta:
        return variant
    key: str = await transcoder.thumbnail.remote(variant)
    return variant.model_copy(update={"meta": {**variant.meta, "thumbnail_key": key}})
