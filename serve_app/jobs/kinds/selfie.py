"""The ``selfie`` job: what ``POST /selfie`` delivers (the soul at a landmark of a city this
user has not had), queued."""

from __future__ import annotations

from typing import Literal

from serve_app.api.protocol import SelfieResponse
from serve_app.characters.identities import IdentityPin
from serve_app.delivery import Delivery, Place, Shot
from serve_app.delivery.places import Key as PlaceKey
from serve_app.jobs.book import JobDoc
from serve_app.jobs.kinds.base import JobTools
from serve_app.jobs.kinds.delivering import DeliveringKind
from serve_app.jobs.spec import Item, JobBase
from serve_app.media.answers import shot_answer
from serve_app.schemas import KeyLookup, UserId
from serve_app.storage.objects import ObjectStore


class SelfieJob(JobBase):
    """What ``POST /selfie`` delivers."""

    kind: Literal["selfie"]
    city_key: PlaceKey
    mood: PlaceKey
    user_id: UserId
    identity_version: IdentityPin = None


class SelfieKind(DeliveringKind[SelfieJob]):
    name = "selfie"
    spec = SelfieJob

    def items(self, spec: SelfieJob, variations: dict[str, list[str]]) -> list[Item]:
        return [Item(0)]

    async def check(self, spec: SelfieJob, tools: JobTools) -> None:
        tools.deliverer.check_place(spec.city_key, spec.mood)
        await tools.deliverer.check_identity(spec.soul_id, spec.identity_version)

    async def deliver(
        self,
        spec: SelfieJob,
        item: Item,
        user: str,
        ref: str,
        tools: JobTools,
        known: KeyLookup | None = None,
    ) -> Delivery:
        place = Place(spec.city_key, spec.mood)
        return await tools.deliverer.selfie(spec.soul_id, place, user, ref, spec.identity_version)

    def result(self, doc: JobDoc, objects: ObjectStore, ttl_s: int) -> SelfieResponse | None:
        first = doc.outcome.items[0] if doc.outcome.items else None
        return None if first is None else shot_answer(objects, ttl_s, Shot.model_validate(first))
