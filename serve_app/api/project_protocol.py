"""The project routes' HTTP bodies (``routes/projects.py``) and the asset spec read from a
body in JSON or YAML (``Content-Type: application/yaml``)."""

from __future__ import annotations

import json
from typing import Any

import yaml
from fastapi import Request
from pydantic import BaseModel, Field, ValidationError

from serve_app.api.protocol import JobAccepted
from serve_app.characters.identities import IdentityDescription
from serve_app.errors import InvalidRequest
from serve_app.projects.models import (
    AssetSpec,
    AssetType,
    ProjectEvent,
    ProjectFields,
    ProjectStatus,
)

MAX_SPEC_BYTES = 65_536
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml")


class ProjectView(ProjectFields):
    """A project as its client sees it."""

    project_id: str
    status: ProjectStatus
    created_at_ts: int
    updated_at_ts: int


class ProjectPage(BaseModel):
    projects: list[ProjectView]
    next_after: str | None = Field(description="Pass as ``after`` for the next page; null: last.")


class ImageView(BaseModel):
    storage_key: str = Field(description="proj/<project_id>/asset/<asset_id>/v<n>/<role>.png")
    url: str = Field(description="Signed, short-lived URL of the PNG.")
    expires_at: int = Field(description="Epoch seconds after which the URL stops working.")


class DerivedView(ImageView):
    """An image derived from the version's images (a portrait), with its thumbnail."""

    width: int
    height: int
    label: str = Field(description="Its nominal size: 1024x1024 (display), 2048x2048 (print).")
    dpi: int | None = Field(description="A print's DPI.")
    thumbnail: ImageView


class VersionView(BaseModel):
    """One version of an asset: what it renders, its images by role, its lineage and lock."""

    version: int
    canonical_prompt: str
    identity: IdentityDescription | None = Field(description="A character's, when it has one.")
    soul_id: str | None = Field(default=None, description="A character's soul, when it has one.")
    identity_version: int | None = Field(
        default=None,
        description="The soul's identity version its renders use (pinned when it was locked).",
    )
    negative_prompt: str
    seed_bank: list[int] = Field(description="Role i renders with seed i mod its size.")
    sampler: str
    metadata: dict[str, Any]
    taxonomy: dict[str, str] = Field(description="Names to values a search matches exactly.")
    roles: list[str]
    images: dict[str, ImageView] = Field(description="The images rendered so far, by role.")
    derived_images: dict[str, DerivedView] = Field(
        default_factory=dict,
        description="Images made from them, by role (portrait, portrait_print): the version's "
        "own, which leave its spec as it is (shown by GET asset; empty in search hits).",
    )
    parent: int | None = Field(description="The version this one changes (its lineage).")
    change_note: str
    is_locked: bool = Field(description="A locked version never changes.")
    created_at_ts: int
    updated_at_ts: int


class VersionSummary(BaseModel):
    version: int
    parent: int | None
    change_note: str
    is_locked: bool
    created_at_ts: int


class AssetView(BaseModel):
    """An asset with one of its versions (the latest, or the one asked for) and the lineage of
    them all."""

    project_id: str
    asset_id: str
    asset_type: AssetType
    name: str
    tags: list[str]
    version: VersionView
    versions: list[VersionSummary] = Field(description="Every version, oldest first.")


class AssetAccepted(BaseModel):
    """A new asset version, and the job rendering its images (202)."""

    asset: AssetView
    job: JobAccepted


class EventPage(BaseModel):
    events: list[ProjectEvent] = Field(description="In the order they were logged.")
    next_after: str | None = Field(description="Pass as ``after`` for the next page; null: last.")


class SearchHit(BaseModel):
    project_id: str
    asset_id: str
    asset_type: AssetType
    name: str
    tags: list[str]
    version: VersionView = Field(description="The asset's latest version.")
    score: float | None = Field(description="Cosine of the text to its prompt; null: no text.")


class SearchPage(BaseModel):
    hits: list[SearchHit]
    next_offset: int | None = Field(description="Pass as ``offset`` for the next page.")


def _inlined(schema: dict[str, Any]) -> dict[str, Any]:
    """A model's JSON Schema with its ``$defs`` written in place (the OpenAPI document has no
    room for them under a request body)."""
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return walk(defs[ref.removeprefix("#/$defs/")])
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    inlined: dict[str, Any] = walk(schema)
    return inlined


def spec_body() -> dict[str, object]:
    """The OpenAPI request body of ``assets:generate``: an asset spec. Only its JSON form is in
    the document (client generators know no YAML bodies); the route's description says that
    ``application/yaml`` is read the same way."""
    schema = _inlined(AssetSpec.model_json_schema())
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _no_aliases(text: bytes) -> None:
    """YAML anchors and aliases refused: a few bytes of them can stand for a huge document."""
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.AliasEvent):
            raise InvalidRequest("body: YAML aliases (*name) are not accepted; write it out")


async def asset_spec_in(request: Request) -> AssetSpec:
    """The body as an asset spec, JSON or YAML by its Content-Type; ``InvalidRequest`` (422)
    naming the field for anything else, before anything is written."""
    kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    raw = await request.body()
    if len(raw) > MAX_SPEC_BYTES:
        raise InvalidRequest(f"body: an asset spec is at most {MAX_SPEC_BYTES} bytes")
    try:
        if kind in YAML_TYPES:
            _no_aliases(raw)
            data = yaml.safe_load(raw)
        elif kind == "application/json":
            data = json.loads(raw)
        else:
            raise InvalidRequest("body: send the spec as application/json or application/yaml")
    except (yaml.YAMLError, ValueError) as exc:
        raise InvalidRequest(f"body: not {'YAML' if kind in YAML_TYPES else 'JSON'}") from exc
    if not isinstance(data, dict):
        raise InvalidRequest("body: an asset spec is a mapping of its fields")
    try:
        return AssetSpec.model_validate(data)
    except ValidationError as exc:
        problem = exc.errors()[0]
        if not problem["loc"]:  # a rule across fields: its message names the field
            raise InvalidRequest(problem["msg"].removeprefix("Value error, ")) from exc
        where = ".".join(str(p) for p in problem["loc"])
        raise InvalidRequest(f"{where}: {problem['msg']}") from exc
