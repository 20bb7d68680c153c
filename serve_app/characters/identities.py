"""A character's identity versions: what a client describes (``IdentityDraft``), what the
catalog keeps (``IdentityVersion``), and the canonical prompt a description becomes.

A version is edited while ``unlocked``; locking freezes it with its anchors (computed by the
judge from its references). A locked version never changes: a new version (with the old one as
its ``parent`` and a ``change_note``) is how a character changes.
"""

from __future__ import annotations

import secrets
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from serve_app.characters.verdicts import IdentityAnchors
from serve_app.errors import Conflict, Forbidden, InvalidRequest, NotFound
from serve_app.schemas import Text

SEED_BANK_SIZE = 8
MAX_SEED = 2**31 - 1
Short = Annotated[Text, Field(max_length=80)]
MAX_VERSION = 1_000_000
IdentityPin = Annotated[
    int | None,
    Field(
        ge=1,
        le=MAX_VERSION,
        description="Render with this locked identity version of the soul instead of its "
        "latest locked one (422 when the soul has no such locked version).",
    ),
]
IdentityState = Literal["unlocked", "locked"]


class IdentityDescription(BaseModel):
    """Who the character is, field by field; every field is optional."""

    model_config = ConfigDict(extra="forbid")

    age_range: Short = Field(default="", description="As in 'late 20s' or '60-70'.")
    gender_presentation: Short = ""
    hair_colour: Short = ""
    hair_style: Short = ""
    eye_colour: Short = ""
    skin_tone: Short = ""
    build: Short = ""
    outfit: Annotated[Text, Field(max_length=200)] = ""
    distinctive_features: list[Short] = Field(
        default_factory=list, max_length=10, description="Scars, glasses, freckles, ..."
    )
    free_text: Annotated[Text, Field(max_length=400)] = ""

    def prompt(self) -> str:
        """The canonical prompt: the fields in a fixed order, empty ones left out."""
        hair = " ".join(p for p in (self.hair_colour, self.hair_style) if p)
        parts = [
            f"{self.age_range} years old" if self.age_range else "",
            self.gender_presentation,
            f"{hair} hair" if hair else "",
            f"{self.eye_colour} eyes" if self.eye_colour else "",
            f"{self.skin_tone} skin" if self.skin_tone else "",
            f"{self.build} build" if self.build else "",
            f"wearing {self.outfit}" if self.outfit else "",
            *self.distinctive_features,
            self.free_text,
        ]
        return ", ".join(p.strip() for p in parts if p.strip())


class IdentityDraft(BaseModel):
    """What a client gives to make (or edit) a version."""

    model_config = ConfigDict(extra="forbid")

    description: IdentityDescription = Field(default_factory=IdentityDescription)
    negative_prompt: Annotated[Text, Field(max_length=400)] = ""
    seed_bank: list[Annotated[int, Field(ge=0, le=MAX_SEED)]] | None = Field(
        default=None,
        min_length=1,
        max_length=32,
        description=f"Fixed seeds for this identity's renders; {SEED_BANK_SIZE} random ones "
        "when not given.",
    )
    strength: float = Field(
        default=0.6, ge=0.0, le=1.0, description="Identity strength: the IP-Adapter scale."
    )
    parent: int | None = Field(
        default=None,
        ge=1,
        le=MAX_VERSION,
        description="The earlier version this one changes, if any.",
    )
    change_note: Annotated[Text, Field(max_length=400)] = ""


class IdentityVersion(BaseModel):
    """One version of a soul's identity as the catalog keeps it."""

    soul_id: str
    version: int = Field(ge=1)
    description: IdentityDescription
    prompt: str = Field(description="The canonical prompt the description becomes.")
    negative_prompt: str = ""
    seed_bank: list[int]
    strength: float
    parent: int | None = None
    change_note: str = ""
    state: IdentityState = "unlocked"
    references: list[str] = Field(
        default_factory=list, description="Object keys of its reference images, in order."
    )
    anchors: IdentityAnchors | None = Field(
        default=None, description="What the judge computed when it was locked."
    )
    owner: str = Field(description="The API client that made it (the only one that edits it).")
    created_at_ts: int = 0
    updated_at_ts: int = 0

    @property
    def locked(self) -> bool:
        return self.state == "locked"


