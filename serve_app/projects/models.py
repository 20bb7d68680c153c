"""A project and its assets as clients describe them and as the catalog keeps them.

    project   owned by one API client (its key's id); every read and write names it, and a
              project of another client is not found (404), never forbidden
    asset     one of ``character``, ``environment``, ``nature``, ``prop``; its name and tags
              never change; what it looks like is in its versions
    version   numbered per asset from 1; a new version copies the one it changes (its
              ``parent``) with the changes and a ``change_note``; images are added to it by
              the ``asset_generate`` job while it is unlocked; a locked version never changes
    event     the project's append-only log: ``seq`` a ULID (time-ordered), ``kind``, who (the
              API key's id), when, and a payload; nothing updates or deletes one

A character's canonical prompt may come from an identity description (the identity versions'
``IdentityDescription``: one vocabulary for who a character is), and its seed bank is drawn as
an identity's is.
"""

from __future__ import annotations

import secrets
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from serve_app.characters.identities import (
    MAX_SEED,
    MAX_VERSION,
    SEED_BANK_SIZE,
    IdentityDescription,
)
from serve_app.errors import Conflict, NotFound
from serve_app.ids import new_ulid
from serve_app.projects.rules import ProjectComposition, ProjectPolicy
from serve_app.projects.taxonomy import Taxonomy
from serve_app.schemas import JsonObject, LoraId, ModelRef, SoulId, StyleProfile, Text

ProjectId = Annotated[str, StringConstraints(pattern=r"^prj_[0-9a-z]{26}$")]
AssetId = Annotated[str, StringConstraints(pattern=r"^ast_[0-9a-z]{26}$")]
AssetType = Literal["character", "environment", "nature", "prop"]
ProjectStatus = Literal["active", "archived"]
Name = Annotated[Text, StringConstraints(min_length=1, max_length=120)]
Short = Annotated[Text, StringConstraints(max_length=80)]
Tag = Annotated[Text, StringConstraints(min_length=1, max_length=40)]
Role = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,39}$")]
Prompt = Annotated[Text, StringConstraints(max_length=600)]


def _not_a_bool(value: object) -> object:
    """JSON's true and false are no numbers (pydantic would read them as 1 and 0)."""
    if isinstance(value, bool):
        raise ValueError("a number, not true or false")
    return value


Int = Annotated[int, BeforeValidator(_not_a_bool)]  # bounds go before the validator (see Seed)
Seed = Annotated[int, Field(ge=0, le=MAX_SEED), BeforeValidator(_not_a_bool)]
IdentityNumber = Annotated[int, Field(ge=1, le=MAX_VERSION), BeforeValidator(_not_a_bool)]


def new_project_id() -> str:
    return f"prj_{new_ulid().lower()}"


def new_asset_id() -> str:
    return f"ast_{new_ulid().lower()}"


class ProjectStyle(BaseModel):
    """The project's style profile, as a soul has one: every asset is drawn in it."""

    model_config = ConfigDict(extra="forbid")

    base_model_ref: ModelRef = Field(
        default="tiny-sdxl", description="The base model, as a soul's style names it."
    )
    lora_ids: list[LoraId] = Field(default_factory=list, max_length=16, description="LoRA set.")
    style_tags: list[Tag] = Field(
        default_factory=list, max_length=16, description="Added to every asset's prompt."
    )
    negatives: list[Annotated[Text, StringConstraints(max_length=200)]] = Field(
        default_factory=list, max_length=32
    )

    def profile(self, project_id: str) -> StyleProfile:
        """As the Renderer takes a style: the project's id in the soul's place."""
        return StyleProfile(soul_id=project_id, **self.model_dump())


class ProjectFields(BaseModel):
    """What a client sets on a project (every field optional in a patch)."""

    model_config = ConfigDict(extra="forbid")

    name: Name
    visual_style: Annotated[Text, StringConstraints(max_length=200)] = ""
    style: ProjectStyle = Field(default_factory=ProjectStyle)
    default_sampler: Short = Field(default="", description="As in 'DPM++'; recorded per asset.")
    style_anchor_prompt: Prompt = Field(
        default="", description="Joins every asset's prompt: the project's look in words."
    )
    style_anchor_images: list[Annotated[str, StringConstraints(max_length=300)]] = Field(
        default_factory=list, max_length=8, description="Object keys of style-anchor images."
    )
    policy: ProjectPolicy = Field(default_factory=ProjectPolicy)
    composition: ProjectComposition = Field(default_factory=ProjectComposition)


