"""The ``pack`` job: 2-10 variants this user has never been sent, all in the soul's look, one
per cue or ``count`` of one cue, each varied by the next phrase of ``config/variations.yaml``.
An item that fails for good fails only itself: the pack ends ``partial``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import ConfigDict, Field, JsonValue, model_validator

from serve_app.api.protocol import ImageResponse, PackResult
from serve_app.characters.identities import IdentityPin
from serve_app.delivery import Delivery
from serve_app.jobs.book import JobDoc
from serve_app.jobs.kinds.base import JobTools
from serve_app.jobs.kinds.delivering import DeliveringKind
from serve_app.jobs.kinds.image import image_item, signed_image
from serve_app.jobs.spec import Cue, Item, JobBase
from serve_app.schemas import KeyLookup, MediaFormat, UserId
from serve_app.settings import config_file
from serve_app.storage.objects import ObjectStore

Vary = Literal["pose", "expression", "angle"]
MIN_PACK, MAX_PACK = 2, 10

NULL: dict[str, JsonValue] = {"type": "null"}


def _two_ways(schema: dict[str, JsonValue]) -> None:
    """PackJob's rule, for the schema: exactly one of the two ways is given. Each way is a whole
    typed object (a client generator makes a model of each): cues, or cue with count."""
    fields = schema["properties"]
    assert isinstance(fields, dict)

    def way(title: str, given: list[str], absent: list[str]) -> dict[str, JsonValue]:
        given_fields = {name: _not_null(fields[name]) for name in given}
        return {
            "type": "object",
            "title": title,
            "properties": {**fields, **given_fields, **{name: NULL for name in absent}},
            "required": list(given),
        }

    schema["oneOf"] = [
        way("PackOfCues", ["cues"], ["cue", "count", "vary"]),
        way("PackOfCount", ["cue", "count"], ["cues"]),
    ]


def _not_null(field: JsonValue) -> JsonValue:
    """An optional field's schema without its ``null``, keeping its title and description."""
    assert isinstance(field, dict) and isinstance(field["anyOf"], list)
    [value] = [option for option in field["anyOf"] if option != NULL]
    assert isinstance(value, dict)
    return {**{k: v for k, v in field.items() if k != "anyOf"}, **value}


class PackJob(JobBase):
    """2-10 variants this user has never been sent, all in the soul's look: one per cue of
    ``cues``, or ``count`` of ``cue`` (each with the next phrase of ``vary``, if given)."""

    model_config = ConfigDict(json_schema_extra=_two_ways)

    kind: Literal["pack"]
    user_id: UserId
    cues: list[Cue] | None = Field(default=None, min_length=MIN_PACK, max_length=MAX_PACK)
    cue: Cue | None = None
    count: int | None = Field(default=None, ge=MIN_PACK, le=MAX_PACK)
    vary: Vary | None = None
    format: MediaFormat = "gif"
    identity_version: IdentityPin = None

    @model_validator(mode="after")
    def cues_or_cue_and_count(self) -> PackJob:
        if self.cues is not None and (self.cue, self.count, self.vary) != (None, None, None):
            raise ValueError("give either cues, or cue with count (and optionally vary)")
        if self.cues is None and (self.cue is None or self.count is None):
            raise ValueError("give either cues (2-10), or cue with count (2-10)")
        return self


def load_variations(path: str | Path = "config/variations.yaml") -> dict[str, list[str]]:
    """The phrases a pack varies its cue with, at least ``MAX_PACK`` of each ``Vary``."""
    variations = yaml.safe_load(config_file(path).read_text())
    for name in Vary.__args__:  # type: ignore[attr-defined]
        if len(variations.get(name) or []) < MAX_PACK:
            raise ValueError(f"{path}: {name!r} needs at least {MAX_PACK} phrases")
    return {name: list(variations[name]) for name in Vary.__args__}  # type: ignore[attr-defined]


class PackKind(DeliveringKind[PackJob]):
    name = "pack"
    spec = PackJob
    partial = True

    def items(self, spec: PackJob, variations: dict[str, list[str]]) -> list[Item]:
        if spec.cues is not None:
            return [Item(i, cue) for i, cue in enumerate(spec.cues)]
        assert spec.cue is not None and spec.count is not None
        phrases = variations[spec.vary] if spec.vary else None
        return [
            Item(i, f"{spec.cue}, {phrases[i]}" if phrases else spec.cue) for i in range(spec.count)
        ]

    async def check(self, spec: PackJob, tools: JobTools) -> None:
        cues = [item.cue for item in self.items(spec, tools.variations)]
        await tools.deliverer.check_images(cues, spec.format)
        await tools.deliverer.check_identity(spec.soul_id, spec.identity_version)

    async def deliver(
        self,
        spec: PackJob,
        item: Item,
        user: str,
        ref: str,
        tools: JobTools,
        known: KeyLookup | None = None,
    ) -> Delivery:
        pin = spec.identity_version
        return await image_item(tools, spec.soul_id, item.cue, user, ref, pin, known)

    def result(self, doc: JobDoc, objects: ObjectStore, ttl_s: int) -> PackResult:
        media_format = doc.spec.get("format", "gif")
        signed = [
            None if item is None else signed_image(objects, ttl_s, item, media_format)
            for item in doc.outcome.items
        ]
        return PackResult(
            items=signed, failed=doc.outcome.failed, consistency_rate=consistency_rate(signed)
        )


def consistency_rate(items: list[ImageResponse | None]) -> float | None:
    """Verified among the scorable items (those judged verified or off_model)."""
    verdicts = [i.identity.verdict for i in items if i is not None and i.identity is not None]
    scorable = [v for v in verdicts if v != "unscorable"]
    return scorable.count("verified") / len(scorable) if scorable else None
