"""A project's storyboard timeline (``/v1/projects/{project_id}/…``): scenes in order with their
frames, reordered; a frame version approved, rejected or rolled back; the project's images by
type, character and scene; the approved frames exported as a PDF sheet or a zip (jobs).

Every route names a project of the caller's API client: another client's project answers 404.
The logic is the catalog's (``catalog/timeline.py``); every change is an event in the project's
log, and approving a ``needs_review`` frame is recorded as an audited exception."""

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from serve_app.api import paths  # noqa: F401  # the frame_id convertor
from serve_app.api.deps import Authorized, ClientScope
from serve_app.api.errors import responses
from serve_app.api.protocol import JobAccepted
from serve_app.api.services import IngressServices, Once, Services
from serve_app.api.storyboard_protocol import (
    DecisionRequest,
    FrameVersionView,
    FrameView,
    GenerateAllEstimate,
    ImageEntry,
    ImagesPage,
    PdfExportRequest,
    ReorderRequest,
    SequenceExportRequest,
    TimelineScene,
    TimelineView,
)
from serve_app.projects.models import AssetId, ProjectId
from serve_app.projects.storyboard_desk import StoryboardDesk
from serve_app.stories.records import Frame, FrameId, FrameVersion, SceneId

router = APIRouter(tags=["storyboards"], dependencies=[Authorized])
PROJECT = "/v1/projects/{project_id}"
FRAME = PROJECT + "/frames/{frame_id:frame_id}"  # api/paths.py


def version_view(services: IngressServices, v: FrameVersion) -> FrameVersionView:
    url = services.objects.signed_url(v.image_key, services.ttl_s).url if v.image_key else None
    return FrameVersionView.of(v, url)


def frame_view(
    services: IngressServices,
    frame: Frame,
    shown: FrameVersion | None,
    newest: FrameVersion | None = None,
) -> FrameView:
    pending = newest is not None and newest.render_version != frame.current_version
    return FrameView(
        **frame.model_dump(include={"frame_id", "frame_index", "current_version"}),
        approved_version=frame.approved_version,
        shown=version_view(services, shown) if shown else None,
        newest=version_view(services, newest) if newest and pending else None,
    )


async def timeline_view(services: IngressServices, owner: str, project_id: str) -> TimelineView:
    found = await services.catalog.timeline.remote(owner, project_id)

    def views() -> list[TimelineScene]:
        return [
            TimelineScene(
                **scene.model_dump(include={"scene_id", "script_id", "position"}),
                heading=scene.graph.heading,
                graph_hash=scene.graph.graph_hash,
                frames=[frame_view(services, *line) for line in frames],
            )
            for scene, frames in found
        ]

    return TimelineView(project_id=project_id, scenes=await asyncio.to_thread(views))


@router.get(PROJECT + "/timeline", response_model=TimelineView, responses=responses(401, 404))
async def get_timeline(
    project_id: ProjectId, client_id: ClientScope, services: Services
) -> TimelineView:
    """The project's scenes in order, each with its frames, the version each shows and its
    status (``passed``, ``needs_review``, ``approved``, ``rejected``…), and its newest version
    when that is not the one shown (``rendering``, or ``failed`` with its ``error``)."""
    return await timeline_view(services, client_id, project_id)


@router.post(
    PROJECT + "/timeline:reorder", response_model=TimelineView, responses=responses(401, 404, 409)
)
async def reorder_timeline(
    project_id: ProjectId, body: ReorderRequest, client_id: ClientScope, services: Services
) -> TimelineView:
    """Put the scenes in this order (every scene of the project, each once)."""
    await services.catalog.reorder_timeline.remote(client_id, project_id, body.scene_ids)
    return await timeline_view(services, client_id, project_id)


async def decided(services: IngressServices, found: tuple[Frame, FrameVersion]) -> FrameView:
    return await asyncio.to_thread(frame_view, services, *found)


@router.post(FRAME + ":approve", response_model=FrameView, responses=responses(401, 404, 409))
async def approve_frame(
    project_id: ProjectId,
    frame_id: FrameId,
    body: DecisionRequest,
    client_id: ClientScope,
    services: Services,
) -> FrameView:
    """Approve a version (the one shown when not given). A ``needs_review`` version may be
    approved: the project's log then records an audited exception (who, the note, the report)."""
    found = await services.catalog.decide_frame.remote(
        client_id, project_id, frame_id, "approve", body.render_version, body.note
    )
    return await decided(services, found)


@router.post(FRAME + ":reject", response_model=FrameView, responses=responses(401, 404, 409))
async def reject_frame(
    project_id: ProjectId,
    frame_id: FrameId,
    body: DecisionRequest,
    client_id: ClientScope,
    services: Services,
) -> FrameView:
    """Reject a version (the one shown when not given); render the frame again to replace it."""
    found = await services.catalog.decide_frame.remote(
        client_id, project_id, frame_id, "reject", body.render_version, body.note
    )
    return await decided(services, found)


@router.post(FRAME + ":rollback", response_model=FrameView, responses=responses(401, 404, 409))
async def rollback_frame(
    project_id: ProjectId, frame_id: FrameId, client_id: ClientScope, services: Services
) -> FrameView:
    """Show the approved version before the one shown now (409 when there is none)."""
    found = await services.catalog.rollback_frame.remote(client_id, project_id, frame_id)
    return await decided(services, found)


