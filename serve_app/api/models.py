"""Every HTTP body the API reads or writes (deployments' messages are in ``serve_app.schemas``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from serve_app.looks import StoredReference
from serve_app.places import Key as PlaceKey
from serve_app.schemas import MediaFormat, SoulId, StyleProfile, Text, UserId


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
    expires_at: int = Field(description="Epoch seconds after which the URL stops working.")


class SelfieRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    soul_id: SoulId
    city_key: PlaceKey = Field(description="A city of GET /cities, e.g. paris.")
    mood: PlaceKey = Field(description="A mood of GET /cities, e.g. happy.")
    user_id: UserId


class SelfieResponse(ImageResponse):
    landmark_key: str
    angle: str


class StyleIn(StyleProfile):
    """Body of POST /style: the store stamps the LWW timestamp."""

    updated_at_ts: int = Field(default=0, exclude=True)


class ReferenceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    soul_id: SoulId
    url: Text = Field(
        min_length=1,
        max_length=2048,
        description="http(s)://... or gs://bucket/path of a PNG, JPEG, WebP or GIF image.",
    )


class Reference(BaseModel):
    soul_id: str
    reference_id: str
    storage_key: str = Field(description="soul/<soul_id>/reference/<reference_id>.png")
    url: str = Field(description="Signed, short-lived URL of the stored PNG.")
    expires_at: int = Field(description="Epoch seconds after which the URL stops working.")


class IngestedReference(Reference, StoredReference):
    """The answer of POST /ingest/reference: what was stored, with its signed URL."""
