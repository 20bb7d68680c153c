"""Shared schemas: what deployments send each other, and the field types the API checks."""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import typing
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    StringConstraints,
    TypeAdapter,
    model_validator,
)
from pydantic_core import core_schema
from typing_extensions import TypeAliasType

SoulId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
UserId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$")]


def _spelled_iso(value: Any) -> Any:
    """A day as YYYY-MM-DD only (pydantic would also read a number as a Unix time)."""
    if isinstance(value, str) and not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value):
        raise ValueError("a day is spelled YYYY-MM-DD")
    return value


Day = Annotated[dt.date, BeforeValidator(_spelled_iso)]
MediaFormat = Literal["gif", "webp", "mp4"]
Animation = Literal["subtle", "animated", "video"]
MAX_CUE_CHARS = 200
MAX_JSON_BYTES = 16_384

# NUL and other control characters break storage (PostgreSQL refuses NUL in text); U+FFFD is what
# invalid UTF-8 in a URL decodes to, and a lone surrogate (a JSON "\ud800") has no UTF-8 at all:
# SQLite would store it and fail every later read. All are refused at the edge with a 422.
_UNSAFE_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffd\ud800-\udfff]")


def safe_text(value: str) -> str:
    if found := _UNSAFE_CHARS.search(value):
        char = found.group()
        unicode = char == "\ufffd" or "\ud800" <= char <= "\udfff"
        what = "invalid UTF-8" if unicode else f"control character {char!r}"
        raise ValueError(f"contains {what}; send plain UTF-8 text")
    return value


def safe_json(value: dict[str, Any]) -> dict[str, Any]:
    """Free-form JSON that every backend can store: safe text, finite numbers, bounded size."""

    def check(node: Any) -> None:
        if isinstance(node, str):
            safe_text(node)
        elif isinstance(node, float) and not math.isfinite(node):
            raise ValueError("numbers must be finite (no NaN or Infinity)")
        elif isinstance(node, dict):
            for k, v in node.items():
                check(k)
                check(v)
        elif isinstance(node, list):
            for item in node:
                check(item)

    check(value)
    if len(json.dumps(value)) > MAX_JSON_BYTES:
        raise ValueError(f"larger than {MAX_JSON_BYTES} bytes as JSON")
    return value


@dataclass(frozen=True, eq=False)  # hashed by identity: a schema dict is not hashable
class Documented:
    """Adds ``schema`` to a type's JSON schema (OpenAPI) without changing how it validates:
    the schema says what a validator enforces, so clients generated from it send valid data."""

    schema: dict[str, Any]

    def __get_pydantic_json_schema__(self, core: Any, handler: GetJsonSchemaHandler) -> Any:
        return {**handler(core), **self.schema}


@dataclass(frozen=True)
class DocumentedAs:
    """Documents a type with the JSON schema of ``shape`` (validation stays the type's own)."""

    shape: Any

    def __get_pydantic_json_schema__(self, core: Any, handler: GetJsonSchemaHandler) -> Any:
        return handler(TypeAdapter(self.shape).core_schema)


# Lone surrogates are left out of the documented pattern: they are no Unicode characters, so
# no regex engine outside Python (a client's JSON Schema validator) can name them.
SAFE_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffd]*$"
SAFE_TEXT = Documented({"pattern": SAFE_PATTERN})
SAFE_KEYS = Documented({"propertyNames": {"pattern": SAFE_PATTERN}})
# What ``safe_json`` lets through, as a schema: safe text, keys included. Not recursive, so a
# client generator can follow it: nested lists and objects are documented as any JSON
# (``safe_json`` checks every level).
SafeJson = TypeAliasType(
    "SafeJson", Annotated[str, SAFE_TEXT] | int | float | bool | list[Any] | dict[str, Any] | None
)
Text = Annotated[str, AfterValidator(safe_text), SAFE_TEXT]
# URLs the service calls out to (references, webhooks): an ASCII host name, an optional port,
# then anything but spaces and control characters. No user:password@ (secrets would end up in
# logs), no IP literal in brackets. One pattern that the schema shows and validation enforces,
# so its classes are spelled out: `\s` means other characters in Python (U+0085, U+001C-1F)
# than in a client's JSON Schema validator (ECMA-262).
_SPACES = r"\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
_LABEL = r"[A-Za-z0-9-]{1,63}"
_HOST = rf"(?:{_LABEL}\.)*{_LABEL}\.?"
_PORT = r"(?::(?:[0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?"
_REST = rf"(?:[/?#][^\x00-\x20\x7f-\x9f{_SPACES}\ufffd]*)?"  # no C0/C1 control, no space
WEB_URL = rf"^https?://{_HOST}{_PORT}{_REST}$"
REFERENCE_URL = rf"^(?:https?://{_HOST}{_PORT}|gs://[a-z0-9_.-]{{1,222}}){_REST}$"


@dataclass(frozen=True)
class Matching:
    """Text that matches ``pattern`` (shown in the schema); else the error is ``advice``, which
    says what to send (a bare regex in an error helps no one)."""

    pattern: str
    advice: str

    def check(self, value: str) -> str:
        if not re.fullmatch(self.pattern, safe_text(value)):
            raise ValueError(self.advice)
        return value

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> Any:
        return core_schema.no_info_after_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(self, core: Any, handler: GetJsonSchemaHandler) -> Any:
        return {**handler(core), "pattern": self.pattern}


NO_CREDENTIALS = "with no spaces or user:password@"
WebUrl = Annotated[str, Matching(WEB_URL, f"use http(s)://host[:port]/path, {NO_CREDENTIALS}")]
ReferenceUrl = Annotated[
    str,
    Matching(
        REFERENCE_URL, f"use http(s)://host[:port]/path or gs://bucket/path, {NO_CREDENTIALS}"
    ),
]

# Model refs: a CivitAI model version or a tag (under the models folder), what a client may
# name; or an absolute path on the server, for the config files an operator writes.
CLIENT_REF = r"civitai:\d{1,12}|[A-Za-z0-9][A-Za-z0-9._@-]{0,199}"
SERVER_PATH = r"/[^=\x00-\x1f]{1,300}"
LORA_WEIGHT = r"(=-?(\d{1,2}(\.\d{1,4})?|\.\d{1,4}))?"
_REF_SHAPE = "civitai:<model version id>, or a tag (letters, digits and . _ @ -; up to 200)"
ModelRef = Annotated[str, Matching(f"^({CLIENT_REF}|{SERVER_PATH})$", f"use {_REF_SHAPE}")]
LoraId = Annotated[
    str,
    Matching(
        f"^({CLIENT_REF}|{SERVER_PATH}){LORA_WEIGHT}$",
        f'use <ref> or "<ref>=<weight>", a ref being {_REF_SHAPE}',
    ),
]
JsonObject = Annotated[
    dict[str, Any],
    AfterValidator(safe_json),
    DocumentedAs(dict[str, SafeJson]),
    SAFE_KEYS,
]


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

    @model_validator(mode="after")
    def reference_has_a_strength(self) -> RenderJob:
        if (self.reference_key is None) != (self.reference_strength is None):
            raise ValueError("reference_key and reference_strength go together")
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