@router.get(PROJECT + "/images", response_model=ImagesPage, responses=responses(401, 404))
async def project_images(
    project_id: ProjectId,
    client_id: ClientScope,
    services: Services,
    image_type: Annotated[Literal["portrait", "scene"] | None, Query(alias="type")] = None,
    character_id: Annotated[AssetId | None, Query()] = None,
    scene_id: Annotated[SceneId | None, Query()] = None,
) -> ImagesPage:
    """What the project holds: character portraits (``type=portrait``: each version's display
    and print portraits, with thumbnails) and scene frames (``type=scene``, the version each
    shows), narrowed by character and scene; with signed URLs."""
    found = await services.catalog.project_images.remote(
        client_id, project_id, image_type, character_id, scene_id
    )

    return ImagesPage(images=await asyncio.to_thread(signed_entries, services, found))


def signed_entries(services: IngressServices, found: list[dict[str, Any]]) -> list[ImageEntry]:
    """The project's images with signed URLs (a portrait's thumbnail's too)."""
    out = []
    for entry in found:
        url = services.objects.signed_url(entry["storage_key"], services.ttl_s)
        thumb = entry.get("thumbnail_key")
        small = services.objects.signed_url(thumb, services.ttl_s).url if thumb else None
        out.append(ImageEntry(**entry, url=url.url, expires_at=url.expires_at, thumbnail_url=small))
    return out


@router.post(
    PROJECT + "/exports/pdf",
    status_code=202,
    response_model=JobAccepted,
    responses=responses(401, 404, 429),
)
async def export_pdf(
    project_id: ProjectId,
    body: PdfExportRequest,
    client_id: ClientScope,
    services: Services,
    once: Once,
) -> JobAccepted:
    """The storyboard sheet as a job (202): a cover with the project and its cast, then the
    approved frames in timeline order with their notes; the job's result has the PDF's signed
    ``url`` (written under ``proj/{project_id}/exports/{timestamp}/``)."""
    return await exported(
        services, client_id, project_id, "pdf", body.per_page, body.print_ready, once
    )


@router.post(
    PROJECT + "/exports/image-sequence",
    status_code=202,
    response_model=JobAccepted,
    responses=responses(401, 404, 429),
)
async def export_image_sequence(
    project_id: ProjectId,
    client_id: ClientScope,
    services: Services,
    once: Once,
    body: SequenceExportRequest | None = None,
) -> JobAccepted:
    """The approved frames as a zip, numbered in timeline order, with a manifest (frame ids,
    versions, seeds, pipeline versions, graph hashes, SHA-256 of each file), as a job (202);
    ``print_ready``: each frame's print instead of its render."""
    ready = body is not None and body.print_ready
    return await exported(services, client_id, project_id, "zip", 2, ready, once)


async def exported(
    services: IngressServices,
    owner: str,
    project_id: str,
    file: Literal["pdf", "zip"],
    per_page: Literal[1, 2, 4],
    print_ready: bool,
    once: Once,
) -> JobAccepted:
    async def make() -> dict[str, object]:
        desk = StoryboardDesk(services.catalog, services.jobs)
        made = await desk.export(owner, project_id, file, per_page, print_ready)
        return made.model_dump(mode="json")

    params: dict[str, object] = {"project_id": project_id, "format": file, "per_page": per_page}
    if print_ready:  # an export asked before the option keeps its replay
        params["print_ready"] = True
    return JobAccepted.model_validate(await once(params, make))


@router.post(
    PROJECT + ":generate-all",
    status_code=202,
    response_model=JobAccepted,
    responses=responses(401, 404, 409, 429),
)
async def generate_all(
    project_id: ProjectId, client_id: ClientScope, services: Services, once: Once
) -> JobAccepted:
    """One job (``generate_all``, 202): a portrait of every character that lacks one, then frame
    0 of every scene, at most 5 renders of the project at a time; overall and per-item progress,
    partial success (a scene with an unlocked asset fails its item only), cancel as any job."""

    async def make() -> dict[str, object]:
        made = await StoryboardDesk(services.catalog, services.jobs).generate_all(
            client_id, project_id
        )
        return made.model_dump(mode="json")

    return JobAccepted.model_validate(await once({"project_id": project_id}, make))


@router.get(
    PROJECT + "/generate-all/estimate",
    response_model=GenerateAllEstimate,
    responses=responses(401, 404),
)
async def generate_all_estimate(
    project_id: ProjectId, client_id: ClientScope, services: Services
) -> GenerateAllEstimate:
    """How long ``:generate-all`` submitted now would take: the portraits still needed times a
    portrait's measured time, plus a frame per scene times a frame's (each the median per item
    of recently finished ``asset_generate`` and ``scene_render`` jobs, else the configured
    default: ``basis``), after the queue ahead. The job's ``estimated_s`` is counted so too."""
    desk = StoryboardDesk(services.catalog, services.jobs)
    found = await desk.generate_all_estimate(client_id, project_id)
    return GenerateAllEstimate.model_validate(found)
