"""Storyboards of a project (``/v1/projects/{project_id}/…``): send a script, compile it against
the project's assets into scenes, read a scene's graph, ask what would stop it rendering.

Every route names a project of the caller's API client: another client's project answers 404,
as one that does not exist. The logic is the catalog's (``catalog/stories.py``) over the
storyboard engine (``serve_app/stories``)."""

from typing import Any

from fastapi import APIRouter

from serve_app.api import paths  # noqa: F401  # the script_id and scene_id convertors
from serve_app.api.deps import Authorized, ClientScope
from serve_app.api.errors import responses
from serve_app.api.params import JobId
from serve_app.api.protocol import JobAccepted, JobView
from serve_app.api.services import IngressServices, Once, Services
from serve_app.api.storyboard_protocol import (
    CompiledView,
    RenderRequest,
    RerenderRequest,
    SceneView,
    ScriptView,
    ValidationView,
)
from serve_app.projects.models import ProjectId
from serve_app.projects.storyboard_desk import StoryboardDesk
from serve_app.stories.records import SceneId, Script, ScriptDraft, ScriptId

router = APIRouter(tags=["storyboards"], dependencies=[Authorized])
PROJECT = "/v1/projects/{project_id}"
SCRIPT = PROJECT + "/scripts/{script_id:script_id}"  # api/paths.py
SCENE = PROJECT + "/scenes/{scene_id:scene_id}"
RENDER = PROJECT + "/renders/{render_job_id:job_id}"  # api/paths.py


def desk(services: IngressServices) -> StoryboardDesk:
    return StoryboardDesk(services.catalog, services.jobs)


@router.post(
    PROJECT + "/scripts",
    status_code=201,
    response_model=ScriptView,
    responses=responses(401, 404, 409),
)
async def create_script(
    project_id: ProjectId,
    draft: ScriptDraft,
    client_id: ClientScope,
    services: Services,
    once: Once,
) -> ScriptView:
    """A new script (``raw_text``: Fountain, or the structured form in YAML or JSON; ``title``),
    not compiled yet."""

    async def create() -> dict[str, Any]:
        made = await services.catalog.create_script.remote(client_id, project_id, draft)
        return made.model_dump(mode="json")

    params = {"project_id": project_id, **draft.model_dump(mode="json")}
    return ScriptView.of(Script.model_validate(await once(params, create)))


@router.get(SCRIPT, response_model=ScriptView, responses=responses(401, 404))
async def get_script(
    project_id: ProjectId, script_id: ScriptId, client_id: ClientScope, services: Services
) -> ScriptView:
    """A script, and what its last compile made."""
    return ScriptView.of(await services.catalog.get_script.remote(client_id, project_id, script_id))


@router.post(SCRIPT + ":compile", response_model=CompiledView, responses=responses(401, 404, 409))
async def compile_script(
    project_id: ProjectId, script_id: ScriptId, client_id: ClientScope, services: Services
) -> CompiledView:
    """Compile against the project's assets now (names and aliases; each pinned at its latest
    locked version): the scenes, each with its ``graph_hash`` and ``compiler_version``. A name
    that resolves to nothing is a 422 listing every such name and where it is (``errors``:
    name, line, scene, field); nothing is written then."""
    script, scenes = await services.catalog.compile_script.remote(client_id, project_id, script_id)
    return CompiledView(script=ScriptView.of(script), scenes=[SceneView.of(s) for s in scenes])


@router.get(SCENE, response_model=SceneView, responses=responses(401, 404))
async def get_scene(
    project_id: ProjectId, scene_id: SceneId, client_id: ClientScope, services: Services
) -> SceneView:
    """A compiled scene: its graph with every asset pinned as ``asset@version``, its hash."""
    return SceneView.of(await services.catalog.get_scene.remote(client_id, project_id, scene_id))


@router.post(SCENE + ":validate", response_model=ValidationView, responses=responses(401, 404))
async def validate_scene(
    project_id: ProjectId, scene_id: SceneId, client_id: ClientScope, services: Services
) -> ValidationView:
    """What would stop the scene rendering now: an asset without a locked version, a pinned
    version unlocked since the compile (recompile after locking)."""
    scene, found = await services.catalog.validate_scene.remote(client_id, project_id, scene_id)
    return ValidationView(
        scene_id=scene.scene_id,
        graph_hash=scene.graph.graph_hash,
        renderable=not found,
        blockers=found,
    )


@router.post(
    SCENE + "/renders",
    status_code=202,
    response_model=JobAccepted,
    responses=responses(401, 404, 409, 429),
)
async def render_scene(
    project_id: ProjectId,
    scene_id: SceneId,
    body: RenderRequest,
    client_id: ClientScope,
    services: Services,
    once: Once,
) -> JobAccepted:
    """Render frames of the scene as a ``scene_render`` job (202): each frame's next version,
    its seed inherited, its exact prompt and pipeline hash stored first; each frame then passes
    the consistency gate or is ``needs_review``. A scene pinning an asset without a locked
    version is a 409 naming it, with nothing written."""

    async def make() -> dict[str, Any]:
        made = await desk(services).render(client_id, project_id, scene_id, body.frames)
        return made.model_dump(mode="json")

    params = {"project_id": project_id, "scene_id": scene_id, **body.model_dump()}
    return JobAccepted.model_validate(await once(params, make))


@router.get(RENDER, response_model=JobView, responses=responses(401, 404))
async def get_render(
    project_id: ProjectId, render_job_id: JobId, client_id: ClientScope, services: Services
) -> JobView:
    """A render job: its progress, and each frame made so far (status, seed, signed URL,
    consistency report)."""
    return await desk(services).view(client_id, project_id, render_job_id)


@router.post(
    RENDER + ":rerender",
    status_code=202,
    response_model=JobAccepted,
    responses=responses(401, 404, 409, 429),
)
async def rerender(
    project_id: ProjectId,
    render_job_id: JobId,
    body: RerenderRequest,
    client_id: ClientScope,
    services: Services,
    once: Once,
) -> JobAccepted:
    """Render a job's frames again (all, or ``frame_ids``) as a new job: the same seed unless
    ``new_seed``; what changed is recorded as each version's ``diff``; at most 5 times a frame."""

    async def make() -> dict[str, Any]:
        made = await desk(services).rerender(
            client_id, project_id, render_job_id, body.frame_ids, body.new_seed
        )
        return made.model_dump(mode="json")

    params = {"project_id": project_id, "job": render_job_id, **body.model_dump()}
    return JobAccepted.model_validate(await once(params, make))
