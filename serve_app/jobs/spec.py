"""What a job asks for (the body of ``POST /jobs``, by kind), and the items it delivers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, JsonValue, model_validator

from serve_app.delivery.places import Key as PlaceKey
from serve_app.schemas import MAX_CUE_CHARS, MediaFormat, SoulId, Text, UserId, WebUrl
from serve_app.settings import config_file

Priority = Literal["normal", "high"]
Vary = Literal["pose", "expression", "angle"]
Cue = Annotated[Text, Field(min_length=1, max_length=MAX_CUE_CHARS)]
MIN_PACK, MAX_PACK = 2, 10
LANES: dict[Priority, int] = {"high": 0, "normal": 1}  # leased in this order


class JobBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    priority: Priority = Field(default="normal", description="high jobs are leased first.")
    webhook_url: WebUrl | None = Field(
        default=None,
        max_length=2048,
        description="Receives the job document (POST, signed) when the job ends; public "
        "http(s) hosts only.",
    )


class ImageJob(JobBase):
    """What ``GET /image`` delivers."""

    kind: Literal["image"]
    soul_id: SoulId
    cue: Cue
    user_id: UserId
    format: MediaFormat = "gif"


class SelfieJob(JobBase):
    """What ``POST /selfie`` delivers."""

    kind: Literal["selfie"]
    soul_id: SoulId
    city_key: PlaceKey
    mood: PlaceKey
    user_id: UserId


NULL: dict[str, JsonValue] = {"type": "null"}
PACK_OF_CUES: dict[str, JsonValue] = {
    "required": ["cues"],
    "properties": {"cues": {"type": "array"}, "cue": NULL, "count": NULL, "vary": NULL},
}
PACK_OF_COUNT: dict[str, JsonValue] = {
    "required": ["cue", "count"],
    "properties": {"cue": {"type": "string"}, "count": {"type": "integer"}, "cues": NULL},
}


class PackJob(JobBase):
    """2-10 variants this user has never been sent, all in the soul's look: one per cue of
    ``cues``, or ``count`` of ``cue`` (each with the next phrase of ``vary``, if given)."""

    # The rule below, for the schema: exactly one of the two ways is given.
    model_config = ConfigDict(json_schema_extra={"oneOf": [PACK_OF_CUES, PACK_OF_COUNT]})

    kind: Literal["pack"]
    soul_id: SoulId
    user_id: UserId
    cues: list[Cue] | None = Field(default=None, min_length=MIN_PACK, max_length=MAX_PACK)
    cue: Cue | None = None
    count: int | None = Field(default=None, ge=MIN_PACK, le=MAX_PACK)
    vary: Vary | None = None
    format: MediaFormat = "gif"

    @model_validator(mode="after")
    def cues_or_cue_and_count(self) -> PackJob:
        if self.cues is not None and (self.cue, self.count, self.vary) != (None, None, None):
            raise ValueError("give either cues, or cue with count (and optionally vary)")
        if self.cues is None and (self.cue is None or self.count is None):
            raise ValueError("give either cues (2-10), or cue with count (2-10)")
        return self


class RebuildKeysJob(JobBase):
    """``POST /admin/rebuild_prompt_key``: the soul's prompt keys normalized and embedded anew
    (after a change of embedder or of the embedded text), keeping their ids and variants."""

    kind: Literal["rebuild_prompt_key"] = "rebuild_prompt_key"
    soul_id: SoulId


JobSpec = Annotated[ImageJob | SelfieJob | PackJob, Field(discriminator="kind")]
AnyJob = Annotated[ImageJob | SelfieJob | PackJob | RebuildKeysJob, Field(discriminator="kind")]


class JobRequest(BaseModel):
    """The body of ``POST /jobs``."""

    spec: JobSpec


@dataclass(frozen=True)
class Item:
    """One delivery of a job: an image of ``cue``, or a selfie (``cue`` empty)."""

    index: int
    cue: str = ""


def load_variations(path: str | Path = "config/variations.yaml") -> dict[str, list[str]]:
    variations = yaml.safe_load(config_file(path).read_text())
    for name in Vary.__args__:  # type: ignore[attr-defined]
        if len(variations.get(name) or []) < MAX_PACK:
            raise ValueError(f"{path}: {name!r} needs at least {MAX_PACK} phrases")
    return {name: list(variations[name]) for name in Vary.__args__}  # type: ignore[attr-defined]


def items(
    spec: ImageJob | SelfieJob | PackJob | RebuildKeysJob, variations: dict[str, list[str]]
) -> list[Item]:
    """What the job delivers, item by item (a key rebuild: one item, its summary)."""
    if isinstance(spec, ImageJob):
        return [Item(0, spec.cue)]
    if isinstance(spec, SelfieJob | RebuildKeysJob):
        return [Item(0)]
    if spec.cues is not None:
        return [Item(i, cue) for i, cue in enumerate(spec.cues)]
    assert spec.cue is not None and spec.count is not None
    phrases = variations[spec.vary] if spec.vary else None
    return [
        Item(i, f"{spec.cue}, {phrases[i]}" if phrases else spec.cue) for i in range(spec.count)
    ]
