"""A project's storyboard as the catalog keeps it: scripts, their compiled scenes, frames and
the versions each frame was rendered as.

    script         raw text and title as the client sent it; once compiled, its form, the
                   script graph's hash, the compiler's version and its scenes' ids in order
    scene          one compiled ``SceneNode`` (its ``graph_hash`` and ``compiler_version`` in
                   it); its id is its script's and its index (``scn_<script>_001``), so a
                   recompile of the same script writes the same scenes again; ``position``
                   orders it on the project's timeline
    frame          frame ``i`` of a scene (``frm_<script>_001_00``): the version it shows now
                   and the last one approved
    frame version  one render of a frame, numbered from 1: what it was rendered from (seed and
                   how it was derived, the exact prompt, the pipeline's version and hash, the
                   scene's graph hash, its backdrop and placements), its image, its status
                   and consistency report, and what changed from the version before
                   (``diff``); a render that failed for good leaves its version ``failed``
                   with the error, and the frame showing the version it showed before

Ids are derived, never random past the script's: the same script, scene and frame index name
the same rows on every replica.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from serve_app.errors import Conflict, NotFound
from serve_app.ids import new_ulid
from serve_app.schemas import Text
from serve_app.stories.composition import Backdrop, RenderPrompt, SeedPlan
from serve_app.stories.graph import SceneNode
from serve_app.stories.scenery import Placement

ScriptId = Annotated[str, StringConstraints(pattern=r"^scr_[0-9a-z]{26}$")]
SceneId = Annotated[str, StringConstraints(pattern=r"^scn_[0-9a-z]{26}_[0-9]{3}$")]
FrameId = Annotated[str, StringConstraints(pattern=r"^frm_[0-9a-z]{26}_[0-9]{3}_[0-9]{2}$")]
ScriptForm = Literal["fountain", "structured"]
FrameStatus = Literal["rendering", "passed", "needs_review", "approved", "rejected", "failed"]
MAX_SCRIPT_CHARS = 200_000
MAX_FRAMES = 16  # frames of one scene
MAX_RERENDERS = 5  # new versions of one frame after its first, those that failed not counted
MAX_VERSIONS = 32  # versions of one frame, failed ones too: what a frame's rows are bounded by


def new_script_id() -> str:
    return f"scr_{new_ulid().lower()}"


def scene_id_of(script_id: str, index: int) -> str:
    return f"scn_{script_id.removeprefix('scr_')}_{index + 1:03d}"


def frame_id_of(scene_id: str, frame_index: int) -> str:
    return f"frm_{scene_id.removeprefix('scn_')}_{frame_index:02d}"


class ScriptDraft(BaseModel):
    """The body of ``POST /v1/projects/{project_id}/scripts``."""

    model_config = ConfigDict(extra="forbid")

    title: Annotated[Text, StringConstraints(max_length=200)] = ""
    raw_text: Annotated[str, StringConstraints(min_length=1, max_length=MAX_SCRIPT_CHARS)] = Field(
        description="A Fountain screenplay, or the structured form in YAML or JSON."
    )
    form: ScriptForm | None = Field(default=None, description="Detected when not given.")


class Script(BaseModel):
    project_id: str
    script_id: str
    title: str = ""
    raw_text: str
    form: ScriptForm | None = None
    status: Literal["draft", "compiled"] = "draft"
    graph_hash: str | None = Field(default=None, description="The compiled script graph's.")
    compiler_version: str | None = None
    scene_ids: list[str] = Field(default_factory=list, description="Its scenes, in order.")
    created_at_ts: int = 0
    updated_at_ts: int = 0


class Scene(BaseModel):
    """A compiled scene: its node (with ``graph_hash`` and ``compiler_version``)."""

    project_id: str
    scene_id: str
    script_id: str
    position: int = Field(description="Where it is on the project's timeline.")
    graph: SceneNode
    created_at_ts: int = 0
    updated_at_ts: int = 0


class Frame(BaseModel):
    project_id: str
    frame_id: str
    scene_id: str
    frame_index: int = Field(ge=0)
    current_version: int = Field(ge=0, description="The version it shows; 0: none rendered.")
    approved_version: int | None = None
    created_at_ts: int = 0
    updated_at_ts: int = 0


class FrameVersion(BaseModel):
    """One render of a frame: what it was made from and what the gate said."""

    project_id: str
    frame_id: str
    render_version: int = Field(ge=1)
    scene_id: str
    frame_index: int = Field(ge=0)
    graph_hash: str
    seed: SeedPlan
    prompt: RenderPrompt
    pipeline_version: str
    pipeline_hash: str
    backdrop: Backdrop | None = Field(
        default=None, description="The image it starts from by img2img (its pipeline's)."
    )
    placements: list[Placement] = Field(
        default_factory=list,
        description="Its props' images in their regions and its further scenery images over "
        "the whole frame, by IP-Adapter beside the cast (its pipeline's).",
    )
    status: FrameStatus = "rendering"
    consistency_report: dict[str, Any] | None = None
    image_key: str | None = None
    error: str | None = Field(
        default=None, description="Why its render failed for good (status ``failed``)."
    )
    planned_by: str | None = Field(
        default=None, description="The job that planned it, when a job did (``generate_all``)."
    )
    diff: dict[str, Any] = Field(default_factory=dict, description="What the re-render changed.")
    created_at_ts: int = 0
    updated_at_ts: int = 0


class ScriptNotFound(NotFound):
    pass


class SceneNotFound(NotFound):
    pass


class FrameNotFound(NotFound):
    pass


class NotCompiled(Conflict):
    pass


def no_script(project_id: str, script_id: str) -> ScriptNotFound:
    return ScriptNotFound(f"script_id: project {project_id!r} has no script {script_id!r}")


def no_scene(project_id: str, scene_id: str) -> SceneNotFound:
    return SceneNotFound(f"scene_id: project {project_id!r} has no scene {scene_id!r}")


def no_frame(project_id: str, frame_id: str, version: int | None = None) -> FrameNotFound:
    which = f" version {version}" if version is not None else ""
    return FrameNotFound(f"frame_id: project {project_id!r} has no frame {frame_id!r}{which}")
