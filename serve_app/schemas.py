"""Shared schemas: what deployments send each other and what the HTTP API speaks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

SoulId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
UserId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$")]
MAX_CUE_CHARS = 200


class Soul(BaseModel):
    soul_id: SoulId
    display_name: str = Field(min_length=1, max_length=120)


class StyleProfile(BaseModel):
    """A soul's look. ``style_tags`` join every prompt key of the soul (seed §5)."""

    model_config = ConfigDict(extra="forbid")

    soul_id: SoulId
    base_model_ref: str = Field(
        min_length=1, max_length=300, description="Local model tag (a folder in the models dir)."
    )
    lora_ids: list[Annotated[str, StringConstraints(min_length=1, max_length=200)]] = Field(
        default_factory=list, max_length=16, description='LoRA refs, e.g. ["loraA@v1"].'
    )
    style_tags: list[Annotated[str, StringConstraints(min_length=1, max_length=40)]] = Field(
        default_factory=list, max_length=16, description="Fixed tags added to every prompt key."
    )
    palette: dict[str, Any] = Field(
        default_factory=dict, description='Colours and stroke hints, e.g. {"hint": "pastel"}.'
    )
    negatives: list[Annotated[str, StringConstraints(max_length=200)]] = Field(
        default_factory=list, max_length=32
    )
    motion_module: str | None = Field(default=None, max_length=300)
    extra: dict[str, Any] = Field(default_factory=dict, description="Free-form knobs.")
    updated_at_ts: int = Field(default=0, description="LWW timestamp (epoch ms), set by the store.")


class SoulSpec(BaseModel):
    """One soul as shipped in config/souls.yaml."""

    soul_id: SoulId
    display_name: str
    style: StyleProfile


class PromptKey(BaseModel):
    pk_id: str
    soul_id: str
    key_norm: str
    key_hash: str
    key_embed: bytes | None = None
    meta: dict[str, Any] = Field(default_factory=dict)
    updated_at_ts: int = 0


class Variant(BaseModel):
    variant_id: str
    pk_id: str
    soul_id: str
    asset_url: str
    storage_key: str
    seed: int | None = None
    phash: int | None = None
    meta: dict[str, Any] = Field(default_factory=dict)
    updated_at_ts: int = 0


class KeyLookup(BaseModel):
    """The catalog's answer to a cue: the normalized key and, when it exists, its row."""

    style: StyleProfile | None = Field(description="None when the soul has no style profile.")
    key_norm: str
    cue_text: str = Field(description="Normalized cue tokens only: the text that is embedded.")
    key: PromptKey | None
    claimed: Variant | None = Field(
        default=None, description="With a user and an existing key: the variant claimed for them."
    )


class RenderJob(BaseModel):
    style_id: str
    base_model_ref: str
    prompt: str
    negative_prompt: str
    seed: int


class AnimateJob(BaseModel):
    base_model_ref: str
    prompt: str
    negative_prompt: str
    seed: int
    mode: Literal["subtle"] = "subtle"


class EncodeJob(BaseModel):
    storage_stem: str = Field(description="Object key without extension: soul/.../variant/<id>.")
    sidecar: dict[str, Any] = Field(default_factory=dict)


class EncodedAsset(BaseModel):
    gif_key: str
    cover_key: str
    sidecar_key: str
    asset_url: str
    meta: dict[str, Any] = Field(description="Generation and encoding facts, as in the sidecar.")


class DedupeVerdict(BaseModel):
    phash: int
    min_distance: int | None
    duplicate: bool


@dataclass
class Frames:
    """Pixels moving between deployments (through Ray's object store, never the ingress)."""

    pixels: np.ndarray  # (N, H, W, 3) uint8 RGB
    meta: dict[str, Any] = field(default_factory=dict)


class ImageResponse(BaseModel):
    url: str = Field(description="Signed, short-lived URL of the GIF.")
    variant_id: str
    pk_id: str
    cache: Literal["hit", "miss"]
    cover_url: str
    expires_at: int = Field(description="Epoch seconds after which the URL stops working.")
