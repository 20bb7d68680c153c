"""Dedupe: a render against the other variants of its key, by perceptual hash (pHash) and,
with ``clip_model``, by CLIP image embedding: either filter close enough makes it a duplicate.

It also judges identity (``serve_app.characters``): a render against its soul's identity in the
same call, reusing the one image embedding, and any image against a version's anchors."""

from __future__ import annotations

import threading

import numpy as np
from imagehash import phash as image_phash
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field
from ray import serve

from serve_app.characters.faces import FaceEmbedder
from serve_app.characters.scorer import IdentityScorer, decoded
from serve_app.characters.verdicts import (
    IdentityAnchors,
    IdentityJudging,
    IdentityThresholds,
    Verdict,
)
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
        self._faces: FaceEmbedder | None = None
        self._loading = threading.Lock()

    def check(
        self, frames: Frames, known: list[Fingerprint], identity: IdentityJudging | None = None
    ) -> DedupeVerdict:
        """Novelty against ``known``; with ``identity``, the render's identity verdict too."""
        cfg = self.config
        with timed("soul_dedupe_ms", filter="phash"):
            value = phash64(frames)
            hashed = [k.phash for k in known if k.phash is not None]
            nearest = min((hamming(value, other) for other in hashed), default=None)
        embedding, closest = self._embedding(frames, known)
        verdict = None
        if identity is not None:
            verdict = self.scorer().judge(
                frames.pixels[0], identity.anchors, identity.thresholds, embedding
            )
        hash_close = nearest is not None and nearest < cfg.threshold
        picture_close = closest is not None and closest < cfg.clip_distance
        if hash_close or picture_close:
            count("soul_dedupe_rejects", filter="phash" if hash_close else "clip")
        return DedupeVerdict(
            phash=value,
            min_distance=nearest,
            duplicate=hash_close or picture_close,
            image_embed=None if embedding is None else packed(embedding),
            embed_model=cfg.clip_model if embedding is not None else None,
            clip_distance=closest,
            identity=verdict,
            render_s=frames.meta.get("render_s", 0.0),
        )

    def _embedding(
        self, frames: Frames, known: list[Fingerprint]
    ) -> tuple[np.ndarray | None, float | None]:
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
        return embedding, closest

    def identity_anchors(self, images: list[bytes]) -> IdentityAnchors:
        """The anchors of a version's reference images (encoded)."""
        return self.scorer().anchors([decoded(image) for image in images])

    def judge_identity(
        self, image: bytes, anchors: IdentityAnchors, thresholds: IdentityThresholds
    ) -> Verdict:
        """Any encoded image against a version's anchors."""
        return self.scorer().judge(decoded(image), anchors, thresholds)

    def judge_cast(
        self, image: bytes, cast: list[IdentityAnchors], thresholds: IdentityThresholds
    ) -> list[Verdict]:
        """Several characters in one encoded image, each on its own face (in cast order)."""
        return self.scorer().judge_cast(decoded(image), cast, thresholds)

    def scorer(self) -> IdentityScorer:
        """The identity scorer: the face models loaded on first use, ``clip_model`` as the
        fallback for faceless characters."""
        with self._loading:
            if self._faces is None:
                self._faces = FaceEmbedder()
        model = self.config.clip_model
        embed = None if model is None else self.encoder(model).embed
        return IdentityScorer(self._faces, embed, model)

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

    def check(
        self, frames: Frames, known: list[Fingerprint], identity: IdentityJudging | None = None
    ) -> DedupeVerdict:
        return self.engine.check(frames, known, identity)

    def identity_anchors(self, images: list[bytes]) -> IdentityAnchors:
        return self.engine.identity_anchors(images)

    def judge_identity(
        self, image: bytes, anchors: IdentityAnchors, thresholds: IdentityThresholds
    ) -> Verdict:
        return self.engine.judge_identity(image, anchors, thresholds)

    def judge_cast(
        self, image: bytes, cast: list[IdentityAnchors], thresholds: IdentityThresholds
    ) -> list[Verdict]:
        return self.engine.judge_cast(image, cast, thresholds)
