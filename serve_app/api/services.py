"""What the routes serve with, as named dependency types: ``Services`` (an Ingress replica's
services, which the Ingress puts on the app's state when Serve builds its app) and ``Once``
(this request's Idempotency-Key, bound to the replica's ``Replays``)."""
# No `from __future__ import annotations`: FastAPI reads these dependencies' signatures.

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request, Response

from serve_app.api.deps import IdempotencyKey
from serve_app.api.idempotency import Replays
from serve_app.characters.desk import CharacterDesk
from serve_app.delivery import Deliverer
from serve_app.jobs.desk import JobDesk
from serve_app.looks import Looks
from serve_app.schemas import Variant
from serve_app.settings import Settings
from serve_app.storage.objects import ObjectStore


@dataclass(frozen=True)
class IngressServices:
    """An Ingress replica's services: the Deliverer (images, selfies, variants), Looks (styles,
    references), the job desk, the character desk (identity versions), Replays
    (Idempotency-Key), the object store, the settings, and the Catalog's handle for the
    catalog's read-only routes."""

    catalog: Any
    deliverer: Deliverer
    looks: Looks
    jobs: JobDesk
    characters: CharacterDesk
    replays: Replays
    objects: ObjectStore
    settings: Settings

    @property
    def ttl_s(self) -> int:
        """How long a signed media URL in an answer lives."""
        return self.settings.media.media_url_ttl_s

    async def thumbnailed(self, variants: list[Variant]) -> list[Variant]:
        return list(await asyncio.gather(*map(self.deliverer.thumbnailed, variants)))


async def replica_services(request: Request) -> IngressServices:
    services: IngressServices = request.app.state.services
    return services


Services = Annotated[IngressServices, Depends(replica_services)]


@dataclass(frozen=True)
class IdempotentCall:
    """``Replays.once`` bound to a request: ``await once(params, work)`` runs ``work`` once per
    Idempotency-Key (a retry replays its recorded result), or every time without a key."""

    replays: Replays
    request: Request
    response: Response
    key: str | None

    async def __call__(
        self, params: dict[str, Any], work: Callable[[], Awaitable[dict[str, Any]]]
    ) -> dict[str, Any]:
        return await self.replays.once(self.request, self.response, self.key, params, work)


async def idempotent_call(
    services: Services,
    request: Request,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> IdempotentCall:
    return IdempotentCall(services.replays, request, response, idempotency_key)


Once = Annotated[IdempotentCall, Depends(idempotent_call)]
