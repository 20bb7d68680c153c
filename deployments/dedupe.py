"""Dedupe: a render against the other variants of its key, by perceptual hash (pHash) and,
with ``clip_model``, by CLIP image embedding: either filter close enough makes it a duplicate."""

from __future__ import annotations

import threading

from imagehash import phash as image_phash
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field
from ray import serve

from serve_app.diffusion.image_embedding import ImageEncoder, cosine_distance, packed, unpacked
from serve_app.diffusion.pipelines import configure_torch
from serve_app.diffusion.sources import ModelManager, model_manager
from serve_app.metrics import count, timed
from serve_app.schemas import DedupeVerdict, Fingerprint, Frames
from serve_app.settings import Settings

_BITS = 64


class DedupeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    threshold: int = Field(
        default=6,
        ge=0,
        le=_BITS,
        description="Hamming distance below which a render is a duplicate.",
    )
    clip_model: str | None = Field(
        default=None,
        description="CLIP vision model (a transformers CLIPVisionModelWithProjection folder, by "
        "tag or absolute path) whose image embeddings also judge renders; None: pHash only.",
    )
    clip_distance: float = Field(
        default=0.05,
        ge=0.0,
        le=2.0,
        description="Cosine distance of image embeddings below which a render is a duplicate "
        "(siblings embedded by another model are not compared).",
    )
    device: str = Field(default="cpu", description="Where the CLIP model runs.")


def phash64(frames: Frames) -> int:
    """pHash of the first frame as a signed 64-bit integer (it fits a BIGINT column)."""
    unsigned = int(str(image_phash(Image.fromarray(frames.pixels[0]))), 16)
    return unsigned - 2**_BITS if unsigned >= 2**63 else unsigned


def hamming(a: int, b: int) -> int:
    return ((a ^ b) & (2**_BITS - 1)).bit_count()


class DedupeEngine:
    def __init__(
        self, config: DedupeConfig | None = None, manager: ModelManager | None = None
    ) -> None:
        """``manager`` finds ``clip_model``; without one, the default models folder does."""
        self.config = config or DedupeConfig()
        self.manager = manager
        self._encoders: dict[str, ImageEncoder] = {}
        self._loading = threading.Lock()

    def check(self, frames: Frames, known: list[Fingerprint]) -> DedupeVerdict:
        cfg = self.config
        with timed("soul_dedupe_ms", filter="phash"):
            value = phash64(frames)
            hashed = [k.phash for k in known if k.phash is not None]
            nearest = min((hamming(value, other) for other in hashed), default=None)
        embedding, closest = self._embedding(frames, known)
        hash_close = nearest is not None and nearest < cfg.threshold
        picture_close = closest is not None and closest < cfg.clip_distance
        if hash_close or picture_close:
            count("soul_dedupe_rejects", filter="phash" if hash_close else "clip")
        return DedupeVerdict(
            phash=value,
            min_distance=nearest,
            duplicate=hash_close or picture_close,
            image_embed=embedding,
            embed_model=cfg.clip_model if embedding else None,
            clip_distance=closest,
            render_s=frames.meta.get("render_s", 0.0),
        )

    def _embedding(
        self, frames: Frames, known: list[Fingerprint]
    ) -> tuple[bytes | None, float | None]:
        """The render's image embedding and its distance to the nearest sibling embedded by
        the same model (None, None without ``clip_model``)."""
        model = self.config.clip_model
        if model is None:
            return None, None
        with timed("soul_dedupe_ms", filter="clip"):
            embedding = self.encoder(model).embed(frames.pixels[0])
            alike = [
                unpacked(k.image_embed) for k in known if k.image_embed and k.embed_model == model
            ]
            closest = min((cosine_distance(embedding, other) for other in alike), default=None)
        return packed(embedding), closest

    def encoder(self, model: str) -> ImageEncoder:
        """The CLIP model, loaded on first use (once, whichever call asks first)."""
        with self._loading:
            if model not in self._encoders:
                manager = self.manager or model_manager(Settings())
                self._encoders[model] = ImageEncoder(manager.ensure(model), self.config.device)
            return self._encoders[model]


@serve.deployment(name="Dedupe", ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=32)
class Dedupe:
    def __init__(self) -> None:
        self.settings = Settings()
        self.engine = DedupeEngine(manager=model_manager(self.settings))

    def reconfigure(self, config: dict) -> None:
        self.engine.config = DedupeConfig.model_validate(config)
        if self.engine.config.clip_model:  # loaded before the first render waits on it
            configure_torch(self.settings.models)  # torch only where a CLIP model runs
            self.engine.encoder(self.engine.config.clip_model)

    def check(self, frames: Frames, known: list[Fingerprint]) -> DedupeVerdict:
        return self.engine.check(frames, known)
