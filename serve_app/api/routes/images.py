"""``GET /image``: an animation of a cue in the soul's style that its user has never been sent."""

from typing import Annotated, Any

from fastapi import APIRouter, Query

from serve_app.api.delivered import delivered_once
from serve_app.api.deps import Authorized, TenantUser
from serve_app.api.errors import responses
from serve_app.api.protocol import ImageResponse
from serve_app.api.services import Once, Services
from serve_app.characters.identities import MAX_VERSION
from serve_app.delivery import Delivery
from serve_app.schemas import MAX_CUE_CHARS, MediaFormat, SoulId, Text

router = APIRouter(tags=["images"], dependencies=[Authorized])

Cue = Annotated[
    Text,
    Query(
        max_length=MAX_CUE_CHARS,
        description="What to draw: at least one word besides punctuation and stopwords.",
    ),
]
Format = Annotated[
    MediaFormat,
    Query(
        alias="format",
        description="Format of ``url``: gif always; webp and mp4 only where the service "
        "encodes them (transcoder.formats), else 422.",
    ),
]

IdentityVersion = Annotated[
    int | None,
    Query(
        ge=1,
        le=MAX_VERSION,
        description="Render with this locked identity version of the soul instead of its "
        "latest locked one (422 when the soul has no such locked version).",
    ),
]


@router.get(
    "/image",
    response_model=ImageResponse,
    responses=responses(401, 404, 409, 413, 422, 502, 503),
)
async def image(
    soul_id: Annotated[SoulId, Query(description="Soul, e.g. nova.")],
    cue: Cue,
    user: TenantUser,
    services: Services,
    once: Once,
    media_format: Format = "gif",
    identity_version: IdentityVersion = None,
) -> ImageResponse:
    """An animation of ``cue`` in the soul's style that this user has never been sent, made
    with the soul's latest locked identity version (or ``identity_version``)."""
    await services.deliverer.check_image(cue, media_format)
    await services.deliverer.check_identity(soul_id, identity_version)
    params: dict[str, Any] = {"soul_id": soul_id, "cue": cue, "user_id": user.user_id}
    if identity_version is not None:  # a retry pinning another version is another request
        params["identity_version"] = identity_version

    async def deliver() -> Delivery:
        return await services.deliverer.image(
            soul_id, cue, user.scoped, identity_version=identity_version
        )

    return await delivered_once(services, once, "/image", params, deliver, media_format)
