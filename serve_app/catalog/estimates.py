"""Estimates of a job made of stages (``generate_all``: portraits, then frames): each stage's
count times its measured time per item (the median run time per item of recently finished jobs
of the kind that does that work alone), else its configured default."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

STAGE_KINDS = {"portrait": "asset_generate", "frame": "scene_render"}
"""Each stage, and the kind whose finished jobs measure it."""


class StageDefaults(BaseModel):
    """Seconds an item of each stage is counted until a job of its kind has been measured."""

    model_config = ConfigDict(extra="forbid")

    portrait_s: float = Field(
        default=20,
        gt=0,
        le=3600,
        description="A character's portrait (one role image, as asset_generate renders it).",
    )
    frame_s: float = Field(
        default=25,
        gt=0,
        le=3600,
        description="A storyboard frame: its render and consistency gate (as scene_render).",
    )

    def of(self, stage: str) -> float:
        seconds: float = getattr(self, f"{stage}_s")
        return seconds
