"""The ``image`` job: what ``GET /image`` delivers (a variant of a cue this user has never been
sent), queued."""

from __future__ import annotations

from typing import Any, Literal

from serve_app.api.protocol import ImageResponse
from serve_app.characters.identities import IdentityPin
from serve_app.delivery import Delivery
from serve_app.jobs.book import JobDoc
from serve_app.jobs.kinds.base import JobTools
from serve_app.jobs.kinds.delivering import DeliveringKind
from serve_app.jobs.spec import Cue, Item, JobBase
from serve_app.media.answers import image_answer
from serve_app.schemas import KeyLookup, MediaFormat, UserId
from serve_app.storage.objects import ObjectStore


class ImageJob(JobBase):
    """What ``GET /image`` delivers."""

    kind: Literal["image"]
    cue: Cue
    user_id: UserId
    format: MediaFormat = "gif"
    identity_version: IdentityPin = None


def signed_image(
    objects: ObjectStore, ttl_s: int, item: dict[str, Any], media_format: MediaFormat
) -> ImageResponse:
    """A delivered item (``Delivery`` as the job keeps it), its URLs signed now."""
    return image_answer(objects, ttl_s, Delivery.model_validate(item), media_format)


async def image_item(
    tools: JobTools,
    soul_id: str,
    cue: str,
    user: str,
    ref: str,
    pin: int | None,
    known: KeyLookup | None,
) -> Delivery:
    """An image item, delivered through the lookup its lease made (``known``) or a new one
    (with the identity version ``pin``, if any)."""
    if known is not None:
        return await tools.deliverer.looked_up(known, soul_id, cue, user, ref)
    return await tools.deliverer.image(soul_id, cue, user, ref, pin)


class ImageKind(DeliveringKind[ImageJob]):
    name = "image"
    spec = ImageJob
    lease_lookup = True

    def items(self, spec: ImageJob, variations: dict[str, list[str]]) -> list[Item]:
        return [Item(0, spec.cue)]

    async def check(self, spec: ImageJob, tools: JobTools) -> None:
        await tools.deliverer.check_images([spec.cue], spec.format)
        await tools.deliverer.check_identity(spec.soul_id, spec.identity_version)

    async def deliver(
        self,
        spec: ImageJob,
        item: Item,
        user: str,
        ref: str,
        tools: JobTools,
        known: KeyLookup | None = None,
    ) -> Delivery:
        pin = spec.identity_version
        return await image_item(tools, spec.soul_id, item.cue, user, ref, pin, known)

    def result(self, doc: JobDoc, objects: ObjectStore, ttl_s: int) -> ImageResponse | None:
        first = doc.outcome.items[0] if doc.outcome.items else None
        media_format = doc.spec.get("format", "gif")
        return None if first is None else signed_image(objects, ttl_s, first, media_format)