class ProjectDraft(ProjectFields):
    """The body of ``POST /v1/projects``."""


class ProjectPatch(BaseModel):
    """The body of ``PATCH /v1/projects/{project_id}``: only the fields given change."""

    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    visual_style: Annotated[Text, StringConstraints(max_length=200)] | None = None
    style: ProjectStyle | None = None
    default_sampler: Short | None = None
    style_anchor_prompt: Prompt | None = None
    style_anchor_images: list[Annotated[str, StringConstraints(max_length=300)]] | None = Field(
        default=None, max_length=8
    )
    policy: ProjectPolicy | None = None
    composition: ProjectComposition | None = None
    status: ProjectStatus | None = None


class Project(ProjectFields):
    project_id: ProjectId
    owner: str = Field(description="The API client it belongs to (its key's id).")
    status: ProjectStatus = "active"
    created_at_ts: int = 0
    updated_at_ts: int = 0


class AssetChanges(BaseModel):
    """What a new version changes of the one it starts from (``:version``); fields not given
    are copied."""

    model_config = ConfigDict(extra="forbid")

    canonical_prompt: Prompt | None = None
    identity: IdentityDescription | None = Field(
        default=None,
        description="Characters: who they are; the canonical prompt is made from it when no "
        "canonical_prompt is given.",
    )
    soul_id: SoulId | None = Field(
        default=None,
        description="Characters: the soul whose identity this character is; locking the version "
        "pins the soul's locked identity version, and its renders use that version.",
    )
    identity_version: IdentityNumber | None = Field(
        default=None,
        description="With soul_id: the soul's locked identity version to pin (its latest locked "
        "one at lock time when not given).",
    )
    negative_prompt: Prompt | None = None
    seed: Seed | None = Field(default=None, description="One seed for every image.")
    seed_bank: list[Seed] | None = Field(
        default=None, min_length=1, max_length=32, description="Image i uses seed i mod its size."
    )
    sampler: Short | None = None
    metadata: JsonObject | None = Field(
        default=None, description="Outfit, expression set, time of day, weather, season..."
    )
    taxonomy: Taxonomy | None = Field(
        default=None,
        description="What the asset is, as names to values that a search matches exactly "
        "(species, role, era...); replaces the whole taxonomy when given.",
    )
    roles: list[Role] | None = Field(
        default=None,
        min_length=1,
        max_length=12,
        description="The images to render, by role (front, three_quarter, profile, wide, "
        "detail...); the asset type's roles when not given.",
    )
    change_note: Annotated[Text, StringConstraints(max_length=400)] = ""


class AssetSpec(AssetChanges):
    """The body of ``assets:generate``: a new asset and its first version. ``canonical_prompt``
    is required, unless a character gives an ``identity`` that says something; only a
    character has an ``identity``."""

    asset_type: AssetType
    name: Name
    tags: list[Tag] = Field(default_factory=list, max_length=16)

    @model_validator(mode="after")
    def has_a_prompt(self) -> AssetSpec:
        if not (self.canonical_prompt or "").strip() and (
            self.identity is None or not self.identity.prompt()
        ):
            raise ValueError("canonical_prompt: required (or, for a character, an identity)")
        if self.identity is not None and self.asset_type != "character":
            raise ValueError("identity: only a character has one")
        if self.soul_id is not None and self.asset_type != "character":
            raise ValueError("soul_id: only a character pins a soul's identity")
        if self.identity_version is not None and self.soul_id is None:
            raise ValueError("identity_version: pins a version of soul_id; give soul_id too")
        return self


class Asset(BaseModel):
    project_id: ProjectId
    asset_id: AssetId
    asset_type: AssetType
    name: str
    tags: list[str] = Field(default_factory=list)
    created_at_ts: int = 0


