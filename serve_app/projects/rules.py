"""A project's rules beside its style: what its locks allow, and how its scene frames are
conditioned on their pinned assets' images."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictFloat


def _a_number(value: object) -> object:
    """A JSON number only: true and "30" are refused, 30.0 is the integer it is."""
    if isinstance(value, bool | str):
        raise ValueError("must be a whole number, not a boolean or text")
    return value


# After a field's bounds in its Annotated: before them, the schema shows them as ge/le.
A_NUMBER = BeforeValidator(_a_number)


class ProjectPolicy(BaseModel):
    """Retention and policy flags."""

    model_config = ConfigDict(extra="forbid")

    retention_days: Annotated[int, Field(ge=1, le=3650), A_NUMBER] | None = Field(
        default=None, description="Keep renders this long; None: forever."
    )
    locked_assets_only: StrictBool = Field(
        default=True, description="Scenes render only from locked asset versions."
    )
    allow_unlock: StrictBool = Field(default=True, description="Locked versions may be unlocked.")


class ProjectComposition(BaseModel):
    """How the project's scene frames are conditioned on their pinned assets' images."""

    model_config = ConfigDict(extra="forbid")

    environment_strength: StrictFloat = Field(
        default=0.6,
        gt=0.0,
        le=1.0,
        description="A scene whose environment (else nature) has a locked image starts from it "
        "by img2img at this strength: how far the frame departs from the image (near 0 keeps "
        "it, 1 ignores it). Recorded in each frame's pipeline (its hash covers it).",
    )
    prop_strength: StrictFloat = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="IP-Adapter scale of each prop's locked image in its own region of a scene's "
        "frame (laid out left to right in the foreground, as the cast is). Recorded in each "
        "frame's pipeline (its hash covers it).",
    )
    scenery_strength: StrictFloat = Field(
        default=0.3,
        ge=0.0,
        le=1.0,
        description="IP-Adapter scale, over the whole frame, of each further environment or "
        "nature image of a scene (the first one is the backdrop). Recorded in each frame's "
        "pipeline (its hash covers it).",
    )
