"""Projects and their assets (``/v1/projects``): make, read, change and page projects; make an
asset (its spec in JSON or YAML) and render its images, start a new version, lock and unlock a
version, read an asset at a version, search a project's assets, page its event log.

Every route names a project of the caller's API client: another client's project answers 404,
as one that does not exist. The logic is the catalog's (``catalog/projects.py``) and the
project desk's (``projects/desk.py``)."""

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from serve_app.api import paths  # noqa: F401  # the asset_id convertor
from serve_app.api.deps import Authorized, ClientScope
from serve_app.api.errors import responses
from serve_app.api.project_protocol import (
    AssetAccepted,
    AssetView,
    DerivedView,
    EventPage,
    ImageView,
    ProjectPage,
    ProjectView,
    SearchHit,
    SearchPage,
    VersionSummary,
    VersionView,
    asset_spec_in,
    spec_body,
)
from serve_app.api.protocol import JobAccepted
from serve_app.api.services import IngressServices, Once, Services
from serve_app.projects.derived import DerivedImage
from serve_app.projects.desk import ProjectDesk
from serve_app.projects.models import (
    Asset,
    AssetChanges,
    AssetId,
    AssetVersion,
    Project,
    ProjectDraft,
    ProjectId,
    ProjectPatch,
)
from serve_app.projects.queries import AssetQuery

router = APIRouter(tags=["projects"], dependencies=[Authorized])
PREFIX = "/v1/projects"
ASSET = PREFIX + "/{project_id}/assets/{asset_id:asset_id}"  # api/paths.py
Version = Annotated[int | None, Query(ge=1, le=1_000_000, description="Latest when not given.")]
After = Annotated[str, Query(max_length=40, description="next_after of a page.")]
Limit = Annotated[int, Query(ge=1, le=200)]


def desk(services: IngressServices) -> ProjectDesk:
    return ProjectDesk(services.catalog, services.deliverer.handles.embedder, services.jobs)


def project_view(project: Project) -> ProjectView:
    return ProjectView.model_validate(project.model_dump(exclude={"owner"}))


def version_view(
    services: IngressServices, v: AssetVersion, derived: list[DerivedImage] | None = None
) -> VersionView:
    """A version with its images (and those derived from them) as signed URLs."""

    def signed(key: str) -> ImageView:
        url = services.objects.signed_url(key, services.ttl_s)
        return ImageView(storage_key=key, url=url.url, expires_at=url.expires_at)

    made = {
        d.role: DerivedView(
            **signed(d.storage_key).model_dump(),
            **d.model_dump(include={"width", "height", "label", "dpi"}),
            thumbnail=signed(d.thumbnail_key),
        )
        for d in derived or []
    }
    images = {role: signed(key) for role, key in v.images.items()}
    return VersionView(
        **v.model_dump(exclude={"images", "made_by"}), images=images, derived_images=made
    )


async def asset_view(
    services: IngressServices, owner: str, project_id: str, asset_id: str, version: int | None
) -> AssetView:
    asset: Asset
    asset, versions = await services.catalog.get_asset.remote(owner, project_id, asset_id)
    shown: AssetVersion = await services.catalog.get_asset_version.remote(
        owner, project_id, asset_id, version
    )
    derived = await services.catalog.derived_images.remote(
        owner, project_id, asset_id, shown.version
    )
    summaries = [VersionSummary(**v.model_dump()) for v in versions]
    shown_view = await asyncio.to_thread(version_view, services, shown, derived)
    return AssetView(**asset.model_dump(), version=shown_view, versions=summaries)


async def accepted(
    services: IngressServices, owner: str, project_id: str, made: dict[str, Any]
) -> AssetAccepted:
    view = await asset_view(services, owner, project_id, made["asset_id"], made["version"])
    return AssetAccepted(asset=view, job=JobAccepted.model_validate(made["job"]))


@router.post(PREFIX, status_code=201, response_model=ProjectView, responses=responses(401, 503))
async def create_project(
    draft: ProjectDraft, client_id: ClientScope, services: Services, once: Once
) -> ProjectView:
    """A new project of this API client, active."""

    async def create() -> dict[str, Any]:
        made = await services.catalog.create_project.remote(client_id, draft)
        return made.model_dump(mode="json")

    return project_view(Project.model_validate(await once(draft.model_dump(mode="json"), create)))


@router.get(PREFIX, response_model=ProjectPage, responses=responses(401, 503))
async def list_projects(
    client_id: ClientScope, services: Services, after: After = "", limit: Limit = 50
) -> ProjectPage:
    """This API client's projects, oldest first, a page at a time."""
    found = await services.catalog.list_projects.remote(client_id, after, limit)
    last = found[-1].project_id if len(found) == limit else None
    return ProjectPage(projects=[project_view(p) for p in found], next_after=last)