class AssetVersion(BaseModel):
    """One version of an asset as the catalog keeps it."""

    project_id: ProjectId
    asset_id: AssetId
    version: int = Field(ge=1)
    canonical_prompt: str
    identity: IdentityDescription | None = None
    soul_id: str | None = Field(default=None, description="A character's soul, when it has one.")
    identity_version: int | None = Field(
        default=None,
        description="The soul's locked identity version this version's renders use: the one "
        "asked for, or, once locked, the one pinned at the lock (its anchor).",
    )
    negative_prompt: str = ""
    seed_bank: list[int]
    sampler: str = ""
    metadata: JsonObject = Field(default_factory=dict)
    taxonomy: dict[str, str] = Field(
        default_factory=dict, description="Names to values a search matches exactly."
    )
    roles: list[str]
    images: dict[str, str] = Field(
        default_factory=dict, description="Object key of each rendered image, by role."
    )
    parent: int | None = None
    change_note: str = ""
    is_locked: bool = False
    made_by: str = ""
    created_at_ts: int = 0
    updated_at_ts: int = 0

    def seed_for(self, role: str) -> int:
        """The deterministic seed strategy: the role's place among the roles picks a seed."""
        return self.seed_bank[self.roles.index(role) % len(self.seed_bank)]


def _seeds(changes: AssetChanges) -> list[int] | None:
    if changes.seed_bank is not None:
        return changes.seed_bank
    return [changes.seed] if changes.seed is not None else None


def prompt_of(changes: AssetChanges) -> str | None:
    """The canonical prompt the changes give: their own, or their identity's."""
    if changes.canonical_prompt:
        return changes.canonical_prompt
    return changes.identity.prompt() if changes.identity is not None else None


def first_version(
    project: Project, asset_id: str, spec: AssetSpec, roles: list[str], who: str
) -> AssetVersion:
    """Version 1 of a new asset; a seed bank is drawn (as an identity's) when none is given."""
    return AssetVersion(
        project_id=project.project_id,
        asset_id=asset_id,
        version=1,
        canonical_prompt=prompt_of(spec) or "",
        identity=spec.identity,
        soul_id=spec.soul_id,
        identity_version=spec.identity_version,
        negative_prompt=spec.negative_prompt or "",
        seed_bank=_seeds(spec) or [secrets.randbelow(MAX_SEED) for _ in range(SEED_BANK_SIZE)],
        sampler=spec.sampler or project.default_sampler,
        metadata=spec.metadata or {},
        taxonomy=spec.taxonomy or {},
        roles=spec.roles or roles,
        change_note=spec.change_note,
        made_by=who,
    )


def next_version(
    current: AssetVersion, number: int, changes: AssetChanges, who: str
) -> AssetVersion:
    """A copy of ``current`` with the changes, unlocked, without images, ``current`` its parent."""
    kept = {"seed", "seed_bank", "change_note"}
    given = {
        k: getattr(changes, k)
        for k in changes.model_fields_set - kept
        if getattr(changes, k) is not None
    }
    if "canonical_prompt" in given or "identity" in given:
        given["canonical_prompt"] = prompt_of(changes)
    if "soul_id" in given and "identity_version" not in given:
        given["identity_version"] = None  # another soul: its own pin, made at the lock
    return current.model_copy(
        update={
            **given,
            "version": number,
            "seed_bank": _seeds(changes) or current.seed_bank,
            "images": {},
            "parent": current.version,
            "change_note": changes.change_note,
            "is_locked": False,
            "made_by": who,
            "created_at_ts": 0,
            "updated_at_ts": 0,
        }
    )


class ProjectEvent(BaseModel):
    project_id: ProjectId
    seq: str = Field(description="A ULID: events sort by it in the order they were logged.")
    kind: str
    who: str = Field(description="The API key's id that did it.")
    at_ts: int
    payload: JsonObject = Field(default_factory=dict)


class ProjectNotFound(NotFound):
    """No such project for this API client (another client's project is not found either)."""


class AssetNotFound(NotFound):
    pass


class AssetLocked(Conflict):
    pass


class AssetNotLocked(Conflict):
    pass


class ProjectArchived(Conflict):
    pass


def no_project(project_id: str) -> ProjectNotFound:
    return ProjectNotFound(f"project_id: no project {project_id!r}")


def no_asset(project_id: str, asset_id: str, version: int | None = None) -> AssetNotFound:
    which = f" version {version}" if version is not None else ""
    return AssetNotFound(f"asset_id: project {project_id!r} has no asset {asset_id!r}{which}")
