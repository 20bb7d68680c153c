"""What deployments send each other: render, animate and encode jobs, dedupe verdicts, frames."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import (
    BaseModel,
    Field,
    model_validator,
)

from serve_app.characters.verdicts import IdentityConditioning, RegionIdentity, Verdict
from serve_app.diffusion.sizes import MAX_RATIO, ratio
from serve_app.schemas.fields import (
    Animation,
)
from serve_app.schemas.records import (
    Fingerprint,
)


class RenderJob(BaseModel):
    style_id: str
    base_model_ref: str
    lora_ids: list[str] = Field(default_factory=list)
    prompt: str
    negative_prompt: str
    seed: int
    reference_key: str | None = Field(
        default=None, description="Object key of a reference image: render img2img from it."
    )
    reference_strength: float | None = Field(default=None, gt=0, le=1)
    progress_refs: list[str] = Field(
        default_factory=list,
        description="Job items waiting on this render: its denoising steps are reported to them.",
    )
    background: bool = Field(
        default=False,
        description="A refill of the reserve: it gives way to any other render at its next "
        "denoising step.",
    )
    identity: IdentityConditioning | None = Field(
        default=None, description="Condition on this identity version (IP-Adapter)."
    )
    cast: list[RegionIdentity] = Field(
        default_factory=list,
        max_length=8,
        description="Several identities, each in its own region of the frame (IP-Adapter "
        "masks, one per identity); instead of ``identity``.",
    )
    aspect: str | None = Field(
        default=None,
        pattern=r"^[1-9][0-9]?:[1-9][0-9]?$",
        description="Render at this aspect (``W:H``, at most 4:1 either way) and the Renderer's "
        "pixel area, each side a multiple of 8 (``diffusion/sizes.py``); None: the Renderer's "
        "configured width and height.",
    )

    @model_validator(mode="after")
    def reference_has_a_strength(self) -> RenderJob:
        if (self.reference_key is None) != (self.reference_strength is None):
            raise ValueError("reference_key and reference_strength go together")
        if self.cast and self.identity is not None:
            raise ValueError("a job takes one identity or a cast of masked ones, not both")
        if self.aspect is not None and not 1 / MAX_RATIO <= ratio(self.aspect) <= MAX_RATIO:
            raise ValueError(f"aspect {self.aspect!r} is wider or taller than 4:1")
        return self


# What a render records in its Frames' meta (and so in the variant's): what animating a
# variant's cover again carries over from its render.
RENDER_FACTS = (
    "seed",
    "steps",
    "guidance_scale",
    "sampler",
    "style_id",
    "base_model_ref",
    "lora_ids",
    "prompt",
    "negative_prompt",
    "width",
    "height",
    "reference_key",
    "reference_strength",
)


class AnimateJob(BaseModel):
    base_model_ref: str
    lora_ids: list[str] = Field(default_factory=list)
    prompt: str
    negative_prompt: str
    seed: int
    mode: Animation = "subtle"
    motion_module: str | None = None
    frames: int | None = Field(
        default=None, ge=6, le=12, description="Frames of the GIF (default: animator.frames)."
    )
    identity: IdentityConditioning | None = Field(
        default=None, description="Condition the frames on this identity version (IP-Adapter)."
    )


class EncodeJob(BaseModel):
    storage_stem: str = Field(description="Object key without extension: soul/.../variant/<id>.")
    sidecar: dict[str, Any] = Field(default_factory=dict)


class EncodedAsset(BaseModel):
    gif_key: str
    cover_key: str
    thumbnail_key: str
    sidecar_key: str
    asset_url: str
    meta: dict[str, Any] = Field(description="Generation and encoding facts, as in the sidecar.")


class DedupeVerdict(BaseModel):
    phash: int
    min_distance: int | None = Field(description="Hamming distance to the nearest sibling.")
    duplicate: bool
    image_embed: bytes | None = Field(default=None, description="With dedupe.clip_model.")
    embed_model: str | None = None
    clip_distance: float | None = Field(
        default=None, description="Cosine distance to the nearest sibling embedded alike."
    )
    identity: Verdict | None = Field(
        default=None, description="The render against the soul's identity, when asked."
    )

    render_s: float = Field(
        default=0.0,
        description="Seconds of the render judged: the variant pays for it, kept or not.",
    )

    @property
    def fingerprint(self) -> Fingerprint:
        """The judged render as a sibling of the next ones."""
        return Fingerprint(
            phash=self.phash, image_embed=self.image_embed, embed_model=self.embed_model
        )


@dataclass
class Frames:
    """Pixels moving between deployments (through Ray's object store, never the ingress)."""

    pixels: np.ndarray  # (N, H, W, 3) uint8 RGB
    meta: dict[str, Any] = field(default_factory=dict)
