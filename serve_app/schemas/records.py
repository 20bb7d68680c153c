"""What the catalog keeps: souls, styles, prompt keys, variants and their cost, lookups."""

from __future__ import annotations

import typing
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from serve_app.characters.verdicts import IdentityUse
from serve_app.schemas.fields import (
    Animation,
    JsonObject,
    LoraId,
    ModelRef,
    SoulId,
    Text,
)


class Soul(BaseModel):
    soul_id: SoulId
    display_name: Text = Field(min_length=1, max_length=120)


class StyleProfile(BaseModel):
    """A soul's look. ``style_tags`` join every prompt key of the soul (seed §5)."""

    model_config = ConfigDict(extra="forbid")

    soul_id: SoulId
    base_model_ref: ModelRef = Field(
        description="civitai:<version id>, or a tag (a diffusers folder in the models dir)."
    )
    lora_ids: list[LoraId] = Field(
        default_factory=list,
        max_length=16,
        description='LoRA set: "<ref>" or "<ref>=<weight>", a ref being civitai:<version id>, '
        'a tag (<models dir>/<tag>.safetensors) or an absolute path, e.g. ["civitai:128713=0.8"].',
    )
    style_tags: list[Annotated[Text, StringConstraints(min_length=1, max_length=40)]] = Field(
        default_factory=list, max_length=16, description="Fixed tags added to every prompt key."
    )
    palette: JsonObject = Field(
        default_factory=dict, description='Colours and stroke hints, e.g. {"hint": "pastel"}.'
    )
    negatives: list[Annotated[Text, StringConstraints(max_length=200)]] = Field(
        default_factory=list, max_length=32
    )
    motion_module: ModelRef | None = Field(
        default=None,
        description='AnimateDiff motion adapter for extra.animation "animated": a diffusers '
        "MotionAdapter folder (config.json + safetensors) by tag or absolute path.",
    )
    extra: JsonObject = Field(
        default_factory=dict,
        description="Free-form knobs. reference_strength (0 < x <= 1): render img2img from one "
        "of the soul's reference images at that strength."
        ' animation: "subtle" (default, img2img variations of the render), "animated" '
        '(AnimateDiff with motion_module) or "video" (Stable Video Diffusion from the render).',
    )
    updated_at_ts: int = Field(default=0, description="LWW timestamp (epoch ms), set by the store.")

    @model_validator(mode="after")
    def reference_strength_in_range(self) -> StyleProfile:
        value = self.extra.get("reference_strength")
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1
        ):
            raise ValueError("extra.reference_strength: must be a number in (0, 1]")
        return self

    @model_validator(mode="after")
    def animation_is_known(self) -> StyleProfile:
        mode = self.extra.get("animation", "subtle")
        if mode not in typing.get_args(Animation):
            raise ValueError(
                f'extra.animation: must be "subtle", "animated" or "video", not {mode!r}'
            )
        if mode == "animated" and not self.motion_module:
            raise ValueError('extra.animation "animated" needs a motion_module')
        return self

    @property
    def animation(self) -> Animation:
        mode = self.extra.get("animation")
        return mode if mode in ("animated", "video") else "subtle"

    @property
    def reference_strength(self) -> float | None:
        """img2img strength of renders from a reference image; None: text-to-image."""
        value = self.extra.get("reference_strength")
        return None if value is None else float(value)


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


class Fingerprint(BaseModel):
    """A variant as Dedupe sees it: its pHash and its cover's image embedding, if any."""

    phash: int | None = None
    image_embed: bytes | None = None
    embed_model: str | None = Field(default=None, description="The encoder of image_embed.")


class VariantCost(BaseModel):
    """A variant's seconds per stage (all its renders: dedupe attempts too), priced."""

    render_s: float = Field(default=0.0, ge=0)
    animate_s: float = Field(default=0.0, ge=0)
    encode_s: float = Field(default=0.0, ge=0)
    usd: float = Field(default=0.0, ge=0, description="Priced by the catalog as it records it.")
    day: str = Field(default="", description="The UTC day it was recorded on (YYYY-MM-DD).")


