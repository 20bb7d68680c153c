"""Every HTTP body the API reads or writes (deployments' messages are in ``serve_app.schemas``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from serve_app.characters.identities import IdentityPin
from serve_app.characters.verdicts import IdentityStamp
from serve_app.delivery.places import Key as PlaceKey
from serve_app.jobs.book import ItemFailure, JobError, Progress, Status
from serve_app.looks import StoredReference
from serve_app.projects.results import AssetResult, PortraitResult
from serve_app.schemas import (
    CLIENT_REF,
    LORA_WEIGHT,
    Animation,
    MediaFormat,
    ReferenceUrl,
    Regeneration,
    SoulId,
    StyleProfile,
    UserId,
)
from serve_app.stories.results import ExportResult, GenerateAllResult, SceneRenderResult


class DeploymentInfo(BaseModel):
    name: str
    status: str = Field(description="Serve's status of the deployment, e.g. HEALTHY.")
    replicas: int = Field(description="Replicas running.")


class Backends(BaseModel):
    catalog: Literal["sqlite", "postgresql"]
    objects: str = Field(description="The object store: local (a folder) or gcs.")
    embedded: bool = Field(description="Both are the embedded defaults (SQLite, a folder).")


class InfoView(BaseModel):
    version: str
    deployments: list[DeploymentInfo] = Field(description="The graph's boxes, by name.")
    models: list[str] = Field(
        description="The model refs the souls' styles render with: base models, LoRAs, motion "
        "modules."
    )
    formats: list[str] = Field(description="What new variants are encoded in.")
    variations: list[str] = Field(
        description="What a pack of one cue can vary between its items (POST /jobs, kind "
        '"pack", ``vary``), e.g. pose, expression, angle.'
    )
    backends: Backends


class ErrorBody(BaseModel):
    """Every error answer."""

    detail: str = Field(description="What went wrong, and what to fix or when to retry.")
    request_id: str = Field(description="The X-Request-ID of the request, for the logs.")
    errors: list[dict[str, Any]] | None = Field(
        default=None, description="For invalid input: each problem's type, location and message."
    )


class ImageResponse(BaseModel):
    url: str = Field(description="Signed, short-lived URL of the animation, in ``format``.")
    format: MediaFormat = Field(description="Format of ``url``: gif, webp or mp4.")
    variant_id: str
    pk_id: str
    cache: Literal["hit", "miss"]
    cover_url: str
    thumbnail_url: str | None = Field(
        default=None,
        description="Signed, short-lived URL of a still WebP, its longest side "
        "transcoder.thumbnail_px; null only in an answer recorded before thumbnails were made "
        "(a job's result, an Idempotency-Key replay).",
    )
    expires_at: int = Field(description="Epoch seconds after which the URL stops working.")
    identity: IdentityStamp | None = Field(
        default=None,
        description="For a soul with a locked identity: the version it was made with, its "
        "verdict (verified, off_model, unscorable) and score.",
    )


class SelfieRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    soul_id: SoulId
    city_key: PlaceKey = Field(description="A city of GET /cities, e.g. paris.")
    mood: PlaceKey = Field(description="A mood of GET /cities, e.g. happy.")
    user_id: UserId
    identity_version: IdentityPin = None


class RegenerateRequest(Regeneration):
    user_id: UserId = Field(description="Who the new variant is delivered to.")


class AnimateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: UserId = Field(description="Who the new variant is delivered to.")
    mode: Animation = Field(
        description='"subtle" (img2img variations of the cover) or "animated" (AnimateDiff '
        "with the soul's motion module)."
    )
    frames: int | None = Field(
        default=None, ge=6, le=12, description="Frames of the GIF (default: animator.frames)."
    )


class SelfieResponse(ImageResponse):
    landmark_key: str
    angle: str


def _client_refs_only(schema: dict[str, Any]) -> None:
    """StyleIn's schema names the refs a client may send (``no_server_paths`` says why not a
    path, which a pattern alone could not)."""
    fields = schema["properties"]
    fields["base_model_ref"]["pattern"] = f"^({CLIENT_REF})$"
    fields["motion_module"]["anyOf"][0]["pattern"] = f"^({CLIENT_REF})$"
    fields["lora_ids"]["items"]["pattern"] = f"^({CLIENT_REF}){LORA_WEIGHT}$"


class StyleIn(StyleProfile):
    """Body of POST /style: the store stamps the LWW timestamp. Its model refs are CivitAI ids
    or tags under the models folder: a server path is for the config files an operator writes,
    never for a client to name."""

    model_config = ConfigDict(json_schema_extra=_client_refs_only)

    updated_at_ts: int = Field(default=0, exclude=True)

    @model_validator(mode="after")
    def no_server_paths(self) -> StyleIn:
        refs = {"base_model_ref": [self.base_model_ref], "lora_ids": self.lora_ids,
                "motion_module": [self.motion_module or ""]}  # fmt: skip
        for field, values in refs.items():
            if any(value.startswith("/") for value in values):
                raise ValueError(
                    f"{field}: a path on the server cannot be named here; use a tag (a model "
                    "in the models folder) or civitai:<model version id>"
                )
        return self


class ReferenceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    soul_id: SoulId
    url: ReferenceUrl = Field(
        max_length=2048,
        description="http(s)://host/... or gs://bucket/path of a PNG, JPEG, WebP or GIF image.",
    )


class Reference(BaseModel):
    soul_id: str
    reference_id: str
    storage_key: str = Field(description="soul/<soul_id>/reference/<reference_id>.png")
    url: str = Field(description="Signed, short-lived URL of the stored PNG.")
    expires_at: int = Field(description="Epoch seconds after which the URL stops working.")


class IngestedReference(Reference, StoredReference):
    """The answer of POST /ingest/reference: what was stored, with its signed URL."""


# ---- jobs ------------------------------------------------------------------------------------
class JobLinks(BaseModel):
    self_url: str = Field(serialization_alias="self", description="GET: the job document.")
    events: str = Field(description="GET: its Server-Sent Events.")
    cancel: str = Field(description="POST: cancel it.")


class JobAccepted(BaseModel):
    """The answer of POST /jobs (202)."""

    job_id: str
    status: str
    position: int = Field(description="Unfinished jobs ahead of this one in the queue.")
    estimated_s: float | None = Field(
        description="Seconds until it is done, from measured recent run times (null until one "
        "job of its kind has finished)."
    )
    links: JobLinks


class PackResult(BaseModel):
    items: list[ImageResponse | None] = Field(description="Item i, or null (failed or not yet).")
    failed: list[ItemFailure]
    consistency_rate: float | None = Field(
        default=None,
        description="Of the delivered items judged against the soul's identity, the verified "
        "share among the scorable (verified or off_model); null when none was scorable.",
    )


class PrintView(BaseModel):
    """A print version of a variant (``POST /variants/{id}/print``)."""

    size: str = Field(description="WxH in pixels.")
    fit: Literal["cover", "contain"]
    background: Literal["keep", "remove"]
    format: Literal["png", "jpeg"]
    chain: str | None = Field(description="The chain the request named; null: the soul's own.")
    url: str = Field(description="Signed, short-lived URL of the file.")
    expires_at: int = Field(description="Epoch seconds after which the URL stops working.")


class PrintResult(BaseModel):
    """What a ``print`` job made."""

    variant_id: str
    reused: bool = Field(description="Served from the print stored by an earlier request.")
    prints: list[PrintView] = Field(description="The print this job asked for.")


class SheetView(BaseModel):
    """One view of a character sheet, stored as a reference of its identity version."""

    view: str
    expression: str
    seed: int
    storage_key: str


class SheetResult(BaseModel):
    """What a ``character_sheet`` job made."""

    soul_id: str
    version: int
    views: list[SheetView | None] = Field(description="Item by item; null: not (yet) made.")


class KeyRebuildResult(BaseModel):
    """What a ``rebuild_prompt_key`` job did."""

    soul_id: str
    keys: int = Field(description="Keys of the soul visited.")
    reembedded: int = Field(description="Cue keys normalized and embedded anew.")
    renormalized: int = Field(description="Of those, the keys whose normalized text changed.")
    index: Literal["exact", "approximate"] = Field(description="The index swapped in.")
    index_keys: int = Field(description="Keys the new index holds.")


class JobView(BaseModel):
    """A job as its client sees it (GET /jobs/{job_id}, list pages, webhooks, SSE)."""

    job_id: str
    kind: str
    status: Status
    priority: str
    user_id: str
    soul_id: str
    progress: Progress
    attempts: int
    max_attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    result: (
        SelfieResponse
        | ImageResponse
        | PackResult
        | KeyRebuildResult
        | PrintResult
        | SheetResult
        | AssetResult
        | PortraitResult
        | SceneRenderResult
        | ExportResult
        | GenerateAllResult
        | None
    ) = Field(
        description="What the synchronous route answers (URLs signed afresh); for a pack, "
        "its items so far; for a key rebuild, what it did; for a print, its file; for a "
        "character sheet, its views."
    )
    error: JobError | None
    dead_letter: bool = Field(description="Failed after every attempt: needs a look.")
    cancel_requested: bool
    links: JobLinks


class JobPage(BaseModel):
    jobs: list[JobView] = Field(description="Newest first.")
    next_after: str | None = Field(description="Pass as ``after`` for the next page; null: last.")


class CancelAnswer(BaseModel):
    cancelled: bool = Field(description="False: the job had already finished.")
    status: Status


# ---- the catalog, read-only -----------------------------------------------------------------
class KeyView(BaseModel):
    pk_id: str
    key_norm: str = Field(description="The normalized cue the key stands for.")
    variants: int = Field(description="How many variants it has.")


class KeyDeleted(BaseModel):
    pk_id: str
    deleted: int = Field(description="Variants deleted; the key stays, and renders anew.")


class KeyPage(BaseModel):
    keys: list[KeyView] = Field(description="In key order.")
    next_after: str | None = Field(description="Pass as ``after`` for the next page; null: last.")


class VariantView(BaseModel):
    variant_id: str
    pk_id: str
    cover_url: str = Field(description="Signed, short-lived URL of the cover PNG.")
    thumbnail_url: str = Field(
        description="Signed, short-lived URL of a still WebP, its longest side "
        "transcoder.thumbnail_px."
    )
    url: str = Field(description="Signed, short-lived URL of the GIF.")
    seed: int | None
    sampler: str | None
    style_id: str | None
    created_at: datetime
    prints: list[PrintView] = Field(
        default_factory=list,
        description="Its print versions (GET /variants/{id} only; other lists leave it empty).",
    )
    identity: IdentityStamp | None = Field(
        default=None,
        description="For a soul with a locked identity: the version it was made with, its "
        "verdict (verified, off_model, unscorable) and score.",
    )


class SeenView(VariantView):
    seen_at: datetime = Field(description="When it was sent to this user.")


class SeenPage(BaseModel):
    seen: list[SeenView] = Field(description="Newest variant first.")
    next_after: str | None = Field(description="Pass as ``after`` for the next page; null: last.")
