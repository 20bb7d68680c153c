"""What a ``scene_render`` job made, as its answer's ``result``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class RenderedFrame(BaseModel):
    frame_id: str
    render_version: int
    status: str
    seed: int
    storage_key: str
    url: str = Field(description="Signed, short-lived URL of the PNG.")
    expires_at: int
    consistency_report: dict[str, Any]


class FailedFrame(BaseModel):
    """A frame version whose render failed for good (the version is ``failed``)."""

    frame_id: str
    render_version: int
    status: Literal["failed"] = "failed"
    error: str = Field(description="Why it failed.")


class SceneRenderResult(BaseModel):
    project_id: str
    scene_id: str
    frames: list[RenderedFrame | FailedFrame | None] = Field(
        description="Frame by frame; null: not yet made."
    )


class ExportResult(BaseModel):
    """What a ``storyboard_export`` job made."""

    project_id: str
    format: str = Field(description="pdf or zip.")
    frames: int = Field(description="Approved frames exported, in timeline order.")
    print_ready: bool = Field(
        default=False, description="The frames went through the print path first."
    )
    storage_key: str = Field(description="proj/<project_id>/exports/<timestamp>/<file>")
    bytes: int
    sha256: str
    url: str = Field(description="Signed, short-lived URL of the file (.pdf or .zip).")
    expires_at: int


class GenerateAllItem(BaseModel):
    item: str = Field(description="portrait:<asset_id> or scene:<scene_id>.")
    status: str = Field(description="pending, made or failed.")
    frame_status: str | None = Field(default=None, description="A scene frame's gate status.")
    storage_key: str | None = None
    url: str | None = Field(default=None, description="Signed, short-lived URL of the PNG.")
    error: str | None = None


class GenerateAllResult(BaseModel):
    """What a ``generate_all`` job made so far, item by item."""

    project_id: str
    items: list[GenerateAllItem]
