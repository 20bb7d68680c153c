"""Image-similarity search of a project's assets: each rendered asset image is embedded by
Dedupe's image model (the CLIP embedding every render already gets for novelty and drift), the
``asset_generate`` job keeps it (``catalog/asset_images.py``), and an uploaded image — checked as
every upload is: type, bytes, pixels — is embedded by the same model and compared with them.
Without an image model (``dedupe.clip_model``) nothing is embedded, and a search by image is a
409 that says so."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image

from serve_app.errors import Conflict
from serve_app.schemas import DedupeVerdict, Frames


class NoImageModel(Conflict):
    def __init__(self) -> None:
        super().__init__(
            "image: search by image needs an image model (dedupe.clip_model); none is configured"
        )


async def image_embedding(dedupe: Any, frames: Frames) -> tuple[str, bytes] | None:
    """The first frame's image embedding by Dedupe's model: (model, packed embedding), or None
    without a model."""
    verdict: DedupeVerdict = await dedupe.check.remote(frames, [])
    if verdict.image_embed is None or verdict.embed_model is None:
        return None
    return verdict.embed_model, verdict.image_embed


MAX_SIDE = 1024  # the image model sees 224 pixels a side: a larger upload travels shrunk


def frames_of(png: bytes) -> Frames:
    """A checked upload (an RGB PNG) as one frame, at most ``MAX_SIDE`` pixels a side (a
    render up to that size is compared as it is)."""
    with Image.open(io.BytesIO(png)) as image:
        rgb = image.convert("RGB")
        rgb.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
        pixels = np.asarray(rgb, dtype=np.uint8)
    return Frames(pixels=pixels[None])


async def upload_embedding(dedupe: Any, png: bytes) -> tuple[str, bytes]:
    """The embedding of a checked upload; ``NoImageModel`` (409) without a model."""
    embedded = await image_embedding(dedupe, frames_of(png))
    if embedded is None:
        raise NoImageModel()
    return embedded
