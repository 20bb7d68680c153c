"""Dedupe: perceptual hash (pHash) of a render against the other variants of its key."""

from __future__ import annotations

from imagehash import phash as image_phash
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field
from ray import serve

from serve_app.metrics import count, timed
from serve_app.schemas import DedupeVerdict, Frames

_BITS = 64


class DedupeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    threshold: int = Field(
        default=6,
        ge=0,
        le=_BITS,
        description="Hamming distance below which a render is a duplicate.",
    )


def phash64(frames: Frames) -> int:
    """pHash of the first frame as a signed 64-bit integer (it fits a BIGINT column)."""
    unsigned = int(str(image_phash(Image.fromarray(frames.pixels[0]))), 16)
    return unsigned - 2**_BITS if unsigned >= 2**63 else unsigned


def hamming(a: int, b: int) -> int:
    return ((a ^ b) & (2**_BITS - 1)).bit_count()


class DedupeEngine:
    def __init__(self, config: DedupeConfig | None = None) -> None:
        self.config = config or DedupeConfig()

    def check(self, frames: Frames, existing: list[int]) -> DedupeVerdict:
        with timed("soul_dedupe_ms"):
            value = phash64(frames)
            nearest = min((hamming(value, other) for other in existing), default=None)
        duplicate = nearest is not None and nearest < self.config.threshold
        if duplicate:
            count("soul_dedupe_rejects")
        return DedupeVerdict(phash=value, min_distance=nearest, duplicate=duplicate)


@serve.deployment(name="Dedupe", ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=32)
class Dedupe:
    def __init__(self) -> None:
        self.engine = DedupeEngine()

    def reconfigure(self, config: dict) -> None:
        self.engine.config = DedupeConfig.model_validate(config)

    def check(self, frames: Frames, existing: list[int]) -> DedupeVerdict:
        return self.engine.check(frames, existing)
