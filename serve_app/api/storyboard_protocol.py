"""The storyboard routes' HTTP bodies (``routes/storyboards.py``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StringConstraints

from serve_app.schemas import Text
from serve_app.stories.composition import Blocker
from serve_app.stories.graph import SceneNode
from serve_app.stories.records import (
    MAX_FRAMES,
    FrameId,
    FrameVersion,
    Scene,
    SceneId,
    Script,
    ScriptForm,
)


class ScriptView(BaseModel):
    """A script as sent, and what its last compile made."""

    project_id: str
    script_id: str
    title: str
    raw_text: str
    form: ScriptForm | None = Field(description="Detected at the compile when not given.")
    status: str = Field(description="draft, or compiled.")
    graph_hash: str | None = Field(description="The compiled script graph's SHA-256.")
    compiler_version: str | None
    scene_ids: list[str] = Field(description="Its scenes in order, once compiled.")
    created_at_ts: int
    updated_at_ts: int

    @classmethod
    def of(cls, script: Script) -> ScriptView:
        return cls.model_validate(script.model_dump())


class SceneView(BaseModel):
    """A compiled scene: its node (cast, environment, nature, props as ``asset@version`` pins,
    mood, lighting, camera, action, dialogue, notes, aspect), its hash and compiler."""

    project_id: str
    scene_id: str
    script_id: str
    position: int = Field(description="Its place on the project's timeline.")
    graph_hash: str = Field(description="SHA-256 of the node's canonical JSON.")
    compiler_version: str
    size: tuple[int, int] = Field(description="The SDXL size it renders at: width, height.")
    graph: SceneNode
    created_at_ts: int
    updated_at_ts: int

    @classmethod
    def of(cls, scene: Scene) -> SceneView:
        return cls(
            **scene.model_dump(exclude={"graph"}),
            graph=scene.graph,
            graph_hash=scene.graph.graph_hash,
            compiler_version=scene.graph.compiler_version,
            size=scene.graph.size,
        )


class CompiledView(BaseModel):
    """The answer of ``:compile``: the script and its scenes, in order."""

    script: ScriptView
    scenes: list[SceneView]


class ValidationView(BaseModel):
    """What ``:validate`` found: everything that would stop the scene rendering now."""

    scene_id: str
    graph_hash: str
    renderable: bool = Field(description="True when nothing blocks a render.")
    blockers: list[Blocker]


class RenderRequest(BaseModel):
    """The body of ``…/scenes/{scene_id}/renders``."""

    model_config = ConfigDict(extra="forbid")

    frames: int = Field(default=1, ge=1, le=MAX_FRAMES, description="Frames 0 … frames-1.")


class RerenderRequest(BaseModel):
    """The body of ``…/renders/{render_job_id}:rerender``."""

    model_config = ConfigDict(extra="forbid")

    frame_ids: list[FrameId] = Field(
        default_factory=list, max_length=MAX_FRAMES, description="Every frame of the job if empty."
    )
    new_seed: bool = Field(
        default=False, description="A new seed (reseed + 1); otherwise the frame's own again."
    )


class FrameVersionView(BaseModel):
    """One render of a frame: what it was made from, its image, what the gate said."""

    frame_id: str
    render_version: int
    scene_id: str
    frame_index: int
    status: str = Field(
        description="rendering, passed, needs_review, approved, rejected, or failed (its render "
        "failed for good: ``error`` says why)."
    )
    seed: int
    reseed: int = Field(description="0: the inherited seed; each new seed asked adds 1.")
    prompt: str = Field(description="Exactly the prompt it was rendered with.")
    negative_prompt: str
    pipeline_version: str
    pipeline_hash: str
    graph_hash: str
    consistency_report: dict[str, Any] | None
    diff: dict[str, Any] = Field(description="What changed from the version before.")
    error: str | None = Field(description="Why its render failed (status failed); else null.")
    url: str | None = Field(description="Signed, short-lived URL of the PNG; null: none yet.")

    @classmethod
    def of(cls, v: FrameVersion, url: str | None) -> FrameVersionView:
        return cls(
            **v.model_dump(include=set(cls.model_fields) - {"seed", "reseed", "url", "prompt"}),
            seed=v.seed.seed,
            reseed=v.seed.reseed,
            prompt=v.prompt.prompt,
            negative_prompt=v.prompt.negative_prompt,
            url=url,
        )


class FrameView(BaseModel):
    frame_id: str
    frame_index: int
    current_version: int = Field(description="The version it shows; 0: none rendered yet.")
    approved_version: int | None
    shown: FrameVersionView | None = Field(description="The version it shows.")
    newest: FrameVersionView | None = Field(
        default=None,
        description="Its newest version when that is not the one shown: still rendering, or "
        "failed (with its error); null otherwise.",
    )


class TimelineScene(BaseModel):
    scene_id: str
    script_id: str
    position: int
    heading: str
    graph_hash: str
    frames: list[FrameView] = Field(description="By frame index.")


class TimelineView(BaseModel):
    project_id: str
    scenes: list[TimelineScene] = Field(description="In timeline order.")


class ReorderRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scene_ids: list[SceneId] = Field(
        max_length=2000, description="Every scene of the project, once, in the new order."
    )


class DecisionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    render_version: int | None = Field(
        default=None, ge=1, le=1000, description="The version the frame shows when not given."
    )
    note: Annotated[Text, StringConstraints(max_length=400)] = Field(
        default="", description="Why: kept in the event log (an exception's audit too)."
    )


class ImageEntry(BaseModel):
    type: Literal["portrait", "scene"]
    character_ids: list[str]
    asset_id: str | None = None
    version: int | None = None
    role: str | None = None
    scene_id: str | None = None
    frame_id: str | None = None
    render_version: int | None = None
    status: str | None = None
    storage_key: str
    url: str = Field(description="Signed, short-lived URL.")
    expires_at: int = Field(description="Epoch seconds after which the URLs stop working.")
    thumbnail_key: str | None = Field(default=None, description="A portrait's thumbnail.")
    thumbnail_url: str | None = Field(default=None, description="Its signed URL.")
    width: int | None = None
    height: int | None = None
    label: str | None = Field(
        default=None, description="A portrait's nominal size: 1024x1024 (display), 2048x2048."
    )
    dpi: int | None = Field(default=None, description="A print portrait's DPI.")


class ImagesPage(BaseModel):
    images: list[ImageEntry]


class PdfExportRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    per_page: Literal[1, 2, 4] = Field(default=2, description="Frames a page of the sheet.")
    print_ready: StrictBool = Field(
        default=False,
        description="Each frame first goes through the print path (upscaled to 2048 px on its "
        "long side, the project's chain, PNG at the configured DPI with an sRGB profile).",
    )


class SequenceExportRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    print_ready: StrictBool = Field(
        default=False,
        description="The zip holds each frame's print (upscaled to 2048 px on its long side, "
        "the project's chain, PNG at the configured DPI with an sRGB profile), not the render; "
        "the manifest says so.",
    )


class StageEstimate(BaseModel):
    count: int = Field(description="Items of the stage.")
    per_item_s: float = Field(description="Seconds an item takes.")
    basis: Literal["measured", "configured"] = Field(
        description="measured: the median per item of recently finished jobs of the stage's kind "
        "(the project's first); configured: the Catalog's estimates default, none measured yet."
    )


class GenerateAllEstimate(BaseModel):
    """How long ``:generate-all`` submitted now would take."""

    project_id: str
    estimated_s: float = Field(description="The queue ahead, then every stage's items in turn.")
    queue_ahead: int = Field(description="Unfinished jobs ahead of it.")
    workers_alive: int
    stages: dict[str, StageEstimate] = Field(
        description="portrait (characters still without one) and frame (a frame per scene)."
    )
