"""A soul's identity versions: make, list (with lineage), read, edit, add references (uploaded
or by URL), lock; score any image against a locked version. The logic is the character desk's
(``characters/desk.py``); who may change a version is said there."""

import asyncio
import datetime as dt
import hashlib
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request

from serve_app.api.deps import Authorized, ClientScope
from serve_app.api.errors import responses
from serve_app.api.identity_protocol import (
    IdentityReference,
    IdentityReportView,
    IdentityScore,
    IdentityView,
)
from serve_app.api.identity_uploads import image_body, images_in
from serve_app.api.protocol import JobAccepted
from serve_app.api.routes.jobs import queued
from serve_app.api.services import IngressServices, Once, Services
from serve_app.characters.identities import IdentityDraft, IdentityVersion
from serve_app.jobs.kinds.character_sheet import CharacterSheetJob
from serve_app.media.answers import variant_answer
from serve_app.schemas import Day, SoulId

router = APIRouter(tags=["identities"], dependencies=[Authorized])
Version = Annotated[int, Path(ge=1, le=1_000_000, description="An identity version number.")]
PREFIX = "/souls/{soul_id}/identity"


def view(services: IngressServices, client_id: str, version: IdentityVersion) -> IdentityView:
    """A version as its client sees it: references signed, anchors summed up."""
    references = []
    for key in version.references:
        signed = services.objects.signed_url(key, services.ttl_s)
        reference_id = key.rpartition("/")[2].removesuffix(".png")
        references.append(
            IdentityReference(
                reference_id=reference_id,
                storage_key=key,
                url=signed.url,
                expires_at=signed.expires_at,
            )
        )
    return IdentityView(
        **version.model_dump(exclude={"references", "anchors", "owner"}),
        references=references,
        faces_in_references=version.anchors.face_count if version.anchors else None,
        mine=version.owner == client_id,
    )


async def views(
    services: IngressServices, client_id: str, versions: list[IdentityVersion]
) -> list[IdentityView]:
    return await asyncio.to_thread(lambda: [view(services, client_id, v) for v in versions])


@router.post(
    PREFIX,
    status_code=201,
    response_model=IdentityView,
    responses=responses(401, 404, 409, 413, 422, 503),
)
async def create_identity(
    soul_id: SoulId, draft: IdentityDraft, client_id: ClientScope, services: Services, once: Once
) -> IdentityView:
    """The soul's next identity version, unlocked; a seed bank is drawn when none is given."""

    async def create() -> dict[str, Any]:
        made = await services.characters.create(soul_id, draft, client_id)
        return made.model_dump(mode="json")

    made = IdentityVersion.model_validate(await once(draft.model_dump(mode="json"), create))
    return (await views(services, client_id, [made]))[0]


@router.get(PREFIX, response_model=list[IdentityView], responses=responses(401, 404, 503))
async def list_identities(
    soul_id: SoulId, client_id: ClientScope, services: Services
) -> list[IdentityView]:
    """Every version of the soul's identity, oldest first; ``parent`` gives the lineage."""
    return await views(services, client_id, await services.characters.versions(soul_id))


@router.post(
    PREFIX + "/score",
    response_model=IdentityScore,
    responses=responses(401, 403, 404, 409, 413, 502, 503),
    openapi_extra=image_body(most=1),
)
async def score_image(
    soul_id: SoulId,
    request: Request,
    services: Services,
    version: Annotated[int | None, Query(ge=1, le=1_000_000)] = None,
) -> IdentityScore:
    """Judge an image (one uploaded file, or ``{url}``) against a locked version: the latest
    one, or ``version``. Nothing is stored."""
    image = (await images_in(request, services, most=1))[0]
    judged, verdict = await services.characters.score(soul_id, image, version)
    return IdentityScore(soul_id=soul_id, version=judged, verdict=verdict)