def new_version(soul_id: str, version: int, draft: IdentityDraft, owner: str) -> IdentityVersion:
    """A draft as a new unlocked version; a seed bank is drawn when the draft gives none."""
    seeds = draft.seed_bank or [secrets.randbelow(MAX_SEED) for _ in range(SEED_BANK_SIZE)]
    return IdentityVersion(
        soul_id=soul_id,
        version=version,
        description=draft.description,
        prompt=draft.description.prompt(),
        negative_prompt=draft.negative_prompt,
        seed_bank=seeds,
        strength=draft.strength,
        parent=draft.parent,
        change_note=draft.change_note,
        owner=owner,
    )


def edited(version: IdentityVersion, draft: IdentityDraft) -> IdentityVersion:
    """An unlocked version with a draft's fields (its seed bank kept when the draft has none)."""
    return version.model_copy(
        update={
            "description": draft.description,
            "prompt": draft.description.prompt(),
            "negative_prompt": draft.negative_prompt,
            "seed_bank": draft.seed_bank or version.seed_bank,
            "strength": draft.strength,
            "parent": draft.parent,
            "change_note": draft.change_note,
        }
    )


class VersionError:
    """An error about one version, remade from its soul and version when it crosses replicas
    (Ray pickles an error, and the default remakes it from its message alone)."""

    soul_id: str
    version: int | None

    def __reduce__(self) -> tuple[type, tuple[str, int | None]]:
        return type(self), (self.soul_id, self.version)


class NoIdentityVersion(VersionError, NotFound):
    def __init__(self, soul_id: str, version: int | None = None) -> None:
        self.soul_id, self.version = soul_id, version
        which = f"version {version}" if version is not None else "locked version"
        super().__init__(f"soul {soul_id!r} has no identity {which}")


class IdentityLocked(VersionError, Conflict):
    def __init__(self, soul_id: str, version: int | None) -> None:
        self.soul_id, self.version = soul_id, version
        super().__init__(
            f"identity version {version} of soul {soul_id!r} is locked: "
            f"POST /souls/{soul_id}/identity makes a new version"
        )


class IdentityNotLocked(VersionError, Conflict):
    def __init__(self, soul_id: str, version: int | None) -> None:
        self.soul_id, self.version = soul_id, version
        super().__init__(
            f"identity_version: version {version} of soul {soul_id!r} is not locked: "
            f"POST /souls/{soul_id}/identity/{version}/lock first"
        )


class NotIdentityOwner(VersionError, Forbidden):
    def __init__(self, soul_id: str, version: int | None) -> None:
        self.soul_id, self.version = soul_id, version
        super().__init__(
            f"identity version {version} of soul {soul_id!r} was made by another API client; "
            "only that client changes it"
        )


class IdentityChanged(VersionError, Conflict):
    def __init__(self, soul_id: str, version: int | None) -> None:
        self.soul_id, self.version = soul_id, version
        super().__init__(
            f"identity version {version} of soul {soul_id!r} changed while it was being "
            "locked; lock it again"
        )


class PinMissing(VersionError, InvalidRequest):
    """A request pins (``identity_version``) a version the soul does not have."""

    def __init__(self, soul_id: str, version: int | None) -> None:
        self.soul_id, self.version = soul_id, version
        super().__init__(
            f"identity_version: soul {soul_id!r} has no identity version {version} "
            f"(GET /souls/{soul_id}/identity lists them)"
        )


class PinNotLocked(VersionError, InvalidRequest):
    """A request pins (``identity_version``) a version that is not locked yet."""

    def __init__(self, soul_id: str, version: int | None) -> None:
        self.soul_id, self.version = soul_id, version
        super().__init__(
            f"identity_version: version {version} of soul {soul_id!r} is not locked: renders "
            "use locked versions only"
        )