@router.get(
    PREFIX + "/{project_id:project_id}", response_model=ProjectView, responses=responses(401, 404)
)
async def get_project(
    project_id: ProjectId, client_id: ClientScope, services: Services
) -> ProjectView:
    """One project of this API client."""
    return project_view(await services.catalog.get_project.remote(client_id, project_id))


@router.patch(
    PREFIX + "/{project_id:project_id}", response_model=ProjectView, responses=responses(401, 404)
)
async def patch_project(
    project_id: ProjectId, patch: ProjectPatch, client_id: ClientScope, services: Services
) -> ProjectView:
    """Change the fields given (``status``: ``archived`` stops new assets and versions)."""
    changed = await services.catalog.patch_project.remote(client_id, project_id, patch)
    return project_view(changed)


@router.post(
    PREFIX + "/{project_id}/assets:generate",
    status_code=202,
    response_model=AssetAccepted,
    responses=responses(401, 404, 409, 429),
    openapi_extra=spec_body(),
)
async def generate_asset(
    project_id: ProjectId, request: Request, client_id: ClientScope, services: Services, once: Once
) -> AssetAccepted:
    """A new asset from its spec (JSON, or YAML with ``Content-Type: application/yaml``): its
    version 1, and a job (``asset_generate``) rendering its images by role; 202. A spec that is
    refused (422 naming the field) writes nothing."""
    spec = await asset_spec_in(request)

    async def make() -> dict[str, Any]:
        return await desk(services).generate(client_id, project_id, spec)

    made = await once({"project_id": project_id, **spec.model_dump(mode="json")}, make)
    return await accepted(services, client_id, project_id, made)


@router.post(
    PREFIX + "/{project_id}/assets:search",
    response_model=SearchPage,
    responses=responses(401, 404),
)
async def search_assets(
    project_id: ProjectId, query: AssetQuery, client_id: ClientScope, services: Services
) -> SearchPage:
    """The project's assets by type, tags and taxonomy, ranked by meaning when ``text`` is
    given."""
    hits = await desk(services).search(client_id, project_id, query)
    found = await asyncio.to_thread(
        lambda: [
            SearchHit(**a.model_dump(), version=version_view(services, v), score=s)
            for a, v, s in hits
        ]
    )
    more = query.offset + len(found) if len(found) == query.limit else None
    return SearchPage(hits=found, next_offset=more)


@router.get(ASSET, response_model=AssetView, responses=responses(401, 404))
async def get_asset(
    project_id: ProjectId,
    asset_id: AssetId,
    client_id: ClientScope,
    services: Services,
    version: Version = None,
) -> AssetView:
    """An asset at ``version`` (its latest when not given), and the lineage of its versions."""
    return await asset_view(services, client_id, project_id, asset_id, version)


@router.post(
    ASSET + ":version",
    status_code=202,
    response_model=AssetAccepted,
    responses=responses(401, 404, 409, 429),
)
async def new_version(
    project_id: ProjectId,
    asset_id: AssetId,
    changes: AssetChanges,
    client_id: ClientScope,
    services: Services,
    once: Once,
) -> AssetAccepted:
    """A new version copied from the latest with ``changes`` (its parent recorded), unlocked,
    and a job rendering its images; 202."""

    async def make() -> dict[str, Any]:
        return await desk(services).new_version(client_id, project_id, asset_id, changes)

    params = {"project_id": project_id, "asset_id": asset_id, **changes.model_dump(mode="json")}
    return await accepted(services, client_id, project_id, await once(params, make))


@router.post(ASSET + ":lock", response_model=AssetView, responses=responses(401, 404, 409))
async def lock_asset(
    project_id: ProjectId,
    asset_id: AssetId,
    client_id: ClientScope,
    services: Services,
    version: Version = None,
) -> AssetView:
    """Lock ``version`` (the latest when not given): it never changes again while locked."""
    locked = await services.catalog.lock_asset.remote(client_id, project_id, asset_id, version)
    return await asset_view(services, client_id, project_id, asset_id, locked.version)


@router.post(ASSET + ":unlock", response_model=AssetView, responses=responses(401, 404, 409))
async def unlock_asset(
    project_id: ProjectId,
    asset_id: AssetId,
    client_id: ClientScope,
    services: Services,
    version: Version = None,
) -> AssetView:
    """Unlock a locked ``version`` (the latest when not given), where the project's policy
    allows it and no scene of a script's latest compile pins it (409 naming them)."""
    opened = await services.catalog.unlock_asset.remote(client_id, project_id, asset_id, version)
    return await asset_view(services, client_id, project_id, asset_id, opened.version)


@router.get(
    PREFIX + "/{project_id}/events", response_model=EventPage, responses=responses(401, 404)
)
async def project_events(
    project_id: ProjectId,
    client_id: ClientScope,
    services: Services,
    after: After = "",
    limit: Limit = 50,
) -> EventPage:
    """The project's event log, in the order it was written, a page at a time."""
    events = await services.catalog.project_events.remote(client_id, project_id, after, limit)
    last = events[-1].seq if len(events) == limit else None
    return EventPage(events=events, next_after=last)
