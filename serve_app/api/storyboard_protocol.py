"""The storyboard routes' HTTP bodies (``routes/storyboards.py``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from serve_app.stories.composition import Blocker
from serve_app.stories.graph import SceneNode
from serve_app.stories.records import MAX_FRAMES, FrameId, Scene, Script, ScriptForm


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
