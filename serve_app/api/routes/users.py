"""What a client's user was sent (``/users/{user_id}/seen``)."""

import asyncio
from typing import Annotated

from fastapi import APIRouter, Path, Query

from serve_app.api.deps import Authorized, ClientScope
from serve_app.api.errors import responses
from serve_app.api.params import ULID_PATTERN
from serve_app.api.protocol import SeenPage
from serve_app.api.services import Services
from serve_app.delivery import tenant_user
from serve_app.media.answers import seen_answer
from serve_app.schemas import UserId

router = APIRouter(tags=["catalog"], dependencies=[Authorized])


@router.get("/users/{user_id}/seen", response_model=SeenPage, responses=responses(401, 422, 503))
async def seen(
    user_id: Annotated[UserId, Path(description="A user of this API client.")],
    client_id: ClientScope,
    services: Services,
    after: Annotated[
        str | None, Query(pattern=ULID_PATTERN, description="next_after of a page.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> SeenPage:
    """What this client's user was sent, newest variant first (the order of the history's
    primary key: a variant sent late but made early comes later), with signed URLs."""
    user = tenant_user(client_id, user_id)
    page, next_after = await services.catalog.seen_page.remote(user, after or "", limit)
    variants = await services.thumbnailed([variant for variant, _ in page])
    seen = await asyncio.to_thread(
        lambda: [
            seen_answer(services.objects, services.ttl_s, v, ts)
            for v, (_, ts) in zip(variants, page, strict=True)
        ]
    )
    return SeenPage(seen=seen, next_after=next_after)