class Variant(BaseModel):
    variant_id: str
    pk_id: str
    soul_id: str
    asset_url: str
    storage_key: str
    seed: int | None = None
    phash: int | None = None
    image_embed: bytes | None = Field(
        default=None,
        exclude=True,  # the catalog's alone: never in an answer or a record of one
        description="Its cover's image embedding (float16), where Dedupe has one.",
    )
    meta: dict[str, Any] = Field(default_factory=dict)
    cost: VariantCost | None = None
    updated_at_ts: int = 0

    @property
    def stem(self) -> str:
        """Its objects' common key prefix: ``<stem>.gif``, ``<stem>.png``, and so on."""
        return self.storage_key.rpartition(".")[0]

    @property
    def fingerprint(self) -> Fingerprint:
        """What Dedupe compares a new render of its key with."""
        return Fingerprint(
            phash=self.phash,
            image_embed=self.image_embed,
            embed_model=self.meta.get("image_embed_model"),
        )

    @property
    def deleted(self) -> bool:
        """A tombstone: the variant was deleted; its row stays, its objects are gone."""
        return not self.storage_key


class CostDay(BaseModel):
    """One soul's variants of one UTC day: how many, their seconds per stage, their price."""

    day: str = Field(description="UTC day, YYYY-MM-DD.")
    soul_id: str
    variants: int = Field(description="Variants made that day (deleted ones too: they were paid).")
    render_s: float
    animate_s: float
    encode_s: float
    usd: float


class CostReport(BaseModel):
    since: str = Field(description="First UTC day counted.")
    days: list[CostDay] = Field(description="Per day and soul, in that order.")
    usd: float = Field(description="All of it.")
    today_usd: float = Field(description="Spend of today (UTC), all souls.")
    daily_budget_usd: float | None
    budget_used: float | None = Field(description="today_usd over the daily budget.")
    budget_warning: bool = Field(description="Today's spend reached catalog.cost.warn_at.")


class KeyLookup(BaseModel):
    """The catalog's answer to a cue: the normalized key and, when it exists, its row."""

    style: StyleProfile | None = Field(description="None when the soul has no style profile.")
    key_norm: str
    cue_text: str = Field(description="Normalized cue tokens only: the text that is embedded.")
    key: PromptKey | None
    claimed: Variant | None = Field(
        default=None, description="With a user and an existing key: the variant claimed for them."
    )
    identity: IdentityUse | None = Field(
        default=None,
        description="The identity a render uses (pinned, else the latest locked version); "
        "``claimed`` was made with it.",
    )


class IdempotentStart(BaseModel):
    """What the catalog says when a request with an Idempotency-Key begins."""

    outcome: Literal["started", "replay", "in_flight", "mismatch"] = Field(
        description="started: run it (then finish or abandon ``version``); replay: answer "
        "``result`` again; in_flight: the first request still runs; mismatch: the key was used "
        "with other parameters."
    )
    version: int = Field(default=0, description="The record's timestamp, for compare-and-set.")
    result: dict[str, Any] | None = None


class Regeneration(BaseModel):
    """How a new variant derives from an original (``POST /variants/{id}/regenerate``): its
    style, its prompt, and each of these when given."""

    model_config = ConfigDict(extra="forbid")

    seed: int | None = Field(
        default=None,
        ge=0,
        le=2**53 - 1,  # past it, a JSON number loses digits in JavaScript (and JSON Schema)
        description="The render's seed (default: a new random one).",
    )
    prompt_extra: Text | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Words put before the original's prompt, e.g. 'wearing a red scarf'.",
    )
    strength: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="Render img2img from the original's cover at this strength (0 keeps it, 1 "
        "ignores it) instead of from noise.",
    )