@router.get(
    PREFIX + "/report", response_model=IdentityReportView, responses=responses(401, 404, 503)
)
async def identity_report(
    soul_id: SoulId,
    services: Services,
    version: Annotated[int | None, Query(ge=1, le=1_000_000)] = None,
    since: Annotated[Day | None, Query(description="From this UTC day (YYYY-MM-DD).")] = None,
    after: Annotated[str, Query(max_length=26, description="next_after of a page.")] = "",
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> IdentityReportView:
    """Per identity version, its variants' verdicts and consistency rate; flagged variants (no
    render of them verified) a page at a time, oldest first."""
    since_ms = int(dt.datetime.combine(since, dt.time(), dt.UTC).timestamp() * 1000) if since else 0
    report = await services.catalog.identity_report.remote(soul_id, version, since_ms, after, limit)
    flagged = await services.thumbnailed(report.flagged)
    views = await asyncio.to_thread(
        lambda: [variant_answer(services.objects, services.ttl_s, v) for v in flagged]
    )
    return IdentityReportView(
        soul_id=soul_id, versions=report.versions, flagged=views, next_after=report.next_after
    )


@router.get(
    PREFIX + "/{version:int}", response_model=IdentityView, responses=responses(401, 404, 503)
)
async def get_identity(
    soul_id: SoulId, version: Version, client_id: ClientScope, services: Services
) -> IdentityView:
    """One version, with its references as signed URLs."""
    return (await views(services, client_id, [await services.characters.get(soul_id, version)]))[0]


@router.patch(
    PREFIX + "/{version:int}",
    response_model=IdentityView,
    responses=responses(401, 403, 404, 409, 413, 503),
)
async def edit_identity(
    soul_id: SoulId,
    version: Version,
    draft: IdentityDraft,
    client_id: ClientScope,
    services: Services,
) -> IdentityView:
    """Replace an unlocked version's description, prompts, seed bank (kept when not given),
    strength and lineage; a locked version answers 409."""
    changed = await services.characters.edit(soul_id, version, draft, client_id)
    return (await views(services, client_id, [changed]))[0]


@router.post(
    PREFIX + "/{version:int}/references",
    response_model=IdentityView,
    responses=responses(401, 403, 404, 409, 413, 502, 503),
    openapi_extra=image_body(),
)
async def add_references(
    soul_id: SoulId,
    version: Version,
    request: Request,
    client_id: ClientScope,
    services: Services,
    once: Once,
) -> IdentityView:
    """Add reference images to an unlocked version: image files (``multipart/form-data``) or
    ``{url}``. Each is checked (format, bytes, pixels, EXIF orientation) before any is stored:
    a refused upload writes nothing. With an ``Idempotency-Key``, a retry of the same images
    adds nothing and answers what the first request did."""
    images = await images_in(request, services)
    params = {"images": [hashlib.sha256(image.png).hexdigest() for image in images]}

    async def add() -> dict[str, Any]:
        changed = await services.characters.add_references(soul_id, version, images, client_id)
        return changed.model_dump(mode="json")

    changed = IdentityVersion.model_validate(await once(params, add))
    return (await views(services, client_id, [changed]))[0]


@router.post(
    PREFIX + "/{version:int}/lock",
    response_model=IdentityView,
    responses=responses(401, 403, 404, 409, 503),
)
async def lock_identity(
    soul_id: SoulId, version: Version, client_id: ClientScope, services: Services
) -> IdentityView:
    """Compute the version's anchors from its references and freeze it; renders of the soul
    use its latest locked version from then on."""
    locked = await services.characters.lock(soul_id, version, client_id)
    return (await views(services, client_id, [locked]))[0]


@router.post(
    PREFIX + "/{version:int}/sheet",
    status_code=202,
    response_model=JobAccepted,
    responses=responses(401, 403, 404, 409, 429, 503),
)
async def character_sheet(
    soul_id: SoulId, version: Version, client_id: ClientScope, services: Services, once: Once
) -> JobAccepted:
    """Queue a character sheet of an unlocked version (a job of kind ``character_sheet``):
    every view by every expression, rendered with the version's seed bank and added to its
    references; 202 with the job id (watch it at ``links.events``)."""
    await services.catalog.editable_identity.remote(soul_id, version, client_id)
    spec = CharacterSheetJob(soul_id=soul_id, version=version)
    return await queued(services, once, client_id, spec)
